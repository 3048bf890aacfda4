"""A fresh server's first text and upload queries, and its memory after 50 mixed queries.

    python -m bench.bench_serving --catalog /work/data/fashion-full --model efficientnet-lite0 \
        --variant torch-free=/tmp/serve/bin/python:onnx --variant torch=:torch --rounds 2

Each variant is `NAME=PYTHON:RUNTIME`: the interpreter that serves (empty: this one; e.g. a
virtualenv made from deploy/requirements.txt, which has no torch) and `EMBEDDINGS_RUNTIME`
(onnx or torch). Per round, every variant gets a fresh `streamlit run app.py` on the catalogue
(its model's ONNX export must be in `$EMBEDDINGS_MODELS`, made beforehand with `python -m
embeddings export --models MODEL`), driven by headless Chromium:

1. the page opens on an item query (the index is loaded);
2. first text query: typing Enter to the model's grid showing the text's results, through the
   model's text bridge, so including loading the sentence encoder;
3. first upload: choosing the file to the grid showing its results, including loading the
   model's image encoder;
4. `--queries` more queries, cycling item clicks, texts and uploads of catalogue photos;
5. the server's resident memory (`VmRSS`, split anonymous / file-backed, and the peak
   `VmHWM`), and whether torch was ever mapped into it.

Variants alternate within each round, so a burst of load from other processes hits them alike.
Prints one JSON object on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app_support import browser
from bench.common import emit, log, machine

TEXTS = [
    "red shirt",
    "blue jeans for men",
    "black leather handbag",
    "white running shoes",
    "silver watch",
    "green kurta",
    "floral summer dress",
    "brown belt",
]


def memory_status(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    fields["torch_mapped"] = "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    return fields


def timed(action, page, models: list[str], query: str) -> float:
    started = time.perf_counter()
    action()
    browser.wait_for_results(page, models, query=query, timeout=180)
    return time.perf_counter() - started


def text_action(page, text: str):
    box = page.get_by_label("Describe a product")
    box.fill(text)
    return lambda: box.press("Enter")


def upload_action(page, path: Path):
    return lambda: page.locator("input[type=file]").set_input_files(str(path))


def serve_once(catalogue, model: str, python: str | None, runtime: str, queries: int, scratch):
    """One fresh server: first text, first upload, `queries` mixed ones, then its memory."""
    from playwright.sync_api import sync_playwright

    models = [model]
    photos = [catalogue.image_path(i) for i in catalogue.ids[: max(3, queries)]]
    with sync_playwright() as playwright:
        chromium = browser.launch_chromium(playwright)
        page = chromium.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        server = browser.start_app(
            scratch / "data",
            log_path=scratch / f"streamlit-{time.time_ns()}.log",
            python=python,
            env={"EMBEDDINGS_RUNTIME": runtime},
            timeout=180,
        )
        try:
            item = catalogue.ids[0]
            page.goto(f"{server.url}/?catalog={catalogue.name}&models={model}&item={item}")
            browser.wait_for_results(page, models, query=item, timeout=180)
            figures = {
                "first_text_s": timed(text_action(page, TEXTS[0]), page, models, TEXTS[0]),
                "first_upload_s": timed(
                    upload_action(page, photos[0]), page, models, photos[0].name
                ),
            }
            times: dict[str, list[float]] = {"item": [], "text": [], "upload": []}
            for number in range(queries):
                kind = ("item", "text", "upload")[number % 3]
                if kind == "item":
                    grid = browser.read_grid(page, model)
                    target = grid["tiles"][number % len(grid["tiles"])][0]
                    tile = page.locator(
                        f"{browser.grid_selector(model)} a.tile[data-id='{target}']"
                    )
                    times[kind].append(timed(tile.click, page, models, target))
                elif kind == "text":
                    text = TEXTS[1 + number % (len(TEXTS) - 1)]
                    times[kind].append(timed(text_action(page, text), page, models, text))
                else:
                    photo = photos[1 + number % (len(photos) - 1)]
                    times[kind].append(timed(upload_action(page, photo), page, models, photo.name))
            figures["median_s"] = {k: statistics.median(v) for k, v in times.items() if v}
            figures["memory_mb"] = memory_status(server.process.pid)
            figures["queries"] = {k: len(v) for k, v in times.items()}
            if "Traceback" in server.log():
                raise RuntimeError(server.log()[-3000:])
        finally:
            server.stop()
            chromium.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="a catalogue with the model's bridge")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=PYTHON:RUNTIME")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    from embeddings.catalogue import Catalogue

    catalogue = Catalogue.open(args.catalog)
    variants = {}
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        python, _, runtime = rest.rpartition(":")
        variants[name] = (python or None, runtime or "onnx")
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        scratch = Path(folder)
        (scratch / "data").mkdir()  # a data folder holding only this catalogue (a link)
        (scratch / "data" / catalogue.name).symlink_to(catalogue.directory.resolve())
        for number in range(args.rounds):
            for name, (python, runtime) in variants.items():
                log(
                    f"round {number + 1}/{args.rounds}: {name} ({python or sys.executable}, "
                    f"{runtime})"
                )
                runs[name].append(
                    serve_once(catalogue, args.model, python, runtime, args.queries, scratch)
                )
                log(f"{name}: {runs[name][-1]}")
    emit(
        {
            "machine": machine(),
            "catalogue": str(catalogue.directory),
            "products": len(catalogue),
            "model": args.model,
            "variants": {n: {"python": p, "runtime": r} for n, (p, r) in variants.items()},
            "runs": runs,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

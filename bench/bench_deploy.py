"""The Streamlit Community Cloud deployment on this machine: install size, cold start, memory.

    python -m bench.bench_deploy --python /tmp/serve/bin/python \\
        --bundle 5k=bundles/fashion-5000.tar.gz --bundle full=bundles/fashion-full.tar.gz

`--python` is an environment made from `deploy/requirements.txt` alone (no torch; the tests make one
under `$EMBEDDINGS_TEST_CACHE`, see `tests/harness/serving_env.py`). For each bundle (an archive
made by `python -m embeddings publish --archive`), served over HTTP on 127.0.0.1:

1. a first start with an empty bundle cache: `streamlit run deploy/streamlit_app.py` with
   `EMBEDDINGS_BUNDLE` (the URL) in a secrets file, as Community Cloud runs it; seconds from the
   process start to the first grid in Chromium (download, checks and unpacking included);
2. `--starts` cold starts once the bundle is cached (a new server process each time): seconds
   from the process start to the first grid;
3. on the last server, `--queries` mixed queries (product clicks, texts through the bridge,
   uploads of catalogue photos) on every published model side by side, then the server's memory
   (`VmHWM` peak, `VmRSS`, anonymous and file-backed) and whether torch was ever mapped.

Also the environment's install size (its `site-packages`) beside the main one. The models cache
of the server is empty: text and upload queries run on the bundle's own encoders. Prints one JSON
object on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app_support import browser
from bench.bench_serving import TEXTS, memory_status, text_action, timed, upload_action
from bench.common import REPO, emit, log, machine


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from its folder without a log line per request."""

    def log_message(self, *args):
        pass


def site_packages_mb(python: str) -> float:
    folder = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    total = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return round(total / 1e6, 1)


def host(archive: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(archive.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/{archive.name}"


def start(python: str, url: str, work: Path) -> browser.AppServer:
    secrets = work / "secrets.toml"
    secrets.write_text(f'EMBEDDINGS_BUNDLE = "{url}"\n')
    return browser.start_app(
        work / "no-data",
        log_path=work / f"streamlit-{time.time_ns()}.log",
        python=python,
        script=REPO / "deploy" / "streamlit_app.py",
        options=("--secrets.files", str(secrets)),
        env={
            "EMBEDDINGS_BUNDLE_CACHE": str(work / "bundles"),
            "EMBEDDINGS_MODELS": str(work / "empty-models-cache"),
        },
        timeout=600,
    )


def first_grid_s(page, server: browser.AppServer, models: list[str]) -> float:
    """Seconds from the server process's start to the browse grid drawn in the page."""
    page.goto(f"{server.url}/?models={','.join(models)}")
    page.wait_for_selector(
        browser.grid_selector("browse") + " a.tile", state="attached", timeout=600_000
    )
    return time.perf_counter() - server.started_at


def mixed_queries(page, server, catalogue, models: list[str], text_models: list[str], n: int):
    """`n` queries cycling a product click, a text and an upload; median seconds per kind."""
    photos = [catalogue.image_path(i) for i in catalogue.ids[: max(3, n)]]
    item = catalogue.ids[0]
    page.goto(f"{server.url}/?catalog={catalogue.name}&models={','.join(models)}&item={item}")
    browser.wait_for_results(page, models, query=item, timeout=180)
    times: dict[str, list[float]] = {"item": [], "text": [], "upload": []}
    for number in range(n):
        kind = ("item", "text", "upload")[number % 3]
        if kind == "item":
            grid = browser.read_grid(page, models[0])
            target = grid["tiles"][number % len(grid["tiles"])][0]
            tile = page.locator(f"{browser.grid_selector(models[0])} a.tile[data-id='{target}']")
            times[kind].append(timed(tile.click, page, models, target))
        elif kind == "text":
            text = TEXTS[number % len(TEXTS)]
            times[kind].append(timed(text_action(page, text), page, text_models, text))
        else:
            photo = photos[1 + number % (len(photos) - 1)]
            times[kind].append(timed(upload_action(page, photo), page, models, photo.name))
    return {k: round(statistics.median(v), 3) for k, v in times.items() if v}


def bench_bundle(python: str, archive: Path, starts: int, queries: int) -> dict:
    from playwright.sync_api import sync_playwright

    from embeddings.bundle.open import open_bundle
    from embeddings.catalogue import Catalogue

    httpd, url = host(archive)
    figures: dict = {"archive_mb": round(archive.stat().st_size / 1e6, 1)}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as folder, sync_playwright() as pw:
        work = Path(folder)
        chromium = browser.launch_chromium(pw)
        page = chromium.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        try:
            opened = open_bundle(str(archive), cache=work / "reader")  # to know its products
            catalogue = Catalogue.open(opened.folder)
            models = list(opened.manifest["models"])
            text_models = sorted(p.parent.name for p in opened.folder.glob("bridges/*/*.json"))
            figures.update(products=len(catalogue), models=models, text_models=text_models)
            figures["bundle_mb"] = round(sum(opened.manifest["parts"].values()) / 1e6, 1)
            server = start(python, url, work)
            figures["first_start_with_download_s"] = round(first_grid_s(page, server, models), 2)
            server.stop()
            cold = []
            for number in range(starts):
                server = start(python, url, work)
                cold.append(round(first_grid_s(page, server, models), 2))
                log(f"{archive.name}: cold start {number + 1}: {cold[-1]} s")
                if number + 1 < starts:
                    server.stop()
            figures["cold_starts_cached_s"] = cold
            figures["median_s"] = mixed_queries(
                page, server, catalogue, models, text_models, queries
            )
            figures["memory_mb"] = memory_status(server.process.pid)
            figures["queries"] = queries
            figures["models_cache_written"] = (work / "empty-models-cache").exists()
            server.stop()
        finally:
            chromium.close()
            httpd.shutdown()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the deploy/requirements.txt python")
    parser.add_argument("--bundle", action="append", required=True, metavar="NAME=ARCHIVE")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args(argv)
    result = {
        "machine": machine(),
        "install_mb": {
            "deploy/requirements.txt (no torch)": site_packages_mb(args.python),
            "requirements.txt (this environment)": site_packages_mb(sys.executable),
        },
        "bundles": {},
    }
    for spec in args.bundle:
        name, _, path = spec.partition("=")
        log(f"bundle {name}: {path}")
        result["bundles"][name] = bench_bundle(args.python, Path(path), args.starts, args.queries)
        log(f"{name}: {result['bundles'][name]}")
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

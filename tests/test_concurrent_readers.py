"""Readers and a builder on one catalogue: a reader sees the old complete index or the new one.

A reader process queries (item and text) in a loop while this process rebuilds the same model
many times, with images added before each build so that every build swaps the index, the text
bridge and the catalogue. Every answer must be the exact top-k of the index it came from, no
query may fail, and the catalogue must be intact afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
from embeddings.catalogue import Catalogue
from embeddings.index.opening import open_index
from embeddings.search.searcher import make_searcher
from tests.harness.paths import REPO
from tests.harness.products import draw_product, make_product_folder

READER = """
import json, sys, time
from pathlib import Path
import numpy as np
from embeddings.search.searcher import default_text_encoder, make_searcher
from embeddings.index.base import score_tolerance
from embeddings.index.opening import open_snapshot

directory, stop, log = Path(sys.argv[1]), Path(sys.argv[2]), open(sys.argv[3], "w")
rng = np.random.default_rng(0)
texts = ["Red circle product", "Blue square product 2", "Green triangle"]
while not stop.exists():
    record = {"t": time.time()}
    try:
        catalogue, indexes = open_snapshot(directory, ["pixels"])
        index = indexes["pixels"]
        if isinstance(index, Exception):
            raise index
        searcher = make_searcher(catalogue, indexes=indexes)
        vectors = index.reconstruct_batch(np.arange(len(index)))
        item = catalogue.ids[int(rng.integers(len(catalogue.ids)))]
        text = texts[int(rng.integers(len(texts)))]
        asked = {"item": searcher.search_item(item, ["pixels"], 5)["pixels"],
                 "text": searcher.search_text(text, ["pixels"], 5)["pixels"]}
        queries = {"item": index.vector(item),
                   "text": default_text_encoder(catalogue, "pixels", None).encode_texts([text])[0]}
        for kind, hits in asked.items():
            exact = vectors.astype(np.float64) @ queries[kind].astype(np.float64)
            if kind == "item":
                exact[index.row_of[item]] = -np.inf
            best = np.sort(exact)[::-1][:5]
            got = np.array([h.score for h in hits])
            own = np.array([exact[index.row_of[h.id]] for h in hits])
            tol = 2 * score_tolerance(index.dim)  # the index sums in float32, 14,400 terms
            if len(hits) != 5 or not np.allclose(got, best, atol=tol) \
or not np.allclose(own, got, atol=tol):
                raise AssertionError(\
f"{kind} answer is not the exact top-5 of its index: {got} vs {best}")
        record.update(ok=True, count=len(index), fingerprint=catalogue.fingerprint)
    except Exception as exc:
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    log.write(json.dumps(record) + "\\n")
    log.flush()
"""


def start_reader(directory: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    stop, log = tmp_path / "stop", tmp_path / "reader.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(directory), str(stop), str(log)],
        env=env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or not log.read_text().strip()):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.2)  # the reader is up and answering before the first rebuild
    return process, stop, log


def add_images(source: Path, round_number: int, count: int = 3) -> None:
    for n in range(count):
        variant = 100 + round_number * count + n
        draw_product("blue", "circle", variant).save(source / "blue" / f"circle_{variant}.png")


def assert_catalogue_intact(directory: Path, images: int) -> None:
    catalogue = Catalogue.open(directory)
    assert len(catalogue) == images
    assert len(open_index(catalogue, "pixels")) == images
    assert make_searcher(catalogue).search_text("Blue circle", ["pixels"], 3)["pixels"]
    leftovers = [
        p.name
        for folder in (directory / "models", directory / "bridges")
        for p in folder.iterdir()
        if p.name.startswith(".") or p.name.endswith((".old", ".work"))
    ]
    assert leftovers == []


@pytest.mark.slow
def test_readers_never_see_half_an_index_while_it_is_rebuilt_20_times(tmp_path):
    source = make_product_folder(tmp_path / "products", variants=10)  # 120 images with titles
    out = tmp_path / "cat"
    request = BuildRequest(
        out=out, source=str(source), models=["pixels"], index=IndexOptions(batch_size=16)
    )
    assert build_catalogue(request).committed
    process, stop, log = start_reader(out, tmp_path)
    try:
        for round_number in range(20):
            add_images(source, round_number)
            result = build_catalogue(BuildRequest(out=out, models=["pixels"]))
            assert [o.status for o in result.outcomes] == ["built"], result.outcomes
            assert result.outcomes[0].bridge.startswith("trained on")  # the bridge swaps too
    finally:
        stop.touch()
        process.wait(timeout=120)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    failures = [r["error"] for r in records if not r["ok"]]
    assert failures == []
    counts = {r["count"] for r in records}
    assert len(records) >= 40 and len(counts) >= 5  # answers came from many successive builds
    assert_catalogue_intact(out, 120 + 20 * 3)


READER_CLI = """
import json, subprocess, sys
from pathlib import Path
directory, stop, log = sys.argv[1:4]
log = open(log, "w")
while not Path(stop).exists():
    done = subprocess.run([sys.executable, "-m", "embeddings", "search", "--catalog", directory,
                           "--model", "pixels", "--item", "red/circle_0", "-k", "5", "--json"],
                          capture_output=True, text=True)
    log.write(json.dumps({"ok": done.returncode == 0, "error": done.stderr[-500:],
                          "hits": len(json.loads(done.stdout)) \
if done.returncode == 0 else 0}) + "\\n")
    log.flush()
"""


@pytest.mark.slow
def test_cli_searches_while_the_cli_rebuilds(tmp_path):
    """The reported case: `search` in a loop while `build` runs again after images are added."""
    source = make_product_folder(tmp_path / "products", variants=10)
    out = tmp_path / "cat"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    build = [sys.executable, "-m", "embeddings", "build", "--catalog", str(out), "--no-bridge"]
    first = [
        sys.executable,
        "-m",
        "embeddings",
        "build",
        "--source",
        str(source),
        "--out",
        str(out),
        "--models",
        "pixels",
        "--no-bridge",
    ]
    assert subprocess.run(first, env=env, cwd=REPO, capture_output=True).returncode == 0
    stop, log = tmp_path / "stop", tmp_path / "cli.jsonl"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_CLI, str(out), str(stop), str(log)], env=env, cwd=REPO
    )
    try:
        for round_number in range(6):
            add_images(source, round_number, count=7)
            done = subprocess.run(build, env=env, cwd=REPO, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
    finally:
        stop.touch()
        reader.wait(timeout=120)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 6
    assert [r["error"] for r in records if not r["ok"]] == []
    assert all(r["hits"] == 5 for r in records)

"""Memory: float16 indexes, memory-mapped loading, no second copy, exact filters on
HNSW, the filter-row cache, no torch while browsing, and the allocator fix for inference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from embeddings.building.model import build_model_index
from embeddings.catalogue import create_catalogue
from embeddings.index.base import score_tolerance
from embeddings.index.opening import open_index
from embeddings.index.store import (
    INDEX_FILE,
    load_model_index,
    load_vectors,
    make_faiss_index,
    write_model_index,
)
from embeddings.models import load_model
from embeddings.search.searcher import make_searcher
from tests.harness.paths import REPO

PYTHON = sys.executable
MANIFEST = {"model_id": "m", "weights_id": "w", "catalogue_fingerprint": "f"}


def clustered(n: int, dim: int, *, seed: int = 0, clusters: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def run_python(code: str, *argv: str) -> dict:
    """Run `code` in a fresh interpreter (memory figures of its own); it prints one JSON line."""
    done = subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- float16 -------------------------------------------------------------------------------


def test_float16_index_halves_the_index_and_keeps_the_ranking(built_catalogue, tmp_path):
    ids, vectors = load_vectors(built_catalogue.model_dir("efficientnet-lite0"))
    full = write_model_index(
        tmp_path / "c32" / "models" / "m", ids=ids, vectors=vectors, manifest=MANIFEST
    )
    half = write_model_index(
        tmp_path / "c16" / "models" / "m",
        ids=ids,
        vectors=vectors,
        manifest=MANIFEST,
        store_dtype="float16",
    )
    assert full["vectors_dtype"] == "float32" and half["vectors_dtype"] == "float16"
    assert half["index_type"] == "flat"  # still an exhaustive scan, over float16 codes
    size32 = (tmp_path / "c32" / "models" / "m" / INDEX_FILE).stat().st_size
    size16 = (tmp_path / "c16" / "models" / "m" / INDEX_FILE).stat().st_size
    assert size16 < 0.55 * size32
    assert np.load(tmp_path / "c16" / "models" / "m" / "vectors.npy").dtype == np.float16
    exact = load_model_index(
        tmp_path / "c32" / "models" / "m", catalogue_fingerprint="f", model_id="m"
    )
    rounded = load_model_index(
        tmp_path / "c16" / "models" / "m", catalogue_fingerprint="f", model_id="m"
    )
    np.testing.assert_allclose(rounded.vector(ids[3]), vectors[3], atol=1e-3)
    scores32, rows32 = exact.search(vectors, 10)
    scores16, rows16 = rounded.search(vectors, 10)
    np.testing.assert_allclose(scores16, scores32, atol=2e-3)  # float16 keeps ~3 significant digits
    assert (rows16[:, 0] == np.arange(len(ids))).all()  # every item still finds itself first
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows16, rows32, strict=True)])
    assert overlap >= 0.95


def test_float16_above_the_hnsw_threshold_is_an_hnsw_over_float16_codes(tmp_path):
    import faiss

    vectors = clustered(600, 32)
    ids = [str(i) for i in range(600)]
    manifest = write_model_index(
        tmp_path / "c" / "models" / "m",
        ids=ids,
        vectors=vectors,
        manifest=MANIFEST,
        hnsw_above=100,
        store_dtype="float16",
    )
    assert manifest["index_type"] == "hnsw"
    index = load_model_index(
        tmp_path / "c" / "models" / "m", catalogue_fingerprint="f", model_id="m"
    )
    assert isinstance(index.index, faiss.IndexHNSWSQ)
    _, rows = index.search(vectors[:50], 1)
    assert (rows[:, 0] == np.arange(50)).mean() >= 0.98


def test_build_with_float16_from_the_cli_options(product_folder, tmp_path):
    catalogue = create_catalogue(str(product_folder), tmp_path / "shop")
    report = build_model_index(catalogue, load_model("pixels"), store_dtype="float16")
    assert report.manifest["vectors_dtype"] == "float16"
    hits = make_searcher(catalogue).search_item("red/circle_0", ["pixels"], k=3)["pixels"]
    assert hits[0].id.startswith("red/")
    with pytest.raises(ValueError, match="store_dtype"):
        make_faiss_index(clustered(10, 8), store_dtype="int8")


# -- memory-mapped loading -----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_index(tmp_path_factory):
    """A 40,000 x 1,024 flat index (~156 MiB): large enough for memory figures to stand out."""
    root = tmp_path_factory.mktemp("big")
    vectors = clustered(40_000, 1024, seed=1)
    write_model_index(
        root / "cat" / "models" / "m",
        ids=[str(i) for i in range(40_000)],
        vectors=vectors,
        manifest=MANIFEST,
    )
    return root / "cat" / "models" / "m", vectors.nbytes / 2**20


PROBE = """
    import json, sys
    from pathlib import Path
    def status():
        fields = dict(line.split(":", 1) for line in \
Path("/proc/self/status").read_text().splitlines())
        return {k: int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "VmHWM", "RssFile")}
    import faiss, numpy
    from embeddings.index.store import load_model_index
    before = status()
    index = load_model_index(Path(sys.argv[1]), catalogue_fingerprint="f", model_id="m",
                             mmap=sys.argv[2] == "mmap")
    opened = status()
    index.search(index.vector("7"), 5)
    searched = status()
    print(json.dumps({"before": before, "opened": opened, "searched": searched,
                      "first": int(index.search(index.vector("7"), 1)[1][0][0])}))
"""


@pytest.mark.slow
def test_mmap_opens_without_copying_the_vectors(big_index):
    model_dir, size_mib = big_index
    mapped = run_python(PROBE, str(model_dir), "mmap")
    copied = run_python(PROBE, str(model_dir), "copy")
    assert mapped["first"] == copied["first"] == 7
    # Mapped: no private copy of the vectors, before or after a full scan (the ids and their
    # row map are the only private growth); the pages are file-backed instead.
    assert mapped["searched"]["RssAnon"] - mapped["before"]["RssAnon"] < 0.15 * size_mib
    assert mapped["searched"]["RssFile"] - mapped["before"]["RssFile"] > 0.8 * size_mib
    # Copied: one private copy, and only one (faiss.read_index, not numpy + IndexFlat.add).
    grown = copied["opened"]["RssAnon"] - copied["before"]["RssAnon"]
    assert 0.8 * size_mib < grown < 1.2 * size_mib
    assert copied["opened"]["VmHWM"] - copied["before"]["VmHWM"] < 1.3 * size_mib


def test_open_index_maps_by_default_and_answers_the_same(built_catalogue):
    mapped = open_index(built_catalogue, "efficientnet-lite0")
    copied = open_index(built_catalogue, "efficientnet-lite0", mmap=False)
    ids = built_catalogue.ids
    for item_id in ids[::7]:
        s1, r1 = mapped.search(mapped.vector(item_id), 10)
        s2, r2 = copied.search(copied.vector(item_id), 10)
        assert (r1 == r2).all() and np.array_equal(s1, s2)


# -- filters ---------------------------------------------------------------------------------


def test_filtered_hnsw_search_is_exact_over_the_allowed_rows(tmp_path, monkeypatch):
    import embeddings.index.store as index_module

    vectors = clustered(3000, 32, seed=2)
    write_model_index(
        tmp_path / "c" / "models" / "m",
        ids=[str(i) for i in range(3000)],
        vectors=vectors,
        manifest=MANIFEST,
        hnsw_above=0,
    )
    index = load_model_index(
        tmp_path / "c" / "models" / "m", catalogue_fingerprint="f", model_id="m"
    )
    assert index.manifest["index_type"] == "hnsw"
    allowed = np.arange(5, 3000, 11)  # 9% of the rows
    queries = clustered(30, 32, seed=3)
    scores, rows = index.search(queries, 10, rows=allowed)
    brute = queries.astype(np.float64) @ vectors[allowed].astype(np.float64).T
    want = allowed[np.argsort(-brute, axis=1, kind="stable")[:, :10]]
    tol = score_tolerance(vectors.shape[1])
    np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :10], atol=tol)
    assert (rows == want).mean() > 0.99  # exact up to float ties
    # Above the exact-scan limit the graph walk is used, widened; still only allowed rows.
    monkeypatch.setattr(index_module, "EXACT_FILTER_ROWS", 10)
    scores, rows = index.search(queries, 10, rows=allowed)
    assert set(rows.ravel()) <= set(allowed)
    assert np.mean([len(set(r) & set(w)) / 10 for r, w in zip(rows, want, strict=True)]) >= 0.9


# -- serving without torch -----------------------------------------------------------------


def test_browsing_and_filtering_do_not_import_torch(built_catalogue):
    result = run_python(f"""
        import json, sys
        from embeddings.catalogue import Catalogue
        from embeddings.search.searcher import make_searcher
        from embeddings.index.opening import built_models
        catalogue = Catalogue.open({str(built_catalogue.directory)!r})
        searcher = make_searcher(catalogue)
        hits = searcher.search_item("blue/square_1", built_models(catalogue), 5, \
filters={{"shape": "square"}})
        print(json.dumps({{"torch": "torch" in sys.modules, \
"hits": {{m: len(h) for m, h in hits.items()}}}}))
    """)
    assert result == {"torch": False, "hits": {"efficientnet-lite0": 5, "pixels": 5}}


# -- the allocator fix for CPU inference ---------------------------------------------------

ALLOCATOR_PROBE = """
    import ctypes, json, resource, sys
    from embeddings.models.allocator import tune_allocator
    tuned = tune_allocator() if sys.argv[1:] == ["tune"] else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 128 * 1024 * 1024  # one activation of a batch of 64 is about this big
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"tuned": tuned, "faults": faults}))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only"
)
def test_tuned_allocator_reuses_big_blocks_instead_of_faulting_them_again():
    pages = 128 * 1024 * 1024 // 4096
    default, tuned = run_python(ALLOCATOR_PROBE), run_python(ALLOCATOR_PROBE, "tune")
    assert tuned["tuned"] is True
    assert (
        min(default["faults"][1:]) > 0.5 * pages
    )  # glibc's default: mmap'ed, faulted in every time
    assert max(tuned["faults"][1:]) < 0.05 * pages  # tuned: the block stays in the heap


def test_decoding_waits_for_the_forward_pass_when_the_model_uses_every_core(monkeypatch):
    """Decoding threads that preempt torch's threads slow the whole build (bench/bench_build.py)."""
    import torch

    from embeddings.building.model import _decode_ahead

    assert _decode_ahead(load_model("pixels"), workers=2) == 1  # no model threads to disturb
    cnn = load_model("efficientnet-lite0", runtime="torch")
    monkeypatch.setattr(os, "cpu_count", lambda: torch.get_num_threads() + 2)
    assert _decode_ahead(cnn, workers=2) == 1  # spare cores: overlap decoding with inference
    monkeypatch.setattr(os, "cpu_count", lambda: torch.get_num_threads())
    assert _decode_ahead(cnn, workers=2) == 0  # every core busy with inference: decode in between
    # ONNX Runtime's idle threads sleep: overlapping measured faster even with every core busy
    assert _decode_ahead(load_model("efficientnet-lite0"), workers=2) == 1

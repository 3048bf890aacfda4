"""The Milvus backend (issue 5) on Milvus Lite: same answers as FAISS, filters inside Milvus,
backend chosen from the manifest, atomic rebuilds, a served database, clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_product_folder

from embeddings import milvus_backend
from embeddings.build import build_model_index
from embeddings.catalog import Catalogue, create_catalogue
from embeddings.cli import main
from embeddings.errors import CatalogueError, EmbeddingsError, IndexMissingError
from embeddings.index import load_vectors, make_faiss_index, write_model_index
from embeddings.milvus_backend import MilvusIndex
from embeddings.models import load_model
from embeddings.search import Searcher, built_models, make_searcher, open_index

PYTHON = sys.executable


def assert_same_ranking(got_rows, got_scores, want_rows, want_scores, *, tol=1e-4):
    """The same score at every rank, and the same row unless scores tie (ties may swap)."""
    got_rows, want_rows = list(got_rows), list(want_rows)
    assert len(got_rows) == len(want_rows), (got_rows, want_rows)
    np.testing.assert_allclose(got_scores, want_scores, atol=tol)
    for i, (got, want) in enumerate(zip(got_rows, want_rows, strict=True)):
        if got != want:
            tied = [
                want_rows[j]
                for j in range(len(want_rows))
                if abs(want_scores[j] - want_scores[i]) <= tol
            ]
            assert got in tied or abs(want_scores[-1] - got_scores[i]) <= tol, (
                i,
                got_rows,
                want_rows,
            )


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """48 synthetic products (folder colour + sidecar shape labels), owned by this module."""
    return make_product_folder(tmp_path_factory.mktemp("milvus-shop") / "shop")


@pytest.fixture(scope="module")
def twin_catalogues(shop, tmp_path_factory):
    """The same products built twice with `pixels` (deterministic numpy): FAISS and Milvus Lite."""
    root = tmp_path_factory.mktemp("twins")
    faiss_cat = create_catalogue(str(shop), root / "faiss")
    milvus_cat = create_catalogue(str(shop), root / "milvus")
    embedder = load_model("pixels")
    build_model_index(faiss_cat, embedder)
    report = build_model_index(milvus_cat, embedder, backend="milvus")
    assert report.count == 48 and report.manifest["backend"] == "milvus"
    return faiss_cat, milvus_cat


def test_open_index_picks_the_backend_from_the_manifest(twin_catalogues):
    faiss_cat, milvus_cat = twin_catalogues
    index = open_index(milvus_cat, "pixels")
    assert isinstance(index, MilvusIndex) and index.native_filters
    assert not isinstance(open_index(faiss_cat, "pixels"), MilvusIndex)
    assert built_models(milvus_cat) == ["pixels"]
    assert (milvus_cat.directory / "milvus.db").exists()
    assert not (
        milvus_cat.model_dir("pixels") / "index.faiss"
    ).exists()  # the vectors live in Milvus
    assert len(index) == 48 and index.dim == 14_400
    ids, vectors = load_vectors(milvus_cat.model_dir("pixels"))
    np.testing.assert_allclose(index.vector(ids[5]), vectors[5], atol=1e-7)  # fetched from Milvus
    # The ModelIndex interface both backends share.
    np.testing.assert_allclose(index.reconstruct_batch([7, 2, 7]), vectors[[7, 2, 7]], atol=1e-7)


def test_every_item_query_matches_faiss_exact(twin_catalogues):
    """Same vectors, both backends exact: the same top-k in the same order, the same scores."""
    faiss_cat, milvus_cat = twin_catalogues
    on_faiss, on_milvus = make_searcher(faiss_cat), make_searcher(milvus_cat)
    for item_id in faiss_cat.ids:
        want = on_faiss.search_item(item_id, ["pixels"], k=10)["pixels"]
        got = on_milvus.search_item(item_id, ["pixels"], k=10)["pixels"]
        assert item_id not in [h.id for h in got]
        assert_same_ranking(
            [h.id for h in got],
            np.array([h.score for h in got]),
            [h.id for h in want],
            np.array([h.score for h in want]),
        )


@pytest.mark.parametrize(
    "filters",
    [
        {"shape": "square"},
        {"folder": "red"},
        {"folder": "blue", "shape": "triangle"},
        {"shape": "hexagon"},
    ],
)
def test_label_filters_run_in_milvus_and_agree_with_faiss(twin_catalogues, filters):
    faiss_cat, milvus_cat = twin_catalogues
    on_faiss, on_milvus = make_searcher(faiss_cat), make_searcher(milvus_cat)
    items = milvus_cat.items
    for item_id in faiss_cat.ids[::5]:
        want = on_faiss.search_item(item_id, ["pixels"], k=6, filters=filters)["pixels"]
        got = on_milvus.search_item(item_id, ["pixels"], k=6, filters=filters)["pixels"]
        for hit in got:
            assert all(items.at[hit.id, field] == value for field, value in filters.items())
        assert_same_ranking(
            [h.id for h in got],
            np.array([h.score for h in got]),
            [h.id for h in want],
            np.array([h.score for h in want]),
        )
    if filters == {"shape": "hexagon"}:
        assert got == []  # nothing matches: an empty answer, not an error


def test_milvus_filters_need_no_catalogue_rows(twin_catalogues, monkeypatch):
    """On Milvus the filter is evaluated in the database, in the same query (no id list)."""
    _, milvus_cat = twin_catalogues
    searcher = make_searcher(milvus_cat)

    def refuse(*args, **kwargs):
        raise AssertionError("the Milvus path must not compute allowed rows in pandas")

    monkeypatch.setattr(Catalogue, "ids_matching", refuse)
    hits = searcher.search_item(milvus_cat.ids[0], ["pixels"], k=5, filters={"shape": "circle"})[
        "pixels"
    ]
    assert hits and all(milvus_cat.items.at[h.id, "shape"] == "circle" for h in hits)
    with pytest.raises(CatalogueError, match="no label field 'colour'.*folder, shape"):
        searcher.search_item(milvus_cat.ids[0], ["pixels"], k=5, filters={"colour": "red"})


def test_text_and_image_queries_on_milvus(twin_catalogues, shop):
    from PIL import Image

    faiss_cat, milvus_cat = twin_catalogues
    image = Image.open(shop / "green" / "circle_2.png").convert("RGB")
    want = make_searcher(faiss_cat).search_image(image, ["pixels"], k=5)["pixels"]
    got = make_searcher(milvus_cat).search_image(image, ["pixels"], k=5)["pixels"]
    assert [h.id for h in got][0] == "green/circle_2" == [h.id for h in want][0]
    np.testing.assert_allclose(
        [h.score for h in got], [h.score for h in want], atol=1e-4
    )  # sums over 14,400 dims


def test_random_vectors_with_labels_agree_with_faiss_flat(tmp_path):
    """2,000 clustered vectors, 40 queries, with and without a label filter."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 48))
    vectors = centres[rng.integers(0, 20, 2000)] + 0.4 * rng.normal(size=(2000, 48))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{i}" for i in range(2000)]
    labels = {
        "gender": [("Men", "Women", "Boys")[i % 3] for i in range(2000)],
        "usage": [("Casual", 'Men\'s "Formal" \\ wear')[i % 2] for i in range(2000)],
    }
    model_dir = tmp_path / "cat" / "models" / "m"
    write_model_index(
        model_dir,
        ids=ids,
        vectors=vectors,
        backend="milvus",
        labels=labels,
        manifest={"model_id": "m", "weights_id": "w", "catalogue_fingerprint": "f"},
    )
    from embeddings.index import load_model_index

    index = load_model_index(model_dir, catalogue_fingerprint="f", model_id="m")
    exact = make_faiss_index(vectors)
    queries = vectors[rng.integers(0, 2000, 40)] + 0.05 * rng.normal(size=(40, 48)).astype(
        np.float32
    )
    want_scores, want_rows = exact.search(queries.astype(np.float32), 10)
    got_scores, got_rows = index.search(queries, 10)
    for q in range(40):
        assert_same_ranking(got_rows[q], got_scores[q], want_rows[q], want_scores[q])
    # A filter whose value needs quoting, combined with another: evaluated by Milvus.
    filters = {"usage": 'Men\'s "Formal" \\ wear', "gender": "Women"}
    allowed = np.array([i for i in range(2000) if i % 2 == 1 and i % 3 == 1])
    import faiss

    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
    want_scores, want_rows = exact.search(queries.astype(np.float32), 10, params=params)
    got_scores, got_rows = index.search(queries, 10, filters=filters)
    for q in range(40):
        assert set(got_rows[q]) <= set(allowed)
        assert_same_ranking(got_rows[q], got_scores[q], want_rows[q], want_scores[q])
    # Restricting by row numbers (the generic interface) works too.
    got_scores, got_rows = index.search(queries[:3], 5, rows=allowed[:50])
    assert set(got_rows.ravel()) <= set(allowed[:50])


def test_hnsw_above_threshold_is_an_hnsw_collection(shop, tmp_path):
    catalogue = create_catalogue(str(shop), tmp_path / "cat")
    report = build_model_index(catalogue, load_model("pixels"), backend="milvus", hnsw_above=10)
    assert report.manifest["index_type"] == "hnsw" and report.manifest["milvus"]["index"] == "HNSW"
    index = open_index(catalogue, "pixels")
    client = index.client
    assert client.describe_index(index.collection, "vector")["index_type"] == "HNSW"
    # 48 vectors in a graph with ef=128: every query finds its exact top-5.
    ids, vectors = load_vectors(catalogue.model_dir("pixels"))
    want_scores, want_rows = make_faiss_index(vectors).search(vectors, 5)
    got_scores, got_rows = index.search(vectors, 5)
    assert (got_rows == want_rows).mean() > 0.95


def test_rebuild_swaps_collections_and_drops_the_old_one(shop, tmp_path):
    catalogue = create_catalogue(str(shop), tmp_path / "cat")
    embedder = load_model("pixels")
    first = build_model_index(catalogue, embedder, backend="milvus").manifest["milvus"][
        "collection"
    ]
    second = build_model_index(catalogue, embedder, backend="milvus", force=True).manifest[
        "milvus"
    ]["collection"]
    assert first != second
    client = milvus_backend.connect(str(catalogue.directory / "milvus.db"))
    prefix = milvus_backend.collection_prefix(catalogue.directory, "pixels")
    assert [c for c in client.list_collections() if c.startswith(prefix)] == [second]
    assert open_index(catalogue, "pixels").collection == second
    # Switching the same catalogue back to FAISS reuses the vectors (nothing re-embedded).
    report = build_model_index(catalogue, embedder)
    assert report.embedded == 0 and report.reused == 48
    assert not isinstance(open_index(catalogue, "pixels"), MilvusIndex)


def test_a_dropped_collection_says_how_to_rebuild(shop, tmp_path):
    catalogue = create_catalogue(str(shop), tmp_path / "cat")
    build_model_index(catalogue, load_model("pixels"), backend="milvus")
    index = open_index(catalogue, "pixels")
    index.client.drop_collection(index.collection)
    with pytest.raises(
        IndexMissingError, match="not in .*milvus.db.*build --catalog .*cat --models pixels"
    ):
        open_index(catalogue, "pixels")
    # The hinted command rebuilds it with the catalogue's own settings: on Milvus again.
    assert (
        main(["build", "--catalog", str(catalogue.directory), "--models", "pixels", "--no-bridge"])
        == 0
    )
    rebuilt = open_index(Catalogue.open(catalogue.directory), "pixels")
    assert isinstance(rebuilt, MilvusIndex) and len(rebuilt) == 48


def test_uri_checks_and_recording(tmp_path):
    with pytest.raises(EmbeddingsError, match="must end in .db"):
        milvus_backend.check_uri(str(tmp_path / "vectors"))
    with pytest.raises(EmbeddingsError, match="empty"):
        milvus_backend.check_uri(" ")
    assert (
        milvus_backend.check_uri("https://in01.zillizcloud.com:443")
        == "https://in01.zillizcloud.com:443"
    )
    assert (
        milvus_backend.recorded_uri(str(tmp_path / "c" / "milvus.db"), tmp_path / "c")
        == "milvus.db"
    )
    assert milvus_backend.recorded_uri("http://h:19530", tmp_path) == "http://h:19530"
    assert milvus_backend.resolve_uri("milvus.db", tmp_path) == str(tmp_path / "milvus.db")
    assert milvus_backend.quote('a"b\\c') == '"a\\"b\\\\c"'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def milvus_server(tmp_path):
    """A Milvus Lite database served over gRPC (what a Milvus server or Zilliz Cloud looks like)."""
    port = _free_port()
    server = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            str(tmp_path / "served.db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # wait for the port, not for a fixed time
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None:
                pytest.fail("milvus-lite server exited at start-up")
            time.sleep(0.1)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_build_and_search_through_a_server_uri(shop, tmp_path, milvus_server, monkeypatch):
    """`--milvus-uri` on the CLI, then the catalogue opened by another process: the app's path."""
    out = tmp_path / "served-cat"
    env = {**os.environ, "EMBEDDINGS_DATA": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    build = subprocess.run(
        [
            PYTHON,
            "-m",
            "embeddings",
            "build",
            "--source",
            str(shop),
            "--out",
            str(out),
            "--models",
            "pixels",
            "--milvus-uri",
            milvus_server,
            "--no-bridge",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    catalogue = Catalogue.open(out)
    index = open_index(catalogue, "pixels")
    assert index.uri == milvus_server and index.manifest["milvus"]["uri"] == milvus_server
    assert not (out / "milvus.db").exists()  # nothing local: the vectors are on the server
    search = subprocess.run(
        [
            PYTHON,
            "-m",
            "embeddings",
            "search",
            "--catalog",
            str(out),
            "--model",
            "pixels",
            "--item",
            "red/square_1",
            "-k",
            "3",
            "--filter",
            "shape=square",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert search.returncode == 0, search.stderr
    assert '"id": "red/square_' in search.stdout and "circle" not in search.stdout
    # EMBEDDINGS_MILVUS_URI points a deployment at another address of the same data.
    monkeypatch.setenv(milvus_backend.ENV_URI, "http://127.0.0.1:9")
    with pytest.raises(EmbeddingsError, match=r"cannot reach Milvus at http://127.0.0.1:9"):
        open_index(catalogue, "pixels")


def test_cli_refuses_bad_milvus_options_before_any_work(shop, tmp_path, capsys):
    from embeddings.cli import main

    out = tmp_path / "never"
    assert (
        main(
            [
                "build",
                "--source",
                str(shop),
                "--out",
                str(out),
                "--models",
                "pixels",
                "--milvus-uri",
                str(tmp_path / "folder"),
            ]
        )
        == 2
    )
    assert "must end in .db" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                "--source",
                str(shop),
                "--out",
                str(out),
                "--models",
                "pixels",
                "--backend",
                "faiss",
                "--milvus-uri",
                "http://h:1",
            ]
        )
        == 2
    )
    assert "need --backend milvus" in capsys.readouterr().err
    assert not out.exists()


def test_a_lite_database_held_by_another_process_is_explained(shop, tmp_path):
    db = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "import sys, pymilvus; pymilvus.MilvusClient(sys.argv[1]); "
            "print('open', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(EmbeddingsError, match="one process at a time.*milvus-lite server"):
            milvus_backend.connect(str(db))
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_searcher_with_injected_milvus_loader(twin_catalogues):
    """The app builds its own Searcher with cached loaders; a Milvus index slots in unchanged."""
    _, milvus_cat = twin_catalogues
    index = open_index(milvus_cat, "pixels")
    searcher = Searcher(milvus_cat, lambda model_id: index)
    results = searcher.search_item("blue/circle_0", ["pixels"], k=3, filters={"folder": "blue"})
    assert [h.id.split("/")[0] for h in results["pixels"]] == ["blue"] * 3

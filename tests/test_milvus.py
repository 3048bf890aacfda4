"""The Milvus backend on both engines: Milvus Lite and a real Milvus standalone server.

Every engine-level test runs twice with the same assertions (`milvus_uri` is None for Milvus Lite in
the catalogue folder, or the URI of the session's real server, tests/harness/milvus_server.py): the
same answers as FAISS exact, label filters inside Milvus, the backend chosen from the manifest, the
alias swap of a rebuild, the dropped-collection message, the app's path through `--milvus-uri`, and
a query right after a build seeing every row. Lite-only behaviour (one process per database,
recording a local path) is tested once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pymilvus
import pytest
from streamlit.testing.v1 import AppTest

from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
from embeddings.building.model import build_model_index
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.cli import main
from embeddings.errors import (
    CatalogueError,
    EmbeddingsError,
    IndexMismatchError,
    IndexMissingError,
)
from embeddings.index import milvus as milvus_backend
from embeddings.index import milvus_aliases
from embeddings.index.milvus import MilvusIndex
from embeddings.index.opening import built_models, open_index
from embeddings.index.store import (
    load_model_index,
    load_vectors,
    make_faiss_index,
    write_model_index,
)
from embeddings.models import load_model
from embeddings.search.searcher import Searcher, make_searcher
from tests.harness.paths import REPO
from tests.harness.products import draw_product, make_product_folder

pytestmark = pytest.mark.milvus  # Milvus Lite and a real server: outside the fast lane

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
def products(tmp_path_factory) -> Path:
    """48 synthetic products (folder colour + sidecar shape labels), owned by this module."""
    return make_product_folder(tmp_path_factory.mktemp("milvus") / "products")


@pytest.fixture(scope="module", params=["lite", "server"])
def milvus_uri(request) -> str | None:
    """Where this test's Milvus builds go: None = Milvus Lite in the catalogue folder (the
    default), or the URI of the session's real Milvus server (`milvus_server_uri`)."""
    if request.param == "lite":
        return None
    return request.getfixturevalue("milvus_server_uri")


@pytest.fixture(scope="module")
def twin_catalogues(products, milvus_uri, tmp_path_factory):
    """The same products built twice with `pixels` (deterministic numpy): FAISS and Milvus."""
    root = tmp_path_factory.mktemp("twins")
    faiss_cat = create_catalogue(str(products), root / "faiss")
    milvus_cat = create_catalogue(str(products), root / "milvus")
    embedder = load_model("pixels")
    build_model_index(faiss_cat, embedder)
    report = build_model_index(milvus_cat, embedder, backend="milvus", milvus_uri=milvus_uri)
    assert report.count == 48 and report.manifest["backend"] == "milvus"
    return faiss_cat, milvus_cat


def pixel_build(catalogue, milvus_uri, **options):
    return build_model_index(
        catalogue, load_model("pixels"), backend="milvus", milvus_uri=milvus_uri, **options
    )


def client_of(catalogue, milvus_uri):
    return milvus_backend.connect(milvus_uri or str(catalogue.directory / "milvus.db"))


def collections_of(catalogue, milvus_uri, model_id="pixels") -> list[str]:
    prefix = milvus_backend.collection_prefix(catalogue.directory, model_id)
    names = client_of(catalogue, milvus_uri).list_collections()
    return sorted(n for n in names if milvus_backend.is_collection_of(prefix, n))


def test_open_index_picks_the_backend_from_the_manifest(twin_catalogues, milvus_uri):
    faiss_cat, milvus_cat = twin_catalogues
    index = open_index(milvus_cat, "pixels")
    assert isinstance(index, MilvusIndex) and index.native_filters
    assert not isinstance(open_index(faiss_cat, "pixels"), MilvusIndex)
    assert built_models(milvus_cat) == ["pixels"]
    # Milvus Lite lives in the catalogue folder; a server build leaves nothing local.
    assert (milvus_cat.directory / "milvus.db").exists() == (milvus_uri is None)
    assert index.uri == (milvus_uri or str(milvus_cat.directory / "milvus.db"))
    # Readers query the model's alias; the manifest also names the collection behind it.
    section = index.manifest["milvus"]
    assert index.target == section["alias"] != section["collection"] == index.collection
    assert milvus_aliases.alias_target(index.client, index.target) == index.collection
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


def test_text_and_image_queries_on_milvus(twin_catalogues, products):
    from PIL import Image

    faiss_cat, milvus_cat = twin_catalogues
    image = Image.open(products / "green" / "circle_2.png").convert("RGB")
    want = make_searcher(faiss_cat).search_image(image, ["pixels"], k=5)["pixels"]
    got = make_searcher(milvus_cat).search_image(image, ["pixels"], k=5)["pixels"]
    assert [h.id for h in got][0] == "green/circle_2" == [h.id for h in want][0]
    np.testing.assert_allclose(
        [h.score for h in got], [h.score for h in want], atol=1e-4
    )  # sums over 14,400 dims


def test_random_vectors_with_labels_agree_with_faiss_flat(tmp_path, milvus_uri):
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
        milvus_uri=milvus_uri,
        labels=labels,
        manifest={"model_id": "m", "weights_id": "w", "catalogue_fingerprint": "f"},
    )
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


def test_hnsw_above_threshold_is_an_hnsw_collection(products, tmp_path, milvus_uri):
    catalogue = create_catalogue(str(products), tmp_path / "cat")
    report = pixel_build(catalogue, milvus_uri, hnsw_above=10)
    assert report.manifest["index_type"] == "hnsw" and report.manifest["milvus"]["index"] == "HNSW"
    index = open_index(catalogue, "pixels")
    described = index.client.describe_index(index.collection, "vector")
    assert described["index_type"] == "HNSW"
    # The build waited for the graph: every row is indexed before readers see the collection.
    assert described["indexed_rows"] == 48 and described["pending_index_rows"] == 0
    # 48 vectors in a graph with ef=128: every query finds its exact top-5.
    ids, vectors = load_vectors(catalogue.model_dir("pixels"))
    want_scores, want_rows = make_faiss_index(vectors).search(vectors, 5)
    got_scores, got_rows = index.search(vectors, 5)
    assert (got_rows == want_rows).mean() > 0.95


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """n unit vectors around 1,000 centres, each spread in a 16-d subspace of its own (the layout
    is fixed; `seed` draws the points), as bench/bench_scale.py makes them."""
    layout = np.random.default_rng(7)
    centres = layout.standard_normal((1000, dim))
    bases = layout.standard_normal((1000, 16, dim)) / 4.0
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 1000, n)
    spread = 0.5 * rng.standard_normal((n, 16))
    points = centres[cluster] + np.einsum("nl,nld->nd", spread, bases[cluster])
    points += 0.02 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow
def test_filtered_hnsw_search_finds_the_allowed_best(tmp_path, milvus_uri):
    """A label filter on an HNSW collection, right after the build: `ef` widens with the share
    the filter hides, so the allowed best rows are found (a Milvus 2.3 server at the unwidened
    ef: recall 0.85 to 0.89), and the collection is loaded only once indexed (loaded while its
    rows came in, a server answers from growing segments for seconds after the build: 0.54)."""
    n = 20_000
    vectors, queries = clustered(n, 512, 1), clustered(50, 512, 2)
    labels = {"tenth": [f"t{row % 10}" for row in range(n)]}
    model_dir = tmp_path / "cat" / "models" / "m"
    manifest = {"model_id": "m", "weights_id": "w", "catalogue_fingerprint": "f"}
    write_model_index(
        model_dir,
        ids=[f"p{row}" for row in range(n)],
        vectors=vectors,
        backend="milvus",
        milvus_uri=milvus_uri,
        labels=labels,
        manifest=manifest,
        hnsw_above=1000,
    )
    index = load_model_index(model_dir, catalogue_fingerprint="f", model_id="m")
    assert index.manifest["milvus"]["index"] == "HNSW"
    assert index.ef_for(10, index.allowed_share({"tenth": "t3"}, None)) == 1280
    allowed = np.flatnonzero(np.arange(n) % 10 == 3)
    truth = allowed[np.argsort(-(vectors[allowed] @ queries.T), axis=0)[:10].T]
    _, found = index.search(queries, 10, filters={"tenth": "t3"})
    assert set(found.ravel()) <= set(allowed)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.99


def test_rebuilds_move_the_alias_and_drop_a_collection_one_build_later(
    products, tmp_path, milvus_uri
):
    """Each rebuild fills a new collection and moves the alias to it; the collection it replaced
    stays (queries in flight, readers of older manifests) until the next rebuild drops it."""
    catalogue = create_catalogue(str(products), tmp_path / "cat")
    # Another model whose id starts the same way: its collection is never this model's to drop.
    write_model_index(
        catalogue.model_dir("pixels-x"),
        ids=["a", "b"],
        vectors=np.eye(2, dtype=np.float32),
        backend="milvus",
        milvus_uri=milvus_uri,
        manifest={"model_id": "pixels-x", "weights_id": "w", "catalogue_fingerprint": "f"},
    )
    others = collections_of(catalogue, milvus_uri, "pixels-x")
    client = client_of(catalogue, milvus_uri)
    first = pixel_build(catalogue, milvus_uri).manifest["milvus"]
    reader = open_index(catalogue, "pixels")  # a replica that never reloads its manifest
    ids, vectors = load_vectors(catalogue.model_dir("pixels"))
    want_scores, want_rows = make_faiss_index(vectors).search(vectors, 5)
    built = [first]
    for _ in range(2):
        built.append(pixel_build(catalogue, milvus_uri, force=True).manifest["milvus"])
        alias, newest, replaced = built[-1]["alias"], built[-1]["collection"], built[-2]
        assert alias == first["alias"] == replaced["alias"]  # same weights: one alias
        assert milvus_aliases.alias_target(client, alias) == newest
        assert collections_of(catalogue, milvus_uri) == sorted([replaced["collection"], newest])
        assert open_index(catalogue, "pixels").collection == newest
        # The replica holding the first manifest answers through the alias, from the new build.
        got_scores, got_rows = reader.search(vectors, 5)
        for q in range(len(vectors)):
            assert_same_ranking(got_rows[q], got_scores[q], want_rows[q], want_scores[q])
    assert first["collection"] not in collections_of(catalogue, milvus_uri)  # dropped by build 3
    assert collections_of(catalogue, milvus_uri, "pixels-x") == others
    # Switching the same catalogue back to FAISS reuses the vectors (nothing re-embedded).
    report = build_model_index(catalogue, load_model("pixels"))
    assert report.embedded == 0 and report.reused == 48
    assert not isinstance(open_index(catalogue, "pixels"), MilvusIndex)


def test_a_commit_that_fails_after_the_alias_moved_moves_it_back(
    products, tmp_path, milvus_uri, monkeypatch
):
    """The alias moves first; if the model folder then cannot be swapped in (a full disk, say),
    the alias goes back to the build that is still committed and the new collection is
    dropped: readers keep the complete old index, nothing half-committed survives."""
    import embeddings.index.store as index_module

    catalogue = create_catalogue(str(products), tmp_path / "cat")
    first = pixel_build(catalogue, milvus_uri).manifest["milvus"]
    client = client_of(catalogue, milvus_uri)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index_module, "swap_in", full_disk)
    with pytest.raises(OSError, match="No space left"):
        pixel_build(catalogue, milvus_uri, force=True)
    assert milvus_aliases.alias_target(client, first["alias"]) == first["collection"]
    assert collections_of(catalogue, milvus_uri) == [first["collection"]]
    index = open_index(catalogue, "pixels")
    assert index.collection == first["collection"]
    _, rows = index.search(index.vector(catalogue.ids[0]), 5)
    assert rows[0][0] == 0 and (rows >= 0).all()


def test_a_reader_holding_an_older_manifest_reads_a_newer_build_right(tmp_path, milvus_uri):
    """A newer build behind the alias numbers its rows otherwise (products added and removed):
    a reader still holding the older manifest maps every hit and vector by catalogue id."""
    source = make_product_folder(tmp_path / "products", variants=2)
    out = tmp_path / "cat"
    request = BuildRequest(
        out=out,
        source=str(source),
        models=["pixels"],
        bridges=False,
        index=IndexOptions(backend="milvus", milvus_uri=milvus_uri),
    )
    assert build_catalogue(request).committed
    stale = open_index(Catalogue.open(out), "pixels")
    (source / "red" / "circle_0.png").unlink()
    for n in range(3):  # "blue/a_..." sorts first: every later row number moves
        draw_product("green", "circle", 50 + n).save(source / "blue" / f"a_new_{n}.png")
    assert build_catalogue(BuildRequest(out=out, models=["pixels"], bridges=False)).committed
    fresh = open_index(Catalogue.open(out), "pixels")
    assert fresh.target == stale.target and fresh.collection != stale.collection
    assert milvus_aliases.alias_target(stale.client, stale.target) == fresh.collection
    moved = [i for i in stale.ids if i in fresh.row_of and fresh.row_of[i] != stale.row_of[i]]
    assert len(moved) > 10
    ids, vectors = load_vectors(out / "models" / "pixels")
    known = np.array([i in stale.row_of for i in ids])
    for item in moved[::3]:
        query = vectors[ids.index(item)]
        np.testing.assert_allclose(stale.vector(item), query, atol=1e-6)  # fetched by id
        exact = np.where(known, vectors @ query, -np.inf)
        want = np.argsort(-exact, kind="stable")[:6]
        got_scores, got_rows = stale.search(query, 6)
        assert_same_ranking(
            [stale.ids[r] for r in got_rows[0]], got_scores[0], [ids[r] for r in want], exact[want]
        )
        # A row restriction is applied by catalogue id too.
        allowed = np.array(sorted(stale.row_of[i] for i in moved[:8]))
        _, rows = stale.search(query, 4, rows=allowed)
        assert set(rows[0]) <= set(allowed) and len(rows[0]) == 4
    with pytest.raises(IndexMismatchError, match="no longer holds it"):
        stale.vector("red/circle_0")


def test_other_weights_get_their_own_alias(tmp_path, milvus_uri):
    """A rebuild with other weights does not move the alias of the older weights: a reader still
    holding the older manifest (its encoder makes vectors of those weights) keeps searching
    vectors of those weights until the next rebuild drops them."""
    rng = np.random.default_rng(5)
    ids = [f"p{i}" for i in range(200)]
    older, newer = (
        (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        for v in rng.normal(size=(2, 200, 24))
    )
    model_dir = tmp_path / "cat" / "models" / "m"

    def build(weights_id: str, vectors: np.ndarray) -> dict:
        manifest = {"model_id": "m", "weights_id": weights_id, "catalogue_fingerprint": "f"}
        return write_model_index(
            model_dir,
            ids=ids,
            vectors=vectors,
            backend="milvus",
            milvus_uri=milvus_uri,
            manifest=manifest,
        )["milvus"]

    def reader():
        return load_model_index(model_dir, catalogue_fingerprint="f", model_id="m")

    first = build("weights-1", older)
    old_reader = reader()
    second = build("weights-2", newer)
    assert second["alias"] != first["alias"]
    assert (old_reader.search(older[:20], 1)[1][:, 0] == np.arange(20)).all()
    assert (reader().search(newer[:20], 1)[1][:, 0] == np.arange(20)).all()
    build("weights-2", newer)  # the next rebuild drops the first collection and its alias
    client = milvus_backend.connect(milvus_uri or str(tmp_path / "cat" / "milvus.db"))
    assert milvus_aliases.alias_target(client, first["alias"]) is None
    assert not client.has_collection(first["collection"])
    with pytest.raises(EmbeddingsError, match=first["alias"]):
        old_reader.search(older[:1], 1)


def test_a_dropped_collection_says_how_to_rebuild(products, tmp_path, milvus_uri):
    catalogue = create_catalogue(str(products), tmp_path / "cat")
    pixel_build(catalogue, milvus_uri)
    index = open_index(catalogue, "pixels")
    index.client.drop_collection(index.collection)  # its alias no longer answers either
    expected = (
        f"alias {index.target} of model 'pixels' is not in {re.escape(index.uri)} "
        r"\(dropped, or another database\); rebuild it: python -m embeddings build "
        f"--catalog .*cat --models pixels"
    )
    with pytest.raises(IndexMissingError, match=expected):
        open_index(catalogue, "pixels")
    # The hinted command rebuilds it with the catalogue's own settings, on the same Milvus.
    command = ["build", "--catalog", str(catalogue.directory), "--models", "pixels", "--no-bridge"]
    assert main(command) == 0
    rebuilt = open_index(Catalogue.open(catalogue.directory), "pixels")
    assert isinstance(rebuilt, MilvusIndex) and len(rebuilt) == 48 and rebuilt.uri == index.uri
    # An alias removed by hand is explained the same way.
    rebuilt.client.drop_alias(rebuilt.target)
    with pytest.raises(IndexMissingError, match=expected):
        open_index(catalogue, "pixels")


def test_a_query_right_after_a_build_sees_every_row(products, tmp_path, milvus_uri):
    """The build waits until every row is indexed and visible (a Strong read); readers then use
    the collection's own (Bounded) consistency, from a new connection, and see all 48 rows."""
    catalogue = create_catalogue(str(products), tmp_path / "cat")
    pixel_build(catalogue, milvus_uri)
    index = open_index(catalogue, "pixels")
    ids, vectors = load_vectors(catalogue.model_dir("pixels"))
    other = pymilvus.MilvusClient(uri=index.uri)  # no session state shared with the builder
    count = other.query(index.target, filter="", output_fields=["count(*)"])
    assert int(count[0]["count(*)"]) == 48
    hits = other.search(index.target, data=[vectors[0]], limit=48, output_fields=["item_id"])
    assert sorted(h["entity"]["item_id"] for h in hits[0]) == sorted(ids)
    _, rows = index.search(vectors, 48)
    assert all(sorted(r) == list(range(48)) for r in rows)
    if milvus_uri:  # and from another process (a Lite database allows one process at a time)
        script = (
            "import sys; from embeddings.catalogue import Catalogue; "
            "from embeddings.search.searcher import open_index; "
            "index = open_index(Catalogue.open(sys.argv[1]), 'pixels'); "
            "print(len({int(r) for r in index.search(index.reconstruct_batch(range(48)), 48)[1]"
            ".ravel()}))"
        )
        done = subprocess.run(
            [PYTHON, "-c", script, str(catalogue.directory)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "48"


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
def lite_served(tmp_path):
    """A Milvus Lite database served over gRPC (`milvus-lite server`), for several processes."""
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


@pytest.fixture(params=["lite-served", "server"])
def served_uri(request) -> str:
    """A Milvus address several processes share: Milvus Lite behind `milvus-lite server`, or the
    session's real Milvus server."""
    if request.param == "lite-served":
        return request.getfixturevalue("lite_served")
    return request.getfixturevalue("milvus_server_uri")


def run_cli(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "embeddings", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_build_and_search_through_a_server_uri(products, tmp_path, served_uri, monkeypatch):
    """The app's path: `build --milvus-uri` on the CLI, `search` in another process, and the app
    reading the catalogue whose manifest points at the server."""
    data = tmp_path / "data"
    out = data / "served-cat"
    env = {**os.environ, "EMBEDDINGS_DATA": str(data), "PYTHONPATH": str(REPO)}
    build = run_cli(
        [
            "build",
            "--source",
            str(products),
            "--out",
            str(out),
            "--models",
            "pixels",
            "--milvus-uri",
            served_uri,
            "--no-bridge",
        ],
        env,
    )
    assert build.returncode == 0, build.stderr
    catalogue = Catalogue.open(out)
    index = open_index(catalogue, "pixels")
    assert index.uri == served_uri and index.manifest["milvus"]["uri"] == served_uri
    assert not (out / "milvus.db").exists()  # nothing local: the vectors are on the server
    query = ["--item", "red/square_1", "-k", "3", "--filter", "shape=square", "--json"]
    search = run_cli(["search", "--catalog", str(out), "--model", "pixels", *query], env, 120)
    assert search.returncode == 0, search.stderr
    cli_ids = [hit["id"] for hit in json.loads(search.stdout)]
    assert len(cli_ids) == 3 and all(i.split("/")[1].startswith("square_") for i in cli_ids)
    # The app, on the same catalogue: its grid shows the same three products.
    monkeypatch.setenv("EMBEDDINGS_DATA", str(data))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    params = {"catalog": "served-cat", "models": "pixels", "k": "3", "item": "red/square_1"}
    for name, value in {**params, "filter": "shape:square"}.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, app.exception
    grids = {}
    for element in app.get("bidi_component"):
        data_sent = json.loads(element.proto.json)
        grids[data_sent["model"]] = [tile["id"] for tile in data_sent["tiles"]]
    assert grids["pixels"] == cli_ids
    # EMBEDDINGS_MILVUS_URI points a deployment at another address of the same data.
    monkeypatch.setenv(milvus_backend.ENV_URI, "http://127.0.0.1:9")
    with pytest.raises(EmbeddingsError, match=r"cannot reach Milvus at http://127.0.0.1:9"):
        open_index(catalogue, "pixels")


REPLICA = """
import json, sys
from pathlib import Path
import numpy as np
from embeddings.catalogue import Catalogue
from embeddings.index.opening import open_index, open_snapshot

directory, stop, log = Path(sys.argv[1]), Path(sys.argv[2]), open(sys.argv[3], "w")
queries = np.load(sys.argv[4])
stale = open_index(Catalogue.open(directory), "pixels")  # a replica that never reloads
n = 0
while not stop.exists():
    q = n % len(queries)
    n += 1
    for kind in ("stale", "fresh"):
        record = {"kind": kind, "query": q}
        try:
            if kind == "stale":
                index = stale
            else:  # a replica that reloads the manifest before every query (as the app does)
                index = open_snapshot(directory, ["pixels"])[1]["pixels"]
                if isinstance(index, Exception):
                    raise index
            scores, rows = index.search(queries[q], 5)
            record.update(ok=True, known=len(index), ids=[index.ids[r] for r in rows[0]],
                          scores=[float(s) for s in scores[0]])
        except Exception as exc:
            record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        log.write(json.dumps(record) + "\\n")
        log.flush()
"""


def matching_builds(record: dict, queries: np.ndarray, builds: dict[int, tuple]) -> list[int]:
    """The builds (by product count) whose exact top-5, over the products the reader knows,
    this answer is."""
    known = set(builds[record["known"]][0])
    query = queries[record["query"]]
    matches = []
    for count, (ids, vectors) in builds.items():
        row_of = {item_id: row for row, item_id in enumerate(ids)}
        if len(record["ids"]) != 5 or any(i not in row_of for i in record["ids"]):
            continue
        exact = np.where([i in known for i in ids], vectors @ query, -np.inf)
        best = np.sort(exact)[::-1][:5]
        own = [exact[row_of[i]] for i in record["ids"]]
        if np.allclose(record["scores"], best, atol=1e-4) and np.allclose(own, best, atol=1e-4):
            matches.append(count)
    return matches


@pytest.mark.slow
def test_replicas_query_through_the_alias_while_the_catalogue_is_rebuilt(
    milvus_server_uri, tmp_path
):
    """A second process queries the real server in a loop, through a manifest it never reloads
    and through one it reloads every time, while this process rebuilds the catalogue three
    times (products added each time): no query fails, and every answer is the exact top-5 of
    one complete build."""
    source = make_product_folder(tmp_path / "products", variants=3)
    out = tmp_path / "cat"
    index_options = IndexOptions(milvus_uri=milvus_server_uri)
    request = BuildRequest(
        out=out, source=str(source), models=["pixels"], bridges=False, index=index_options
    )
    assert build_catalogue(request).committed
    builds = {}

    def remember() -> None:
        ids, vectors = load_vectors(out / "models" / "pixels")
        builds[len(ids)] = (ids, vectors)

    remember()
    pixels = load_model("pixels")
    added = [[draw_product("green", "square", 20 + 4 * r + n) for n in range(4)] for r in range(3)]
    queries = np.concatenate([pixels.encode_images(images) for images in added])
    np.save(tmp_path / "queries.npy", queries)
    stop, log = tmp_path / "stop", tmp_path / "replica.jsonl"
    replica = subprocess.Popen(
        [PYTHON, "-c", REPLICA, str(out), str(stop), str(log), str(tmp_path / "queries.npy")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            not log.exists() or len(log.read_text().splitlines()) < 4
        ):
            assert replica.poll() is None, replica.stderr.read()
            time.sleep(0.2)  # both replicas answer before the first rebuild
        for round_number, images in enumerate(added):
            for n, image in enumerate(images):
                image.save(source / "green" / f"square_{20 + 4 * round_number + n}.png")
            result = build_catalogue(BuildRequest(out=out, models=["pixels"], bridges=False))
            assert [o.status for o in result.outcomes] == ["built"], result.outcomes
            remember()
            time.sleep(1.0)  # let the replica query this build for a while
    finally:
        stop.touch()
        try:
            replica.wait(timeout=120)
        except subprocess.TimeoutExpired:
            replica.kill()
            replica.wait(timeout=30)
            pytest.fail(f"a replica query hung; its last answers: {log.read_text()[-2000:]}")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["error"] for r in records if not r["ok"]] == []
    assert len(records) >= 40
    unmatched = [r for r in records if not matching_builds(r, queries, builds)]
    assert unmatched == []
    fresh_counts = {r["known"] for r in records if r["kind"] == "fresh"}
    assert len(fresh_counts) == 4  # the reloading replica read all four builds
    newest = max(builds)
    assert any(
        matching_builds(r, queries, builds) == [newest] for r in records if r["kind"] == "fresh"
    )
    assert len(collections_of(Catalogue.open(out), milvus_server_uri)) == 2


def test_cli_refuses_bad_milvus_options_before_any_work(products, tmp_path, capsys):
    from embeddings.cli import main

    out = tmp_path / "never"
    assert (
        main(
            [
                "build",
                "--source",
                str(products),
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
                str(products),
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


def test_a_lite_database_held_by_another_process_is_explained(products, tmp_path):
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

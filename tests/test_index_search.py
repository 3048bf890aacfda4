"""Index artefacts, manifest checks, and search exactness against the tutorial's method."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from embeddings.building.model import build_model_index
from embeddings.catalogue import create_catalogue
from embeddings.errors import IndexMismatchError, IndexMissingError, QueryError
from embeddings.index.opening import built_models, open_index
from embeddings.index.store import (
    load_model_index,
    load_vectors,
    make_faiss_index,
    write_model_index,
)
from embeddings.models import load_model
from embeddings.search.searcher import Searcher, make_searcher, rank
from tests.harness.products import draw_product


def tutorial_top_k(vectors: np.ndarray, row: int, k: int) -> list[int]:
    """The tutorial's way: sklearn cosine_similarity against everything, sort, drop the query."""
    scores = cosine_similarity(vectors[row : row + 1], vectors)[0]
    order = [i for i in np.argsort(-scores, kind="stable") if i != row]
    return order[:k], scores


def test_item_search_matches_sklearn_cosine_similarity(built_catalogue):
    searcher = make_searcher(built_catalogue)
    for model_id in ("pixels", "efficientnet-lite0"):
        ids, vectors = load_vectors(built_catalogue.model_dir(model_id))
        for row in (0, 7, 30):
            hits = searcher.search_item(ids[row], [model_id], k=10)[model_id]
            expected, scores = tutorial_top_k(vectors, row, 10)
            assert ids[row] not in [h.id for h in hits]
            np.testing.assert_allclose(
                [h.score for h in hits], scores[expected], atol=1e-4
            )  # float32 sums over 14,400 dims
            # Same ranking, allowing swaps only between (near-)tied scores.
            got = [ids.index(h.id) for h in hits]
            for g, e in zip(got, expected, strict=True):
                assert g == e or abs(scores[g] - scores[e]) < 1e-4


def test_synthetic_neighbours_share_the_colour_far_above_chance(built_catalogue):
    searcher = make_searcher(built_catalogue)
    for model_id in ("pixels", "efficientnet-lite0"):
        shares = []
        for item_id in built_catalogue.ids:
            hits = searcher.search_item(item_id, [model_id], k=5)[model_id]
            shares.append(np.mean([h.id.split("/")[0] == item_id.split("/")[0] for h in hits]))
        assert np.mean(shares) > 0.5, model_id  # chance is 11/47 = 0.23


def test_manifest_and_files(built_catalogue):
    manifest = json.loads(
        (built_catalogue.model_dir("efficientnet-lite0") / "manifest.json").read_text()
    )
    assert manifest["model_id"] == "efficientnet-lite0" and manifest["dim"] == 1280
    assert manifest["count"] == 48 and manifest["index_type"] == "flat"
    assert manifest["catalogue_fingerprint"] == built_catalogue.fingerprint
    assert {"faiss", "numpy", "torch", "python"} <= set(manifest["libraries"])
    ids = (built_catalogue.model_dir("efficientnet-lite0") / "ids.txt").read_text().splitlines()
    assert ids == built_catalogue.ids  # row-aligned with the catalogue
    assert built_models(built_catalogue) == ["efficientnet-lite0", "pixels"]


def test_index_from_another_model_is_refused(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    shutil.rmtree(catalogue.model_dir("pixels"))
    shutil.copytree(catalogue.model_dir("efficientnet-lite0"), catalogue.model_dir("pixels"))
    with pytest.raises(
        IndexMismatchError, match="built by model 'efficientnet-lite0', not 'pixels'.*rebuild"
    ):
        open_index(catalogue, "pixels")


def test_index_of_another_catalogue_version_is_refused(
    built_catalogue, product_folder, copy_catalogue
):
    catalogue = copy_catalogue(built_catalogue)
    changed = create_catalogue(
        str(product_folder), catalogue.directory, limit=40
    )  # products changed
    with pytest.raises(
        IndexMismatchError, match="another version of the catalogue.*--models pixels"
    ):
        open_index(changed, "pixels")


def test_truncated_index_file_is_refused(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    path = catalogue.model_dir("pixels") / "index.faiss"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IndexMismatchError, match="damaged|disagree"):
        open_index(catalogue, "pixels")


def test_missing_index_says_how_to_build(built_catalogue):
    with pytest.raises(IndexMissingError, match="no index for model 'clip'.*build"):
        open_index(built_catalogue, "clip")


def test_dimension_mismatch_is_refused(built_catalogue):
    index = open_index(built_catalogue, "pixels")
    with pytest.raises(IndexMismatchError, match="14400"):
        rank(index, np.ones(1280, np.float32), 5)


def test_queries_bad_input(built_catalogue):
    searcher = make_searcher(built_catalogue)
    with pytest.raises(QueryError, match="no product with id 'nope'"):
        searcher.search_item("nope", ["pixels"], 5)
    with pytest.raises(QueryError, match="k must be between 1 and"):
        searcher.search_item("red/circle_0", ["pixels"], 0)
    with pytest.raises(QueryError, match="empty"):
        searcher.search_text("   ", ["pixels"], 5)
    with pytest.raises(QueryError, match="limit is 1,000"):
        searcher.search_text("x" * 5000, ["pixels"], 5)
    # k larger than the catalogue: every other product, ranked.
    hits = searcher.search_item("red/circle_0", ["pixels"], 1000)["pixels"]
    assert len(hits) == 47 and len({h.id for h in hits}) == 47


def test_text_on_an_image_only_model_names_the_models_that_can(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    shutil.rmtree(catalogue.directory / "bridges", ignore_errors=True)
    with pytest.raises(QueryError, match="'pixels' cannot take text.*models that can: none yet"):
        make_searcher(catalogue).search_text("red circle", ["pixels"], 5)


def test_label_filter_is_exact(built_catalogue):
    searcher = make_searcher(built_catalogue)
    hits = searcher.search_item(
        "red/circle_0", ["pixels", "efficientnet-lite0"], 5, filters={"shape": "square"}
    )
    for model_hits in hits.values():
        assert len(model_hits) == 5
        assert all(h.id.split("/")[1].startswith("square") for h in model_hits)
    # The filtered ranking equals the unfiltered ranking restricted to squares.
    full = searcher.search_item("red/circle_0", ["pixels"], 47)["pixels"]
    assert [h.id for h in hits["pixels"]] == [h.id for h in full if "/square" in h.id][:5]


def test_image_query_with_other_weights_is_refused(built_catalogue):
    from PIL import Image

    class OtherWeights:
        weights_id = "something-else"

        def encode_images(self, images):
            return np.ones((len(images), 1280), np.float32) / np.sqrt(1280)

    searcher = Searcher(
        built_catalogue,
        lambda m: open_index(built_catalogue, m),
        image_encoder_loader=lambda m: OtherWeights(),
    )
    with pytest.raises(QueryError, match="built with"):
        searcher.search_image(Image.new("RGB", (60, 80)), ["efficientnet-lite0"], 3)


def test_upload_query_finds_the_same_product(built_catalogue):
    from embeddings.images import open_rgb

    image = open_rgb(built_catalogue.image_path("blue/triangle_2"))
    hits = make_searcher(built_catalogue).search_image(image, ["pixels", "efficientnet-lite0"], 3)
    for model_hits in hits.values():
        assert model_hits[0].id == "blue/triangle_2" and model_hits[0].score > 0.999


def test_hnsw_above_threshold_has_high_recall():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    vectors = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    exact = make_faiss_index(vectors, hnsw_above=10_000)
    graph = make_faiss_index(vectors, hnsw_above=1_000)
    assert type(exact).__name__ == "IndexFlatIP" and type(graph).__name__ == "IndexHNSWFlat"
    _, truth = exact.search(vectors[:200], 10)
    _, found = graph.search(vectors[:200], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    assert recall >= 0.98


def test_write_is_atomic_and_the_writer_recovers_an_interrupted_swap(tmp_path):
    from embeddings.building.catalogue import repair_catalogue

    model_dir = tmp_path / "models" / "m"
    vectors = np.eye(3, 4, dtype=np.float32)
    write_model_index(
        model_dir,
        ids=["a", "b", "c"],
        vectors=vectors,
        manifest={"model_id": "m", "weights_id": "w", "catalogue_fingerprint": "f"},
    )
    assert not any(p.name.startswith(".m.new") for p in (tmp_path / "models").iterdir())
    # A crash between "old aside" and "new in" leaves only m.old. A reader changes nothing: it
    # sees no index; the next build (the writer, under its lock) puts the old one back.
    model_dir.rename(tmp_path / "models" / "m.old")
    with pytest.raises(IndexMissingError):
        load_model_index(model_dir, catalogue_fingerprint="f", model_id="m")
    assert (tmp_path / "models" / "m.old").is_dir() and not model_dir.exists()
    repair_catalogue(tmp_path)
    index = load_model_index(model_dir, catalogue_fingerprint="f", model_id="m")
    assert index.ids == ["a", "b", "c"]


def test_incremental_build_embeds_only_new_products(product_folder, tmp_path):
    source = tmp_path / "products"
    shutil.copytree(product_folder, source)
    catalogue = create_catalogue(str(source), tmp_path / "cat")
    model = load_model("pixels")
    first = build_model_index(catalogue, model)
    assert first.embedded == 48
    draw_product("red", "circle", 99).save(source / "red" / "circle_99.png")
    draw_product("blue", "square", 99).save(source / "blue" / "square_99.png")
    grown = create_catalogue(str(source), tmp_path / "cat")
    second = build_model_index(grown, model)
    assert (second.embedded, second.count) == (2, 50)
    fresh = build_model_index(grown, model, force=True)
    assert fresh.embedded == 50
    assert open_index(grown, "pixels").ids == grown.ids


def test_bad_images_are_skipped_and_reported(product_folder, tmp_path):
    source = tmp_path / "products"
    shutil.copytree(product_folder, source)
    (source / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (source / "red" / "empty.png").write_bytes(b"")
    catalogue = create_catalogue(str(source), tmp_path / "cat")
    report = build_model_index(catalogue, load_model("pixels"))
    assert report.count == 48 and {i for i, _ in report.failed} == {"red/broken", "red/empty"}
    manifest = json.loads((catalogue.model_dir("pixels") / "manifest.json").read_text())
    assert {f["id"] for f in manifest["failed"]} == {"red/broken", "red/empty"}
    with pytest.raises(QueryError, match="could not\\s+be read"):
        make_searcher(catalogue).search_item("red/broken", ["pixels"], 3)

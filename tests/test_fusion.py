"""Fused models: an id `A+B` ranks by fusing A's and B's results, with no index of
its own, wherever a model id works: search of every kind, steering, evaluation, both backends."""

from __future__ import annotations

import re

import numpy as np
import pytest

from embeddings.building.model import build_model_index
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError, IndexMissingError, QueryError
from embeddings.index.fused import (
    RRF_K,
    FusedIndex,
    check_model_id,
    fused_pairs,
    fused_parts,
    rrf_scores,
)
from embeddings.index.opening import open_index, open_snapshot
from embeddings.index.store import load_vectors
from embeddings.models import load_model
from embeddings.quality.evaluate import evaluate_catalogue, load_results, save_results, stale_reason
from embeddings.search.query import Query
from embeddings.search.searcher import Searcher, make_searcher
from tests.harness.products import draw_product

FUSED = "efficientnet-lite0+pixels"


def brute_force_fusion(catalogue, parts, query_id, depth, method, k):
    """The fused top-k computed from the stored vectors with numpy alone."""
    scores, listed = {}, []
    for model_id in parts:
        ids, vectors = load_vectors(catalogue.model_dir(model_id))
        row = {item_id: i for i, item_id in enumerate(ids)}
        exact = vectors.astype(np.float64)  # the reference in float64
        all_scores = exact @ exact[row[query_id]]
        scores[model_id] = dict(zip(ids, all_scores.tolist(), strict=True))
        order = np.argsort(-all_scores, kind="stable")[:depth]
        listed.append([ids[i] for i in order])
    fused = {}
    for model_id, top in zip(parts, listed, strict=True):
        own = np.array([scores[model_id][i] for i in top])
        for item_id in {i for lst in listed for i in lst}:
            if method == "rrf":
                if item_id in top:
                    fused[item_id] = fused.get(item_id, 0) + 1 / (RRF_K + top.index(item_id) + 1)
            else:
                z = (scores[model_id][item_id] - own.mean()) / own.std()
                fused[item_id] = fused.get(item_id, 0) + z / len(parts)
    first_ids, _ = load_vectors(catalogue.model_dir(parts[0]))
    row = {item_id: i for i, item_id in enumerate(first_ids)}
    ranked = sorted(fused, key=lambda i: (-fused[i], row[i]))  # ties: catalogue order
    return [i for i in ranked if i != query_id][:k], fused


# -- ids ----------------------------------------------------------------------------------------
def test_fused_ids_are_checked_and_name_their_parts():
    assert check_model_id(" efficientnet-lite0+pixels ") == FUSED
    assert fused_parts(FUSED) == ["efficientnet-lite0", "pixels"]
    assert fused_pairs(["pixels", "clip", "x+y"]) == ["pixels+clip"]
    with pytest.raises(EmbeddingsError, match=re.escape("unknown model 'nope' in fused model")):
        check_model_id("pixels+nope")
    with pytest.raises(EmbeddingsError, match="'pixels\\+nope'.*known models: pixels"):
        check_model_id("pixels+nope")
    with pytest.raises(EmbeddingsError, match="'foo' and 'bar'"):
        check_model_id("foo+bar")
    with pytest.raises(EmbeddingsError, match="names a model twice"):
        check_model_id("pixels+pixels")
    with pytest.raises(EmbeddingsError, match="unknown model 'nope'"):
        check_model_id("nope")


def test_reciprocal_rank_fusion_by_hand():
    fused = rrf_scores([np.array([3, 1, -1]), np.array([1, 2, 3])])
    assert fused == pytest.approx(
        {3: 1 / 61 + 1 / 63, 1: 1 / 62 + 1 / 61, 2: 1 / 62}
    )  # padding (-1) counts for nothing


# -- the index ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["zscore", "rrf"])
def test_fused_ranking_is_the_fusion_of_the_parts_lists(built_catalogue, method):
    parts = [open_index(built_catalogue, m) for m in ("efficientnet-lite0", "pixels")]
    index = FusedIndex(FUSED, parts, method=method, depth=8)
    assert index.segments == (1280, 14_400) and len(index) == 48
    searcher = Searcher(built_catalogue, lambda m: index)
    for query_id in ("red/circle_0", "blue/triangle_3", "yellow/square_1"):
        want, fused = brute_force_fusion(
            built_catalogue, ["efficientnet-lite0", "pixels"], query_id, 8, method, 6
        )
        hits = searcher.search(Query(item=query_id), [FUSED], 6)[FUSED]
        assert [h.id for h in hits] == want, (method, query_id)
        # z-scores divide float32 cosines by a small spread: compare with a relative tolerance
        np.testing.assert_allclose(
            [h.score for h in hits], [fused[i] for i in want], rtol=2e-3, atol=1e-6
        )


def test_fused_search_answers_every_query_kind(bridged_catalogue):
    searcher = make_searcher(bridged_catalogue)
    upload = draw_product("green", "square", 5)
    queries = {
        "item": Query(item="red/circle_0"),
        "text": Query(text="Blue triangle product"),
        "image": Query(image=upload),
        "mix": Query(item="red/circle_0", text="blue", text_weight=0.6),
        "steered": Query(item="red/circle_0", liked=("blue/circle_0",), disliked=("red/square_0",)),
    }
    for name, query in queries.items():
        hits = searcher.search(query, [FUSED, "pixels"], 8)[FUSED]
        assert len(hits) == 8, name
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True), name
        assert not {h.id for h in hits} & query.excluded, name
    folder = bridged_catalogue.items["folder"]
    text_hits = searcher.search_text("Blue triangle product", [FUSED], 4)[FUSED]
    assert [folder[h.id] for h in text_hits].count("blue") >= 3
    image_hits = searcher.search_image(upload, [FUSED], 4)[FUSED]
    assert [folder[h.id] for h in image_hits][:2] == ["green", "green"]


def test_fused_text_and_image_queries_check_each_parts_weights(built_catalogue):
    class Wrong:
        kind = "native"
        weights_id = "someone-else's-weights"

        def encode_images(self, images):
            return np.ones((len(images), 14_400), np.float32)

    right = load_model("efficientnet-lite0")
    searcher = Searcher(
        built_catalogue,
        lambda m: open_index(built_catalogue, m) if "+" not in m else fused_index(m),
        image_encoder_loader=lambda m: right if m == "efficientnet-lite0" else Wrong(),
    )

    def fused_index(model_id):
        return FusedIndex(model_id, [open_index(built_catalogue, p) for p in fused_parts(model_id)])

    with pytest.raises(QueryError, match="model 'pixels' is loaded with weights"):
        searcher.search_image(draw_product("red", "circle", 0), [FUSED], 3)
    with pytest.raises(QueryError, match="fused model 'efficientnet-lite0\\+pixels'.*no text"):
        make_searcher(built_catalogue).search_text("red", [FUSED], 3)


def test_fused_filters_keep_only_matching_products(built_catalogue):
    hits = make_searcher(built_catalogue).search_item(
        "red/circle_0", [FUSED], 6, filters={"shape": "square"}
    )[FUSED]
    assert len(hits) == 6 and all(h.id.split("/")[1].startswith("square") for h in hits)


def test_open_snapshot_opens_each_part_once_and_reports_a_missing_part(built_catalogue):
    catalogue, indexes = open_snapshot(built_catalogue.directory, ["pixels", FUSED, "clip+pixels"])
    assert isinstance(indexes[FUSED], FusedIndex)
    assert indexes[FUSED].parts[1] is indexes["pixels"]  # the same opened index, not a second
    error = indexes["clip+pixels"]
    assert isinstance(error, IndexMissingError) and "fused model 'clip+pixels'" in str(error)
    with pytest.raises(IndexMissingError, match="clip"):
        make_searcher(catalogue, indexes=indexes).search_item("red/circle_0", ["clip+pixels"], 3)


# -- evaluation ---------------------------------------------------------------------------------
def test_evaluate_measures_a_fused_model_and_knows_when_a_part_changed(
    bridged_catalogue, copy_catalogue
):
    catalogue = copy_catalogue(bridged_catalogue)
    result = evaluate_catalogue(catalogue, ["pixels", FUSED], queries=24, seed=0)
    for label in ("folder", "shape"):
        assert result.value(FUSED, "image", label, "precision", 10) > result.value(
            FUSED, "image", label, "chance", 10
        )
    assert result.value(FUSED, "text", "product", "recall", 10) is not None
    entry = result.manifest["models"][FUSED]
    assert set(entry["parts"]) == {"efficientnet-lite0", "pixels"} and entry["text"] == "bridge"
    assert len(result.neighbours[FUSED]) == 24 and len(result.neighbours[FUSED][0]) == 10
    save_results(catalogue, result)
    loaded = load_results(catalogue)
    assert loaded is not None and loaded.neighbours[FUSED] == result.neighbours[FUSED]
    build_model_index(catalogue, load_model("efficientnet-lite0"), force=True)
    reason = stale_reason(Catalogue.open(catalogue.directory), result.manifest)
    assert reason is not None and "efficientnet-lite0" in reason


# -- Milvus ---------------------------------------------------------------------------------
@pytest.mark.milvus
def test_a_fused_model_over_milvus_and_faiss_parts_answers_like_faiss_alone(
    built_catalogue, tmp_path, copy_catalogue
):
    mixed = copy_catalogue(built_catalogue, tmp_path / "mixed")
    build_model_index(mixed, load_model("pixels"), backend="milvus")  # efficientnet stays FAISS
    index = open_index(mixed, FUSED)
    assert [p.backend for p in index.parts] == ["faiss", "milvus"] and not index.native_filters
    faiss_only, milvus_too = make_searcher(built_catalogue), make_searcher(mixed)
    for query in (
        Query(item="green/square_2"),
        Query(item="red/circle_1", liked=("blue/circle_2",)),
    ):
        for filters in (None, {"folder": "blue"}):
            want = faiss_only.search(query, [FUSED], 7, filters=filters)[FUSED]
            got = milvus_too.search(query, [FUSED], 7, filters=filters)[FUSED]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-3)
            assert [h.id for h in got][:3] == [h.id for h in want][:3]

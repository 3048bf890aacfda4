"""Where models disagree: per-label-value precision, confusions and disagreeing
queries from an evaluation's saved neighbours, and the Compare page that draws them."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from embeddings.catalogue import Catalogue
from embeddings.quality import disagreement
from embeddings.quality.evaluate import EvaluationResult, evaluate_catalogue, save_results
from tests.harness.apptest import grids, make_app, messages

FUSED = "efficientnet-lite0+pixels"


def hand_result() -> EvaluationResult:
    """Three queries, two models, neighbours chosen by hand (k = 10 with 4 listed: the rest
    count as misses, like padding)."""
    queries = ["red/circle_0", "red/square_0", "blue/circle_0"]
    neighbours = {
        "a": [
            ["red/circle_1", "red/circle_2", "blue/circle_1", "green/circle_1"],
            ["red/square_1", "red/square_2", "red/square_3", "red/circle_1"],
            ["blue/circle_1", "blue/square_1", "green/circle_1", "green/circle_2"],
        ],
        "b": [
            ["red/circle_1", "red/circle_2", "red/circle_3", "red/square_1"],
            ["green/square_1", "blue/square_1", "yellow/square_1", "red/square_1"],
            ["blue/circle_1", "blue/circle_2", "blue/square_1", "blue/triangle_1"],
        ],
    }
    manifest = {"image_queries": {"ids": queries}}
    return EvaluationResult([], {}, manifest, {}, neighbours)


def test_per_value_precision_and_the_worst_values(built_catalogue):
    result = hand_result()
    frame = disagreement.query_precision(result, built_catalogue, "folder", ["a", "b"])
    table = disagreement.value_precision(frame)
    assert table.loc["red", "a"] == pytest.approx((0.2 + 0.4) / 2)
    assert table.loc["red", "b"] == pytest.approx((0.4 + 0.1) / 2)
    assert table.loc["blue", "a"] == pytest.approx(0.2) and table.loc["blue", "b"] == 0.4
    assert table["queries"].to_dict() == {"red": 2, "blue": 1}
    assert table.index.tolist() == ["red", "blue"]  # worst mean first: 0.275 before 0.3
    assert disagreement.worst_values(table, "b", min_queries=1) == ["red", "blue"]
    assert disagreement.worst_values(table, "b", min_queries=2) == ["red"]
    assert disagreement.worst_values(table, "nope") == []


def test_wrong_neighbours_labels_by_value(built_catalogue):
    data = disagreement.wrong_neighbour_labels(
        hand_result(), built_catalogue, "folder", "b", ["red", "blue"], top=2
    )
    red = data[data["value"] == "red"].set_index("neighbour")["share"].to_dict()
    assert red == pytest.approx({"green": 1 / 3, "blue": 1 / 3, disagreement.OTHER: 1 / 3})
    assert data[data["value"] == "blue"].empty  # b's blue neighbours were all blue


def test_disagreements_rank_the_queries_that_split_the_models(built_catalogue):
    frame = disagreement.disagreements(hand_result(), built_catalogue, "shape", ["a", "b"])
    assert frame["query"].tolist() == ["red/square_0", "blue/circle_0", "red/circle_0"]
    first = frame.iloc[0]
    assert first["overlap"] == pytest.approx(0.1)  # one shared product of ten
    assert (first["a"], first["b"]) == (pytest.approx(0.3), pytest.approx(0.4))
    assert first["gap"] == pytest.approx(0.1)
    assert disagreement.disagreements(hand_result(), built_catalogue, "shape", ["a"]).empty
    assert disagreement.available_models(hand_result(), ["a", "c"]) == ["a"]


@pytest.fixture
def measured_shop(built_catalogue, copy_catalogue, tmp_path) -> Catalogue:
    """A copy of the synthetic shop with an evaluation of both models and their fusion saved."""
    catalogue = copy_catalogue(built_catalogue, tmp_path / "data" / "shop")
    models = ["efficientnet-lite0", "pixels", FUSED]
    save_results(catalogue, evaluate_catalogue(catalogue, models, queries=48, seed=0))
    return catalogue


def test_compare_page_shows_where_models_disagree(measured_shop, monkeypatch):
    at = make_app(
        measured_shop.directory.parent,
        monkeypatch,
        models=f"pixels,efficientnet-lite0,{FUSED}",
        label="shape",
    )
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    titles = [str(c.get("title", "")) for c in charts] + [
        str(layer.get("title", "")) for c in charts for layer in c.get("layer", [])
    ]
    assert any("Precision@10 by shape value" in t for t in titles), titles
    assert any("the shape of its wrong neighbours" in t for t in titles), titles
    links = at.get("page_link")
    assert links, "no link to the Search page"
    first = links[0].proto
    assert first.label == "Search side by side" and first.page_script_hash
    query = dict(parse_qsl(first.query_string))
    assert query["models"] == f"pixels,efficientnet-lite0,{FUSED}" and query["label"] == "shape"
    assert query["item"] in measured_shop
    cards = messages(at.get("html"))
    assert 'data-testid="disagreement"' in cards
    # The link leads to the Search page with that query, the three models side by side.
    search = make_app(measured_shop.directory.parent, monkeypatch, **query).run()
    shown = grids(search)
    assert all(shown[m]["query"] == query["item"] for m in query["models"].split(","))


def test_compare_page_offers_to_measure_when_neighbours_are_missing(measured_shop, monkeypatch):
    from embeddings.quality.evaluate import RESULTS_FILE, results_dir

    path = results_dir(measured_shop) / RESULTS_FILE
    saved = json.loads(path.read_text())
    saved.pop("neighbours")  # as saved before neighbours were kept
    path.write_text(json.dumps(saved))
    at = make_app(measured_shop.directory.parent, monkeypatch, models="pixels")
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert "no per-query neighbours for pixels" in messages(at.info)
    assert "eval_run" in [button.key for button in at.button]

"""The Map and Duplicates pages and Search's "hide near-duplicates", through Streamlit's AppTest.

The catalogue is the synthetic shop with planted copies (tests/harness/products.py), with
`pixels` and `efficientnet-lite0`. Hover and clicks on the map itself happen in a browser
(tests/test_browser_maps.py); here the chart is checked through what the page sends it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app_support import map_payload
from app_support.map_ui import boxed_ids
from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.derived import duplicates
from embeddings.derived.maps import load_map, make_maps
from embeddings.index.opening import open_index
from tests.harness.apptest import grids, make_app, messages, tile_ids, url
from tests.harness.products import EXACT, make_product_folder, plant

MODELS = ["pixels", "efficientnet-lite0"]


@pytest.fixture(scope="module")
def planted_data(tmp_path_factory) -> Path:
    """A data folder with the planted catalogue `planted`: both models, no maps, no pairs."""
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("app-maps")
    products = plant(make_product_folder(root / "products"))
    catalogue = create_catalogue(str(products), root / "pristine" / "planted")
    for model_id in MODELS:
        build_model_index(catalogue, load_model(model_id))
    return catalogue.directory


@pytest.fixture
def data(planted_data, copy_catalogue, tmp_path) -> Path:
    """A fresh copy of the planted catalogue in its own data folder (pages may write to it)."""
    copy_catalogue(planted_data, tmp_path / "data" / "planted")
    return tmp_path / "data"


@pytest.fixture
def mapped(data) -> Path:
    """`data` with both models' maps and the `pixels` pairs saved."""
    outcomes = make_maps(data / "planted", MODELS)
    assert [o.status for o in outcomes] == ["computed", "computed"]
    duplicates.find_duplicates(data / "planted", "pixels")
    return data


def maps_args(at) -> dict:
    """The arguments the Map page gave its maps component (bytes arguments as bytes)."""
    (element,) = [e for e in at.main if getattr(e, "type", "") == "component_instance"]
    args = json.loads(element.proto.json_args)
    for special in element.proto.special_args:
        args[special.key] = special.bytes
    return args


def thumbnail_answer(at) -> dict:
    """What the thumbnail fragment last sent to the browser: {channel, thumbs, seq}."""
    (element,) = [
        e for e in at.get("bidi_component") if e.proto.component_name.endswith("map_thumbs")
    ]
    return json.loads(element.proto.json)


def open_map(data: Path, monkeypatch, **params):
    at = make_app(data, monkeypatch, catalog="planted", models=",".join(MODELS), **params).run()
    at.switch_page("app_pages/map.py").run()
    assert not at.exception, at.exception
    return at


def test_the_map_page_sends_every_product_of_every_model_once(mapped, monkeypatch):
    at = open_map(mapped, monkeypatch)
    args = maps_args(at)
    points = map_payload.decode(args)
    catalogue = Catalogue.open(mapped / "planted")
    assert [m["model"] for m in args["maps"]] == MODELS
    assert sorted(points["ids"]) == sorted(catalogue.ids)  # 53 products: every one drawn
    for model_id in MODELS:
        saved = load_map(catalogue, model_id)
        rows = [saved.row_of[i] for i in points["ids"]]
        extent = np.ptp(saved.coords, axis=0)
        error = np.abs(points["coords"][model_id] - saved.coords[rows])
        assert (error <= extent / map_payload.STEPS).all()  # within one quantisation step
    # What a hover shows comes with the points: titles and every label field.
    items = catalogue.items.loc[points["ids"]]
    assert points["titles"] == [t or "" for t in items["title"]]
    assert points["labels"]["folder"] == items["folder"].tolist()
    assert set(points["colours"]) == {"blue", "green", "red", "yellow", "copies"}
    assert args["colour_field"] == "folder" and args["marked"] == []
    # No thumbnail is sent with the points: they are asked for on hover.
    assert not any(isinstance(v, str) and v.startswith("data:image/") for v in args.values())
    assert thumbnail_answer(at)["thumbs"] == {}
    assert args["channel"] == thumbnail_answer(at)["channel"]
    captions = messages(at.caption)
    assert (
        "all 53 products" in captions and "Keeps" in captions and "nearest neighbours" in captions
    )
    assert "Drawing 53 of 53 mapped products" in captions
    assert url(at) == {"catalog": "planted", "models": ",".join(MODELS), "label": "folder"}


def test_a_map_missing_a_product_marks_it_absent_and_keeps_it_on_the_others():
    coords = np.array([[0.0, 1.0], [np.nan, np.nan], [2.0, 5.0]])
    args = map_payload.encode(
        ids=["a", "b", "c"],
        titles=["A", "Bé", ""],
        labels={"colour": ["red", "", "red"]},
        colour_codes=np.array([0, 1, 0]),
        legend=[{"value": "red", "colour": "#f00"}, {"value": "—", "colour": "#ccc"}],
        colour_field="colour",
        maps={"one": coords, "two": coords[::-1].copy()},
    )
    points = map_payload.decode(args)
    np.testing.assert_allclose(points["coords"]["one"], coords, atol=1e-9)
    assert np.isnan(points["coords"]["two"][1]).all() and points["titles"] == ["A", "Bé", ""]
    assert points["labels"]["colour"] == ["red", "", "red"]
    assert len(args["coords"]) == 2 * 3 * 2 * 2  # two maps, three products, uint16 x and y


def test_thumbnails_are_answered_on_demand_by_a_fragment(mapped, monkeypatch):
    at = open_map(mapped, monkeypatch)
    channel = thumbnail_answer(at)["channel"]
    at.session_state["map_thumbs_pending"] = ["red/circle_0", "blue/square_1", "../secrets"]
    at.run()
    answer = thumbnail_answer(at)
    assert answer["channel"] == channel and answer["seq"] == 1
    assert sorted(answer["thumbs"]) == ["blue/square_1", "red/circle_0"]  # unknown ids: none
    assert all(uri.startswith("data:image/") for uri in answer["thumbs"].values())
    assert at.session_state["map_thumbs_pending"] == []


def test_the_search_query_is_marked_on_every_map(mapped, monkeypatch):
    at = make_app(mapped, monkeypatch, catalog="planted", item="blue/square_1").run()
    at.switch_page("app_pages/map.py").run()
    assert maps_args(at)["marked"] == ["blue/square_1"]
    assert "Red ring: product blue/square_1" in messages(at.caption)


@pytest.mark.slow
def test_colour_field_and_label_filter(mapped, monkeypatch):
    at = open_map(mapped, monkeypatch, label="shape", filter="folder:red")
    points = map_payload.decode(maps_args(at))
    assert set(points["labels"]["folder"]) == {"red"} and len(points["ids"]) == 12
    assert set(points["colours"]) == {"circle", "square", "triangle"}
    assert maps_args(at)["colour_field"] == "shape"


@pytest.mark.slow
def test_without_maps_the_page_computes_them_with_a_progress_bar(data, monkeypatch):
    at = open_map(data, monkeypatch)
    assert "has no map yet" in messages(at.info)
    assert not [e for e in at.main if getattr(e, "type", "") == "component_instance"]
    at.button(key="map_compute").click().run()
    assert not at.exception, at.exception
    assert (data / "planted" / "maps" / "pixels" / "coords.npy").is_file()
    args = maps_args(at)
    assert len(args["maps"]) == 2 and args["count"] == 53


@pytest.mark.slow
def test_a_map_made_stale_by_a_rebuild_is_not_drawn(mapped, monkeypatch):
    build_catalogue(
        BuildRequest(
            out=mapped / "planted",
            models=["pixels"],
            bridges=False,
            index=IndexOptions(force=True),
        )
    )
    at = open_map(mapped, monkeypatch)
    assert "out of date" in messages(at.warning)
    assert [m["model"] for m in maps_args(at)["maps"]] == ["efficientnet-lite0"]


def test_read_only_deployments_say_how_to_compute_maps(data, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_READ_ONLY", "1")
    at = open_map(data, monkeypatch)
    assert not at.button and "python -m embeddings map --catalog" in messages(at.caption)


def test_a_dragged_box_lists_the_products_inside(mapped, monkeypatch):
    frame = pd.DataFrame({"id": list("abcd"), "x0": [0.0, 1.0, 2.0, 3.0], "y0": [0, 1, 2, 3.0]})
    assert boxed_ids(frame, {"x0": [0.5, 2.5], "y0": [2.5, 0.5]}) == ["b", "c"]
    at = open_map(mapped, monkeypatch)
    saved = load_map(Catalogue.open(mapped / "planted"), "efficientnet-lite0")
    low, high = np.percentile(saved.coords, [0, 50], axis=0)
    inside = {
        i for i, (x, y) in zip(saved.ids, saved.coords, strict=True)
        if low[0] <= x <= high[0] and low[1] <= y <= high[1]
    }  # fmt: skip
    at.session_state["map_box"] = {"box1": {"x1": [low[0], high[0]], "y1": [low[1], high[1]]}}
    at.run()
    assert f"{len(inside)} products in the box drawn on efficientnet-lite0" in messages(at.markdown)
    (grid,) = [g for g in (json.loads(e.proto.json) for e in at.get("bidi_component"))
               if g.get("model") == "map-box"]  # fmt: skip
    assert set(tile_ids(grid)) == inside


# -- Duplicates page ---------------------------------------------------------------------------
def group_grids(at, model_id: str) -> list[list[str]]:
    """The ids shown in each group's row of thumbnails for `model_id`, in page order."""
    rows = [json.loads(e.proto.json) for e in at.get("bidi_component")]
    return [tile_ids(row) for row in rows if row["model"] == f"dup-{model_id}"]


def open_duplicates(data: Path, monkeypatch):
    at = make_app(data, monkeypatch, catalog="planted", models=",".join(MODELS)).run()
    at.switch_page("app_pages/duplicates.py").run()
    assert not at.exception, at.exception
    return at


def test_the_duplicates_page_shows_groups_at_each_models_threshold(mapped, monkeypatch):
    at = open_duplicates(mapped, monkeypatch)
    saved = duplicates.load_pairs(Catalogue.open(mapped / "planted"), "pixels")
    slider = at.slider(key="dup_threshold_pixels")
    assert slider.value == pytest.approx(saved.manifest["default_threshold"])
    assert slider.min == pytest.approx(saved.floor)
    groups = saved.groups(slider.value)
    assert [set(ids) for ids in group_grids(at, "pixels")] == [set(g.ids) for g in groups]
    assert {frozenset(g) for g in EXACT} <= {frozenset(g.ids) for g in groups}
    text = messages(at.markdown)
    count = duplicates.products_in_groups(groups)
    assert f"{count} products" in text and f"{len(groups)} groups" in text
    # Sliding to 1.0 keeps the identical images only.
    at.slider(key="dup_threshold_pixels").set_value(1.0).run()
    text = messages(at.markdown)
    assert "5 products" in text and "2 groups" in text
    assert sorted(map(sorted, group_grids(at, "pixels"))) == sorted(map(sorted, EXACT))
    # efficientnet-lite0 has no saved pairs yet: a button searches them, with a progress bar.
    assert "No near-duplicate search has been run with efficientnet-lite0" in messages(at.info)
    at.button(key="dup_find_efficientnet-lite0").click().run()
    assert not at.exception
    assert at.slider(key="dup_threshold_efficientnet-lite0").value > 0.9


# -- Search: hide near-duplicates ---------------------------------------------------------------
@pytest.mark.slow
def test_hide_near_duplicates_folds_copies_and_keeps_k_products(mapped, monkeypatch):
    params = {"catalog": "planted", "models": "pixels", "k": "5", "item": "red/circle_0"}
    plain = make_app(mapped, monkeypatch, **params).run()
    plain_ids = tile_ids(grids(plain)["pixels"])
    copies = {"copies/same_red_circle", "copies/same_red_circle_again"}  # both score 1.0
    assert set(plain_ids[:2]) == copies
    at = make_app(mapped, monkeypatch, **params, dedup="1").run()
    assert not at.exception, at.exception
    assert at.toggle(key="w_dedup").value is True
    grid = grids(at)["pixels"]
    ids = tile_ids(grid)
    assert len(ids) == 5 and ids[0] in copies and not (copies - {ids[0]}) & set(ids)
    assert grid["tiles"][0]["similar"] == 1
    threshold = duplicates.load_pairs(Catalogue.open(mapped / "planted"), "pixels").manifest[
        "default_threshold"
    ]
    index = open_index(Catalogue.open(mapped / "planted"), "pixels")
    vectors = index.reconstruct_batch([index.row_of[i] for i in ids])
    within = vectors @ vectors.T
    assert (within[~np.eye(5, dtype=bool)] < threshold).all()  # five different products
    assert url(at)["dedup"] == "1"
    at.toggle(key="w_dedup").set_value(False).run()
    assert tile_ids(grids(at)["pixels"]) == plain_ids and "dedup" not in url(at)

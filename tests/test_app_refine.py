"""The Search page's refinements through `AppTest`: liked/disliked products, words
mixed into a product, fused models; the URLs that carry them, and bad values in those URLs.

A tile's "more like this" button is a browser component (tests/test_browser.py presses it);
here it is what it leads to: the `like` URL parameter, or the session callback it calls.
"""

from __future__ import annotations

import pytest

from app_support import refine_ui, urlstate
from embeddings.search.query import DEFAULT_TEXT_WEIGHT, Query
from embeddings.search.searcher import make_searcher
from tests.harness.apptest import grids, make_app, messages, tile_ids, url

FUSED = "efficientnet-lite0+pixels"


@pytest.fixture
def shop_data(bridged_catalogue):
    """The data folder of the synthetic shop with text bridges for both models (read-only)."""
    return bridged_catalogue.directory.parent


def test_a_link_with_likes_dislikes_and_a_mix_reproduces_the_steered_view(
    shop_data, bridged_catalogue, monkeypatch
):
    liked, disliked = ["blue/circle_0", "blue/circle_1"], ["red/square_0"]
    params = {
        "models": f"pixels,{FUSED}",
        "item": "red/circle_0",
        "text": "blue",
        "mix": "0.6",
        "like": ",".join(liked),
        "dislike": disliked[0],
    }
    at = make_app(shop_data, monkeypatch, **params).run()
    assert not at.exception, at.exception
    query = Query(
        item="red/circle_0",
        text="blue",
        text_weight=0.6,
        liked=tuple(liked),
        disliked=tuple(disliked),
    )
    searcher = make_searcher(bridged_catalogue)
    shown = grids(at)
    for model_id in ("pixels", FUSED):
        want = searcher.search(query, [model_id], 10)[model_id]
        assert tile_ids(shown[model_id]) == [hit.id for hit in want], model_id
        assert shown[model_id]["steer"] is True  # the grid draws more/less buttons
        assert not set(tile_ids(shown[model_id])) & {"red/circle_0", *liked, *disliked}
    assert "fused ranking" in messages(at.caption)
    assert {k: url(at)[k] for k in params} == params  # written back as it came
    cards = messages(at.get("html"))
    assert 'data-testid="steer-liked" data-id="blue/circle_0"' in cards
    assert 'data-testid="steer-disliked" data-id="red/square_0"' in cards
    assert at.text_input(key="w_words").value == "blue"
    assert at.slider(key="w_weight").value == pytest.approx(0.6)


def test_removing_a_liked_product_reruns_and_updates_the_link(shop_data, monkeypatch):
    at = make_app(
        shop_data,
        monkeypatch,
        models="pixels",
        item="red/circle_0",
        like="blue/circle_0,blue/circle_1",
    ).run()
    at.button(key="unsteer_liked_blue/circle_0").click().run()
    assert not at.exception
    assert at.session_state["query"].liked == ("blue/circle_1",)
    assert url(at)["like"] == "blue/circle_1"
    at.button(key="steer_clear").click().run()
    assert "like" not in url(at) and grids(at)["pixels"]["query"] == "red/circle_0"


def _toggle_script():
    """A tiny app: applies queued tile actions with the callback the tile buttons call."""
    import streamlit as st

    from app_support import refine_ui
    from embeddings.search.query import Query

    st.session_state.setdefault("query", Query(item="q"))
    for item_id, side in st.session_state.pop("actions", []):
        refine_ui.tile_steered(item_id, side)


def test_more_and_less_like_this_toggle(monkeypatch):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_toggle_script).run()
    steps = [
        ([("a", "liked"), ("b", "liked")], ("a", "b"), ()),
        ([("a", "disliked")], ("b",), ("a",)),  # a product is on one side at most
        ([("b", "liked")], (), ("a",)),  # pressing "more" again takes the like back
        ([("a", "disliked")], (), ()),
    ]
    for actions, liked, disliked in steps:
        at.session_state["actions"] = actions
        at.run()
        query = at.session_state["query"]
        assert (query.liked, query.disliked) == (liked, disliked), actions
    marked = Query(item="q", liked=("x",), disliked=("y",))
    assert refine_ui.steer_marks(marked) == {"x": "liked", "y": "disliked"}
    assert refine_ui.query_label(marked) == "q +[x] -[y]"


def test_words_box_and_share_slider_mix_words_into_the_product(
    shop_data, bridged_catalogue, monkeypatch
):
    at = make_app(shop_data, monkeypatch, models="efficientnet-lite0", item="red/circle_0").run()
    at.text_input(key="w_words").set_value("blue")
    at.button(key="FormSubmitter:words_mix-Mix in").click().run()
    assert not at.exception
    assert (url(at)["text"], url(at)["mix"]) == ("blue", f"{DEFAULT_TEXT_WEIGHT:g}")
    searcher = make_searcher(bridged_catalogue)
    want = searcher.search(Query(item="red/circle_0", text="blue"), ["efficientnet-lite0"], 10)[
        "efficientnet-lite0"
    ]
    assert tile_ids(grids(at)["efficientnet-lite0"]) == [h.id for h in want]
    folders = [
        bridged_catalogue.items.at[i, "folder"] for i in tile_ids(grids(at)["efficientnet-lite0"])
    ]
    assert folders.count("blue") >= 4
    at.slider(key="w_weight").set_value(0.9).run()
    assert url(at)["mix"] == "0.9"
    assert "at 90%" in messages(at.caption)
    at.text_input(key="w_words").set_value("")
    at.button(key="FormSubmitter:words_mix-Mix in").click().run()
    assert "text" not in url(at) and "mix" not in url(at)


def test_fused_models_are_offered_and_answer_text(shop_data, bridged_catalogue, monkeypatch):
    at = make_app(shop_data, monkeypatch).run()
    picker = at.sidebar.multiselect(key="w_models")
    assert f"{FUSED} · text" in picker.options
    at = make_app(shop_data, monkeypatch, models=FUSED, text="Green square product").run()
    assert not at.exception
    want = make_searcher(bridged_catalogue).search_text("Green square product", [FUSED], 10)
    assert tile_ids(grids(at)[FUSED]) == [h.id for h in want[FUSED]]
    assert "text via a text bridge" in messages(at.caption)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"item": "red/circle_0", "like": "no/such,blue/circle_0"}, "like= names no/such"),
        ({"item": "red/circle_0", "dislike": "gone"}, "dislike= names gone"),
        ({"item": "red/circle_0", "like": "red/circle_0"}, "is the query itself, and also in"),
        ({"item": "red/circle_0", "dislike": "red/circle_0"}, "changes nothing"),
        ({"item": "red/circle_0", "like": "a/b", "dislike": "a/b"}, "both likes and dislikes"),
        ({"item": "red/circle_0", "text": "blue", "mix": "lots"}, "mix='lots' in the link"),
        ({"item": "red/circle_0", "text": "blue", "mix": "3"}, "from 0 to 1"),
        ({"like": "blue/circle_0"}, "need a product or a text query"),
        ({"models": "pixels+nope"}, "unknown model 'nope' in fused model 'pixels+nope'"),
        ({"models": "clip+pixels"}, "the fused model clip+pixels, but clip has no index"),
        ({"models": "pixels+pixels"}, "names a model twice"),
    ],
)
def test_bad_refinements_in_a_link_are_explained(shop_data, monkeypatch, params, expected):
    at = make_app(shop_data, monkeypatch, **params).run()
    assert not at.exception
    assert expected in messages(at.warning) + messages(at.error)
    assert "browse" in grids(at)


def test_a_bad_liked_id_is_left_out_and_the_rest_still_steers(shop_data, monkeypatch):
    at = make_app(
        shop_data, monkeypatch, models="pixels", item="red/circle_0", like="no/such,blue/circle_0"
    ).run()
    assert at.session_state["query"].liked == ("blue/circle_0",)
    assert url(at)["like"] == "blue/circle_0"
    assert "blue/circle_0" not in tile_ids(grids(at)["pixels"])


def test_ids_with_commas_survive_the_url():
    ids = ["a,b", "50%", "plain/id"]
    assert urlstate.decode_ids(urlstate.encode_ids(ids)) == ids
    params = urlstate.encode_view(catalog="c", item="1", text="in red", mix=0.3, like=ids)
    view, problems = urlstate.parse_params(params)
    assert (view.item, view.text, view.mix, view.like, problems) == ("1", "in red", 0.3, ids, [])

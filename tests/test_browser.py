"""End to end in a real browser: `streamlit run app.py` driven by headless Chromium (Playwright).

The catalogue is built here: a stratified sample of the shared fashion dataset when it is present
(else the synthetic shop), with `pixels` and `efficientnet-lite0`. Text queries go to
`efficientnet-lite0` through its text bridge (or, when the bridge module is absent, to a tiny
CLIP). The Search-page screenshot of this run is saved as docs/search-page.png.

Needs Debian's chromium (`apt-get install chromium`); elsewhere the tests skip, in CI
(`CI=true`) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
from urllib.parse import parse_qs, urlparse

import pytest

from app_support import browser
from tests.harness.chromium import require_browser as _require_browser
from tests.harness.paths import REPO, SHARED_FASHION
from tests.harness.products import make_product_folder

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = REPO / "docs" / "search-page.png"
SAMPLE = 400  # products from the shared dataset: enough for neighbours worth looking at


@pytest.fixture(scope="module")
def app_catalogue(tmp_path_factory):
    """(data folder, catalogue, text model, extra server env): built once for this module."""
    _require_browser()
    from embeddings.building.model import build_model_index
    from embeddings.catalogue import create_catalogue
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("browser")
    data = root / "data"
    if (SHARED_FASHION / "styles.csv").is_file():
        catalogue = create_catalogue(str(SHARED_FASHION), data / "fashion", limit=SAMPLE, seed=1)
    else:
        catalogue = create_catalogue(str(make_product_folder(root / "products")), data / "shop")
    for model_id in ("pixels", "efficientnet-lite0"):
        build_model_index(catalogue, load_model(model_id))
    env = {}
    try:
        from embeddings.bridge import train_bridge_for_catalogue
    except ImportError:
        train_bridge_for_catalogue = None
    if train_bridge_for_catalogue is not None:
        train_bridge_for_catalogue(catalogue, "efficientnet-lite0")
        text_model = "efficientnet-lite0"
    else:  # no bridge module yet: a tiny CLIP answers text
        from tests.harness.tiny_models import make_tiny_clip

        clip_dir = make_tiny_clip(root / "tiny-clip")
        env["EMBEDDINGS_CLIP_MODEL"] = str(clip_dir)
        previous = os.environ.get("EMBEDDINGS_CLIP_MODEL")
        os.environ["EMBEDDINGS_CLIP_MODEL"] = str(clip_dir)
        try:
            build_model_index(catalogue, load_model("clip"))
        finally:
            if previous is None:
                os.environ.pop("EMBEDDINGS_CLIP_MODEL")
            else:
                os.environ["EMBEDDINGS_CLIP_MODEL"] = previous
        text_model = "clip"
    return data, catalogue, text_model, env


@pytest.fixture(scope="module")
def server(app_catalogue, app_server):
    data, _, _, env = app_catalogue
    return app_server(data, env=env)


MODELS = ["pixels", "efficientnet-lite0"]


def open_app(page, server, catalogue, **params) -> None:
    query = "&".join(
        f"{k}={v}"
        for k, v in {"catalog": catalogue.name, "models": ",".join(MODELS), **params}.items()
    )
    page.goto(f"{server.url}/?{query}")
    page.wait_for_selector(
        browser.grid_selector("browse") + " a.tile", state="attached", timeout=90_000
    )


def url_params(page, must_have: str) -> dict[str, list[str]]:
    """The page URL's query, once it holds `must_have` (the address bar is written by the app)."""
    page.wait_for_function(
        "name => new URLSearchParams(location.search).has(name)", arg=must_have, timeout=30_000
    )
    return parse_qs(urlparse(page.url).query)


def assert_ranked(grids: dict, k: int) -> None:
    for model, grid in grids.items():
        scores = [score for _, score in grid["tiles"]]
        assert len(scores) == k, model
        assert all(-1.0001 <= s <= 1.0001 for s in scores), (model, scores)
        assert scores == sorted(scores, reverse=True), (model, scores)


def test_random_product_shows_scored_grids_for_two_models(page, server, app_catalogue):
    _, catalogue, _, _ = app_catalogue
    open_app(page, server, catalogue, k=10)
    page.get_by_role("button", name="Random product").click()
    grids = browser.wait_for_results(page, MODELS, not_query="")
    assert_ranked(grids, 10)
    query = grids["pixels"]["query"]
    assert query in catalogue and grids["efficientnet-lite0"]["query"] == query
    assert all(tile_id != query for grid in grids.values() for tile_id, _ in grid["tiles"])
    assert page.get_by_text(f"product {query}", exact=False).first.is_visible()
    assert url_params(page, "item")["item"] == [query]


def test_text_query(page, server, app_catalogue):
    _, catalogue, text_model, _ = app_catalogue
    open_app(
        page,
        server,
        catalogue,
        models=f"pixels,{text_model}"
        if text_model != "efficientnet-lite0"
        else "pixels,efficientnet-lite0",
    )
    text = "red shirt" if catalogue.name == "fashion" else "Red circle product"
    box = page.get_by_label("Describe a product")
    box.fill(text)
    box.press("Enter")
    grids = browser.wait_for_results(page, [text_model], query=text)
    assert len(grids[text_model]["tiles"]) == 10
    assert page.get_by_text("Not shown: pixels").is_visible()  # pixels has no text path here
    assert url_params(page, "text")["text"] == [text]


def test_upload_searches_by_the_image(page, server, app_catalogue, tmp_path):
    _, catalogue, _, _ = app_catalogue
    open_app(page, server, catalogue)
    product = catalogue.ids[17]
    upload = tmp_path / ("upload" + catalogue.image_path(product).suffix)
    shutil.copyfile(catalogue.image_path(product), upload)
    page.locator("input[type=file]").set_input_files(str(upload))
    grids = browser.wait_for_results(page, MODELS, query=upload.name)
    for model in MODELS:
        top_id, top_score = grids[model]["tiles"][0]
        assert top_id == product and top_score > 0.99, (model, grids[model]["tiles"][:3])  # itself
    assert page.get_by_text("cannot carry them", exact=False).is_visible()
    assert "item" not in parse_qs(urlparse(page.url).query)


def test_a_file_that_is_not_an_image_is_refused_and_the_app_stays_up(
    page, server, app_catalogue, tmp_path
):
    _, catalogue, _, _ = app_catalogue
    item = catalogue.ids[3]
    open_app(page, server, catalogue, item=item)
    before = browser.wait_for_results(page, MODELS, query=item)
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a photo")
    page.locator("input[type=file]").set_input_files(str(fake))
    page.get_by_text("not an image Pillow can read", exact=False).wait_for(timeout=30_000)
    assert browser.wait_for_results(page, MODELS, query=item) == before


def test_clicking_a_result_tile_searches_by_that_product(page, server, app_catalogue):
    _, catalogue, _, _ = app_catalogue
    first = catalogue.ids[0]
    open_app(page, server, catalogue, item=first)
    grids = browser.wait_for_results(page, MODELS, query=first)
    target = grids["efficientnet-lite0"]["tiles"][2][0]
    page.locator(
        f"{browser.grid_selector('efficientnet-lite0')} a.tile[data-id='{target}']"
    ).click()
    after = browser.wait_for_results(page, MODELS, query=target)
    assert all(tile_id != target for grid in after.values() for tile_id, _ in grid["tiles"])
    assert url_params(page, "item")["item"] == [target]
    # The browse strip's tiles are clickable too.
    browse_target = (
        page.locator(f"{browser.grid_selector('browse')} a.tile").nth(1).get_attribute("data-id")
    )
    page.get_by_text("Browse the catalogue").click()
    page.locator(f"{browser.grid_selector('browse')} a.tile[data-id='{browse_target}']").click()
    browser.wait_for_results(page, MODELS, query=browse_target)


def test_the_share_url_reproduces_the_results(page, server, app_catalogue, chromium):
    _, catalogue, _, _ = app_catalogue
    open_app(page, server, catalogue, k=7)
    page.get_by_role("button", name="Random product").click()
    grids = browser.wait_for_results(page, MODELS, not_query="")
    query = grids["pixels"]["query"]
    url_params(page, "item")
    shared_url = page.url
    assert f"item={query.replace('/', '%2F')}" in shared_url and "k=7" in shared_url
    other = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        fresh = other.new_page()
        fresh.goto(shared_url)
        assert browser.wait_for_results(fresh, MODELS, query=query) == grids
    finally:
        other.close()


def test_search_page_screenshot(page, server, app_catalogue):
    """docs/search-page.png: the Search page with two models side by side."""
    _, catalogue, _, _ = app_catalogue
    items = catalogue.items
    if "articleType" in items:  # a recognisable product from the real catalogue
        pick = items[(items["articleType"] == "Tshirts") & (items["baseColour"] == "Red")]
        item = pick.index[0] if len(pick) else catalogue.ids[0]
    else:
        item = "red/circle_0"
    open_app(page, server, catalogue, item=item, k=8)
    browser.wait_for_results(page, MODELS, query=item)
    page.reload()  # the shot shows a steady-state query time, not the first one of the session
    open_app(page, server, catalogue, item=item, k=8)
    browser.wait_for_results(page, MODELS, query=item)
    page.mouse.move(5, 995)
    page.wait_for_timeout(800)  # images decode, hover effects settle
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 50_000


def steer_button(model: str, item_id: str, kind: str) -> str:
    """The "+ More" (`kind` "more") or "− Less" ("less") button under a result tile."""
    return f"{browser.grid_selector(model)} a.tile[data-id='{item_id}'] + .steer button.{kind}"


def test_more_and_less_like_this_steer_every_model(page, server, app_catalogue):
    """The tile buttons steer the query; liked/disliked products are listed, kept in
    the URL, and removable one by one."""
    _, catalogue, _, _ = app_catalogue
    first = catalogue.ids[0]
    open_app(page, server, catalogue, item=first)
    grids = browser.wait_for_results(page, MODELS, query=first)
    liked = grids["pixels"]["tiles"][3][0]
    page.locator(steer_button("pixels", liked, "more")).click()
    after = browser.wait_for_results(page, MODELS, query=f"{first} +[{liked}]")
    assert all(liked not in dict(grid["tiles"]) for grid in after.values())
    assert after != grids
    assert url_params(page, "like")["like"] == [liked]
    page.locator(f"[data-testid='steer-liked'][data-id='{liked}']").wait_for(timeout=30_000)
    disliked = after["efficientnet-lite0"]["tiles"][0][0]
    page.locator(steer_button("efficientnet-lite0", disliked, "less")).click()
    browser.wait_for_results(page, MODELS, query=f"{first} +[{liked}] -[{disliked}]")
    assert url_params(page, "dislike")["dislike"] == [disliked]
    key = re.sub(r"[^a-zA-Z0-9_-]", "-", f"unsteer_liked_{liked}")  # Streamlit's key class
    # (Streamlit draws a button twice, the second a hidden copy: click the first.)
    page.locator(f".st-key-{key} button").first.click()  # the liked product goes
    browser.wait_for_results(page, MODELS, query=f"{first} -[{disliked}]")
    assert "like" not in parse_qs(urlparse(page.url).query)


def test_words_mixed_into_a_product(page, server, app_catalogue):
    from embeddings.search.query import DEFAULT_TEXT_WEIGHT

    _, catalogue, text_model, _ = app_catalogue
    item = catalogue.ids[5]
    open_app(page, server, catalogue, item=item)
    browser.wait_for_results(page, MODELS, query=item)
    words = "red" if catalogue.name == "fashion" else "Blue"
    box = page.get_by_role("textbox", name="Add words to this query")
    box.fill(words)
    box.press("Enter")
    # The first words of the server load the text encoder: allow for it on a busy machine.
    grids = browser.wait_for_results(
        page, [text_model], query=f"{item} & {words} @{DEFAULT_TEXT_WEIGHT:g}", timeout=240
    )
    assert len(grids[text_model]["tiles"]) == 10
    params = url_params(page, "text")
    assert params["text"] == [words] and params["item"] == [item]
    assert params["mix"] == [f"{DEFAULT_TEXT_WEIGHT:g}"]

"""The Map and Duplicates pages in a real browser: `streamlit run app.py` and headless Chromium.

The catalogue is the synthetic shop with planted copies (tests/harness/products.py), with
`pixels` and `efficientnet-lite0`, their maps and the `pixels` near-duplicate pairs. Under 2,000
points Vega draws the maps as SVG, so each product is an element the test can point at.

Needs Debian's chromium; skips without it, fails in CI (`CI=true`).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from app_support import browser
from tests.harness.chromium import require_browser as _require_browser
from tests.harness.products import EXACT, make_product_folder, plant

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODELS = ["pixels", "efficientnet-lite0"]
#: Vega draws each map in a `g.concat_<i>_group`, and each layer's marks in a `g.mark-symbol`:
#: the points first, then the hover ring and the query's diamond.
LAYERS = ".vega-embed svg g.concat_{view}_group g.mark-symbol.role-mark"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    _require_browser()
    from embeddings.building.model import build_model_index
    from embeddings.catalogue import create_catalogue
    from embeddings.derived.duplicates import find_duplicates
    from embeddings.derived.maps import make_maps
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("browser-maps")
    products = plant(make_product_folder(root / "products"))
    catalogue = create_catalogue(str(products), root / "data" / "planted")
    for model_id in MODELS:
        build_model_index(catalogue, load_model(model_id))
    assert all(o.status == "computed" for o in make_maps(catalogue.directory, MODELS))
    find_duplicates(catalogue.directory, "pixels")
    return root / "data"


@pytest.fixture(scope="module")
def server(data, app_server):
    return app_server(data)


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1440, "height": 1100})
    tab = context.new_page()
    yield tab
    context.close()


def open_map(page, server, **params) -> None:
    query = "&".join(
        f"{k}={v}" for k, v in {"catalog": "planted", "models": ",".join(MODELS), **params}.items()
    )
    page.goto(f"{server.url}/map?{query}")
    layer(page, 1, 0).locator("path").first.wait_for(state="attached", timeout=90_000)


def layer(page, view: int, number: int):
    """The `number`-th layer of marks (0: points, 1: hover ring) of the `view`-th map."""
    return page.locator(LAYERS.format(view=view)).nth(number)


def test_hover_shows_the_thumbnail_and_rings_the_product_on_every_map(page, server):
    open_map(page, server)
    points = layer(page, 0, 0).locator("path")
    assert points.count() == 53
    points.nth(7).hover(force=True)
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible", timeout=10_000)
    assert tooltip.locator("h2").inner_text().strip()  # the product's title
    source = tooltip.locator("img").get_attribute("src")
    assert source.startswith("data:image/")  # its thumbnail
    # The hovered product is ringed on both maps (the ring layers are empty otherwise).
    for view in (0, 1):
        layer(page, view, 1).locator("path").first.wait_for(state="attached", timeout=10_000)
        assert layer(page, view, 1).locator("path").count() == 1


def test_clicking_a_point_opens_the_product_on_search(page, server):
    open_map(page, server)
    layer(page, 1, 0).locator("path").nth(11).click(force=True)
    page.wait_for_function("() => location.pathname === '/'", timeout=60_000)
    page.wait_for_function("() => new URLSearchParams(location.search).has('item')", timeout=60_000)
    item = parse_qs(urlparse(page.url).query)["item"][0]
    grids = browser.wait_for_results(page, MODELS, query=item)
    assert all(len(grid["tiles"]) == 10 for grid in grids.values())


def test_dragging_a_box_lists_the_products_inside(page, server):
    open_map(page, server)
    area = page.locator(".vega-embed svg g.concat_0_group").first.bounding_box()
    page.mouse.move(area["x"] + 60, area["y"] + 80)  # inside the plot, below its title
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.5, area["y"] + area["height"] * 0.9, steps=8)
    page.mouse.up()
    page.get_by_text("in the box drawn on pixels", exact=False).wait_for(timeout=60_000)
    tiles = page.locator(browser.grid_selector("map-box") + " a.tile")
    tiles.first.wait_for(timeout=30_000)
    target = tiles.first.get_attribute("data-id")
    tiles.first.click()
    browser.wait_for_results(page, MODELS, query=target)


def test_duplicates_page_and_hide_near_duplicates_on_search(page, server):
    page.goto(f"{server.url}/duplicates?catalog=planted&models=pixels")
    first_group = page.locator(browser.grid_selector("dup-pixels")).first
    first_group.locator("a.tile").first.wait_for(timeout=90_000)
    ids = {
        first_group.locator("a.tile").nth(i).get_attribute("data-id")
        for i in range(first_group.locator("a.tile").count())
    }
    assert ids == max(EXACT, key=len)  # the largest group: the red circle and its two copies
    assert page.get_by_text("products", exact=False).first.is_visible()
    page.goto(f"{server.url}/?catalog=planted&models=pixels&k=5&item=red/circle_0&dedup=1")
    grids = browser.wait_for_results(page, ["pixels"], query="red/circle_0")
    assert len(grids["pixels"]["tiles"]) == 5
    badge = page.locator(browser.grid_selector("pixels") + " a.tile[data-similar='1']")
    assert badge.count() == 1 and "+1 similar" in badge.inner_text()

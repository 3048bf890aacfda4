"""The Map and Duplicates pages in a real browser: `streamlit run app.py` and headless Chromium.

The catalogue is the synthetic shop with planted copies (tests/harness/products.py), with
`pixels` and `efficientnet-lite0`, their maps and the `pixels` near-duplicate pairs. The maps are
drawn by deck.gl with WebGL 2 (SwiftShader: no GPU here); `app_support.map_browser` finds where a
product is drawn and reads the canvas's pixels.

Needs Debian's chromium; skips without it, fails in CI (`CI=true`).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest

from app_support import browser
from app_support import map_browser as maps
from tests.harness.chromium import require_browser as _require_browser
from tests.harness.products import EXACT, make_product_folder, plant

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODELS = ["pixels", "efficientnet-lite0"]


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
def catalogue(data):
    from embeddings.catalogue import Catalogue

    return Catalogue.open(data / "planted")


@pytest.fixture(scope="module")
def server(data, app_server):
    return app_server(data)


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1440, "height": 1100})
    tab = context.new_page()
    yield tab
    context.close()


def open_map(page, server, **params):
    query = "&".join(
        f"{k}={v}" for k, v in {"catalog": "planted", "models": ",".join(MODELS), **params}.items()
    )
    page.goto(f"{server.url}/map?{query}")
    frame = maps.maps_frame(page)
    assert maps.state(frame)["drawn"] == 53  # every product of the catalogue
    return frame


def test_hover_shows_title_labels_thumbnail_and_rings_the_product_on_every_map(
    page, server, catalogue
):
    frame = open_map(page, server)
    target = maps.loneliest(frame, 0)
    assert maps.rings(frame, "hover") == {}
    page.mouse.move(*maps.screen_position(page, frame, 0, target))
    frame.wait_for_function(
        "id => document.getElementById('root').dataset.hovered === id", arg=target
    )
    shown = maps.state(frame)
    item = catalogue.item(target)
    assert shown["tooltip_id"] == target
    assert (item["title"] or target) in shown["tooltip"]
    assert f"folder: {item['folder']}" in shown["tooltip"]
    # Its thumbnail follows, fetched on demand (none was sent with the points).
    frame.wait_for_function(
        "id => document.getElementById('tooltip').dataset.thumbnail === id",
        arg=target,
        timeout=30_000,
    )
    assert maps.state(frame)["thumbnail"].startswith("data:image/")
    # The hovered product is ringed on both maps, the ring centred on where it is drawn.
    ringed = maps.rings(frame, "hover")
    assert sorted(ringed) == [0, 1] and all(r["id"] == target for r in ringed.values())
    assert all(r["offset"] < 1.5 for r in ringed.values()), ringed
    # Zoomed in, the ring follows its product.
    zoom = frame.evaluate("() => window.productMap.viewStates.map0.zoom")
    page.mouse.wheel(0, -300)
    frame.wait_for_function("z => window.productMap.viewStates.map0.zoom > z + 0.2", arg=zoom)
    page.wait_for_timeout(500)
    assert all(r["offset"] < 1.5 for r in maps.rings(frame, "hover").values())
    # Off the maps: no tooltip, no ring.
    page.mouse.move(5, 5)
    frame.wait_for_function("() => document.getElementById('tooltip').hidden")
    assert maps.rings(frame, "hover") == {}


def test_clicking_a_point_opens_the_product_on_search(page, server):
    frame = open_map(page, server)
    target = maps.loneliest(frame, 1)
    page.mouse.click(*maps.screen_position(page, frame, 1, target))
    page.wait_for_function("() => location.pathname === '/'", timeout=60_000)
    page.wait_for_function("() => new URLSearchParams(location.search).has('item')", timeout=60_000)
    assert parse_qs(urlparse(page.url).query)["item"][0] == target
    grids = browser.wait_for_results(page, MODELS, query=target)
    assert all(len(grid["tiles"]) == 10 for grid in grids.values())


def drag_box(page, frame, view: int, corners: tuple[tuple[float, float], ...], shift=True):
    """Drag from one corner to the other on map `view` (fractions of the map's size)."""
    box = page.locator(maps.FRAME).bounding_box()
    area = frame.evaluate(
        """m => { const vp = window.productMap.deck.getViewports().find(v => v.id === 'map' + m);
          const r = document.getElementById('maps').getBoundingClientRect();
          return [r.left + vp.x, r.top + vp.y, vp.width, vp.height]; }""",
        view,
    )
    (x0, y0), (x1, y1) = [
        (box["x"] + area[0] + fx * area[2], box["y"] + area[1] + fy * area[3]) for fx, fy in corners
    ]
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


INSIDE_THE_BOX = """() => { const s = window.productMap, b = s.box, p = s.data.positions[b.view];
  const ids = [];
  for (let r = 0; r < s.data.count; r++)
    if (p[2*r] >= b.x[0] && p[2*r] <= b.x[1] && p[2*r+1] >= b.y[0] && p[2*r+1] <= b.y[1])
      ids.push(s.data.idOf(r));
  return ids; }"""


def listed_after_the_box(page, frame, model_id: str) -> list[str]:
    """Wait until the page lists the products inside the box just drawn on `model_id`'s map
    (as the browser counts them); return them."""
    inside = frame.evaluate(INSIDE_THE_BOX)
    assert 0 < len(inside) < 53
    page.get_by_text(f"{len(inside)} products in the box drawn on {model_id}").wait_for(
        timeout=60_000
    )
    tiles = page.locator(browser.grid_selector("map-box") + " a.tile")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the grid re-renders after the text
        shown = {tiles.nth(i).get_attribute("data-id") for i in range(tiles.count())}
        if shown == set(inside):
            return inside
        time.sleep(0.2)
    raise AssertionError(f"the grid shows {sorted(shown)}, the box holds {sorted(inside)}")


def test_dragging_a_box_lists_the_products_inside(page, server):
    frame = open_map(page, server)
    drag_box(page, frame, 0, ((0.02, 0.02), (0.6, 0.98)))
    listed_after_the_box(page, frame, "pixels")
    # The "Select a box" button draws a box without Shift, on the other map.
    frame.locator("#select").click()
    drag_box(page, frame, 1, ((0.3, 0.3), (0.98, 0.98)), shift=False)
    inside = listed_after_the_box(page, frame, "efficientnet-lite0")
    page.locator(browser.grid_selector("map-box") + f" a.tile[data-id='{inside[0]}']").click()
    browser.wait_for_results(page, MODELS, query=inside[0])


def test_the_search_query_is_marked_on_every_map(page, server):
    page.goto(f"{server.url}/?catalog=planted&models={','.join(MODELS)}&item=green/square_2")
    browser.wait_for_results(page, MODELS, query="green/square_2")
    page.get_by_role("link", name="Map").click()
    frame = maps.maps_frame(page)
    assert maps.state(frame)["marked"] == "green/square_2"
    marked = maps.rings(frame, "marked")
    assert sorted(marked) == [0, 1] and all(r["id"] == "green/square_2" for r in marked.values())
    assert all(r["offset"] < 1.5 for r in marked.values()), marked


def test_the_colour_field_comes_from_the_url_and_goes_back_to_it(page, server):
    frame = open_map(page, server, label="shape")
    legend = maps.state(frame)["legend"]
    assert "shape" in legend and all(v in legend for v in ("circle", "square", "triangle"))
    assert parse_qs(urlparse(page.url).query)["label"] == ["shape"]
    page.get_by_label("Colour by").click()
    page.get_by_role("option", name="folder").click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('label') === 'folder'")
    frame = maps.maps_frame(page)
    frame.wait_for_function("() => document.getElementById('legend').innerText.includes('red')")


def test_a_browser_without_webgl_is_told_why_there_is_no_map(chromium, server):
    without = chromium.browser_type.launch(
        executable_path=browser.CHROMIUM,
        args=[*browser.CHROMIUM_ARGS, "--disable-3d-apis"],  # no WebGL, no WebGPU
        headless=True,
    )
    try:
        page = without.new_page(viewport={"width": 1440, "height": 1100})
        page.goto(f"{server.url}/map?catalog=planted&models={','.join(MODELS)}")
        frame = maps.maps_frame(page)
        message = frame.locator(".nographics")
        assert "neither WebGPU nor WebGL" in message.inner_text()
        assert message.is_visible()
    finally:
        without.close()


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

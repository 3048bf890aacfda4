"""The Map page above 50,000 products in a real browser (SwiftShader, no GPU): every product is
drawn at rest; while a map moves (drag or wheel) an even sample of 50,000 per map is drawn, and
every product again once the map rests. A synthetic catalogue of 60,000 products (two models'
maps of random clusters, tests/harness/map_catalogues.py)."""

from __future__ import annotations

import pytest

from app_support import map_browser as maps
from tests.harness.chromium import require_browser
from tests.harness.map_catalogues import SYNTHETIC_MODELS, synthetic_catalogue

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRODUCTS = 60_000
WHILE_MOVING = 30_000  # every 2nd product: the even sample of at most 50,000


@pytest.fixture(scope="module")
def server(tmp_path_factory, app_server):
    require_browser()
    data = tmp_path_factory.mktemp("map-scale")
    synthetic_catalogue(data / "big", PRODUCTS)
    return app_server(data)


FRAMES = "Number(document.getElementById('root').dataset.frames)"


def frames(frame) -> int:
    """How many frames the maps have drawn."""
    return int(frame.evaluate(f"() => {FRAMES}"))


def drawn(frame) -> int:
    return maps.state(frame)["drawn"]


def wait_drawn(frame, count: int, timeout_s: float = 300) -> None:
    frame.wait_for_function(
        "n => Number(document.getElementById('root').dataset.drawn) === n",
        arg=count,
        timeout=timeout_s * 1000,
    )


def test_a_moving_map_draws_a_sample_and_every_product_once_at_rest(page, server):
    page.goto(f"{server.url}/map?catalog=big&models={','.join(SYNTHETIC_MODELS)}")
    frame = maps.maps_frame(page, timeout=300)
    wait_drawn(frame, PRODUCTS)  # the first draw: every product
    fitted = frame.evaluate("() => window.productMap.viewStates.map0.zoom")
    box = page.locator(maps.FRAME).bounding_box()
    x, y = box["x"] + 300, box["y"] + 300
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 30, steps=3)
    wait_drawn(frame, WHILE_MOVING)  # held mid-drag: the sample is what moves
    page.wait_for_timeout(1000)  # held still, longer than the map waits to settle
    assert drawn(frame) == WHILE_MOVING  # still the sample: the pointer is down
    moved = frame.evaluate("() => window.productMap.viewStates.map0.target")
    page.mouse.up()
    wait_drawn(frame, PRODUCTS)  # at rest: every product again
    assert moved != [500, 500, 0]  # the map did pan
    # A wheel zoom moves the map too: the sample while it moves, then every product.
    page.mouse.move(x, y)
    before = frames(frame)
    page.mouse.wheel(0, -240)
    frame.wait_for_function(f"() => {FRAMES} > {before}", timeout=300_000)
    wait_drawn(frame, PRODUCTS)
    since = frame.evaluate(f"() => window.productMap.frameLog.slice({before} - {FRAMES})")
    assert WHILE_MOVING in since and since[-1] == PRODUCTS, since
    assert frame.evaluate("() => window.productMap.viewStates.map0.zoom") > fitted

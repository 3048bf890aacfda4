"""The Map page in headless Chromium: today's WebGL page against the Vega-Lite page before it.

For each catalogue (a real one given by `--catalog`, and synthetic ones of `--synthetic` sizes:
random 2-D clusters saved as the maps of two models, products with titles and two labels, no
images), both pages are served by `streamlit run` (the old one from a checkout of `--old-commit`
in /tmp) and opened in Debian's Chromium with the page's defaults:

- first draw: seconds from `page.goto` to the first drawn map;
- bytes: websocket payload bytes received until then (the points, as sent), plus the
  component's static files (the JavaScript bundle, cached by the browser afterwards);
- model switch: websocket bytes received when a second model is added to the view;
- hover: a 7 x 7 grid over the first map; in each cell the pointer moves onto the drawn product
  nearest the cell's centre; milliseconds from the move (Playwright's `mouse.move`) until the
  tooltip shows the product (`wall`), and measured inside the page from the pointer event to the
  tooltip's change (`in_page`): median and p90;
- thumbnail: for the new page, milliseconds from the move until that product's thumbnail is in
  the tooltip (fetched on demand); for the old page, how many of the hovers showed one;
- pan (new page): milliseconds for a drag across the first map to be drawn.

    python -m bench.bench_map_page --catalog /tmp/maps-data/fashion44k --models colour \\
        --synthetic 3000,44441,1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import emit, log, machine
from tests.harness.map_catalogues import SYNTHETIC_MODELS, synthetic_catalogue

REPO = Path(__file__).resolve().parent.parent
GRID = 7


def old_checkout(commit: str) -> Path:
    """A checkout of `commit` in /tmp (the page before), made once."""
    folder = Path("/tmp") / f"map-page-{commit[:12]}"
    if not (folder / "app.py").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


# -- one page ------------------------------------------------------------------------------------
class Page:
    """What differs between the old page (Vega-Lite, SVG) and the new one (deck.gl, iframe)."""

    def __init__(self, page, new: bool):
        self.page, self.new = page, new

    def frame(self):
        if not self.new:
            return self.page.main_frame
        from app_support import map_browser

        return map_browser.maps_frame(self.page, timeout=900)

    def wait_drawn(self, timeout_s: float = 900) -> None:
        if self.new:
            self.frame().wait_for_selector("#root[data-drawn]", state="attached",
                                           timeout=timeout_s * 1000)  # fmt: skip
        else:
            self.page.locator(".vega-embed svg g.mark-symbol.role-mark path").first.wait_for(
                state="attached", timeout=timeout_s * 1000
            )

    def targets(self) -> list[tuple[float, float, str]]:
        """Page positions of the drawn products nearest the centres of a 7 x 7 grid."""
        if self.new:
            frame = self.frame()
            box = self.page.locator("iframe[title*='product_maps']").bounding_box()
            found = frame.evaluate(NEW_TARGETS, GRID)
            return [(box["x"] + x, box["y"] + y, i) for x, y, i in found]
        return [tuple(t) for t in self.page.evaluate(OLD_TARGETS, GRID)]

    def install_timer(self) -> None:
        """In-page latency: pointer event to tooltip change (MutationObserver)."""
        script = TIMER.replace("TOOLTIP", "#tooltip" if self.new else "#vg-tooltip-element")
        self.frame().evaluate(script)

    def shown(self) -> str:
        return "#tooltip" if self.new else "#vg-tooltip-element"


NEW_TARGETS = """(grid) => {
  const s = window.productMap, vp = s.deck.getViewports().find((v) => v.id === 'map0');
  const r = document.getElementById('maps').getBoundingClientRect(), p = s.data.positions[0];
  const screen = [];
  for (let row = 0; row < s.data.count; row++) {
    if (p[2 * row] < -1e8) { screen.push(null); continue; }
    screen.push(vp.project([p[2 * row], p[2 * row + 1]]));
  }
  const out = [];
  for (let gy = 0; gy < grid; gy++) for (let gx = 0; gx < grid; gx++) {
    const cx = ((gx + 0.5) / grid) * vp.width, cy = ((gy + 0.5) / grid) * vp.height;
    let best = -1, bestD = Infinity;
    for (let row = 0; row < s.data.count; row++) {
      const q = screen[row]; if (!q) continue;
      const d = (q[0] - cx) ** 2 + (q[1] - cy) ** 2; if (d < bestD) { bestD = d; best = row; }
    }
    out.push([r.left + vp.x + screen[best][0], r.top + vp.y + screen[best][1], s.data.idOf(best)]);
  }
  return out;
}"""

OLD_TARGETS = """(grid) => {
  const group = document.querySelector('.vega-embed svg g.concat_0_group g.mark-symbol.role-mark');
  const paths = Array.from(group.querySelectorAll('path'));
  const area = group.getBoundingClientRect();
  const centres = paths.map((p) => { const b = p.getBoundingClientRect();
    return [b.left + b.width / 2, b.top + b.height / 2]; });
  const out = [];
  for (let gy = 0; gy < grid; gy++) for (let gx = 0; gx < grid; gx++) {
    const cx = area.left + ((gx + 0.5) / grid) * area.width;
    const cy = area.top + ((gy + 0.5) / grid) * area.height;
    let best = 0, bestD = Infinity;
    centres.forEach((c, n) => { const d = (c[0] - cx) ** 2 + (c[1] - cy) ** 2;
      if (d < bestD) { bestD = d; best = n; } });
    out.push([centres[best][0], centres[best][1], String(best)]);
  }
  return out;
}"""

TIMER = """() => {
  window.__bench = { move: 0, latencies: [] };
  document.addEventListener('pointermove', (e) => { window.__bench.move = e.timeStamp; }, true);
  const attach = () => {
    const tip = document.querySelector('TOOLTIP');
    if (!tip) { setTimeout(attach, 50); return; }
    new MutationObserver(() => {
      const b = window.__bench;
      if (b.move) b.latencies.push(performance.now() - b.move);
      window.__bench.move = 0;
    }).observe(tip, { childList: true, subtree: true, characterData: true, attributes: true,
                      attributeFilter: ['data-id', 'class'] });
  };
  attach();
}"""


def quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
    }


def hover_figures(view: Page) -> dict:
    """Hover latency over the 7 x 7 grid of drawn products (see the module docstring)."""
    targets = view.targets()
    view.install_timer()
    frame = view.frame()
    wall, thumbnails, with_thumbnail, last, last_text = [], [], 0, None, None
    for x, y, ident in targets:
        if ident == last:
            continue
        started = time.perf_counter()
        view.page.mouse.move(x, y)
        try:
            if view.new:
                frame.wait_for_function(
                    "id => document.getElementById('tooltip').dataset.id === id",
                    arg=ident, polling="raf", timeout=5000,
                )  # fmt: skip
            else:
                frame.wait_for_function(
                    "last => { const t = document.querySelector('#vg-tooltip-element');"
                    " return t && t.classList.contains('visible') && t.innerText !== last; }",
                    arg=last_text, polling="raf", timeout=5000,
                )  # fmt: skip
        except Exception:  # another product drawn over this one: no new tooltip
            continue
        wall.append((time.perf_counter() - started) * 1000)
        last = ident
        if view.new:
            try:
                frame.wait_for_function(
                    "id => document.getElementById('tooltip').dataset.thumbnail === id",
                    arg=ident, polling="raf", timeout=5000,
                )  # fmt: skip
                thumbnails.append((time.perf_counter() - started) * 1000)
            except Exception:
                pass
        else:
            last_text = frame.locator("#vg-tooltip-element").inner_text()
            with_thumbnail += frame.locator("#vg-tooltip-element img").count() > 0
    in_page = frame.evaluate("() => window.__bench.latencies")
    result = {"targets": len(targets), "wall_ms": quantiles(wall), "in_page_ms": quantiles(in_page)}
    if view.new:
        result["thumbnail_ms"] = quantiles(thumbnails)
    else:
        result["hovers_with_thumbnail"] = with_thumbnail
    return result


def pan_ms(view: Page, drags: int = 5) -> dict:
    """Drags across the first map: milliseconds from the last step of the drag to the next frame
    drawn (`moving`: above 50,000 points the map draws a sample while it moves), and from the
    button's release to the next frame of every point (`at_rest`, after the page's 300 ms)."""
    frame = view.frame()
    box = view.page.locator("iframe[title*='product_maps']").bounding_box()
    moving, at_rest = [], []
    sampled = frame.evaluate("() => window.productMap.pointSets.some((set) => set.moving)")
    count = "n => Number(document.getElementById('root').dataset.KEY) > n"
    for n in range(drags):
        x, y = box["x"] + 200 + 20 * n, box["y"] + 250
        view.page.mouse.move(x, y)
        view.page.mouse.down()
        view.page.mouse.move(x + 90, y + 45, steps=3)
        frames = int(frame.evaluate("() => Number(document.getElementById('root').dataset.frames)"))
        started = time.perf_counter()
        view.page.mouse.move(x + 120, y + 60)
        frame.wait_for_function(count.replace("KEY", "frames"), arg=frames, polling="raf",
                                timeout=600_000)  # fmt: skip
        moving.append((time.perf_counter() - started) * 1000)
        if not sampled:  # every point drawn while moving: the release draws nothing new
            view.page.mouse.up()
            continue
        full = int(frame.evaluate("() => Number(document.getElementById('root').dataset.full)"))
        started = time.perf_counter()
        view.page.mouse.up()
        frame.wait_for_function(count.replace("KEY", "full"), arg=full, polling="raf",
                                timeout=600_000)  # fmt: skip
        at_rest.append((time.perf_counter() - started) * 1000)
    return {"moving": quantiles(moving), "at_rest": quantiles(at_rest) if sampled else "same"}


def switch_models(view: Page, model_id: str) -> None:
    """Add `model_id` to the view with the sidebar's model picker."""
    page = view.page
    page.locator("[data-testid='stSidebar'] [data-testid='stMultiSelect']").first.click()
    page.get_by_role("option", name=model_id, exact=True).click()
    page.keyboard.press("Escape")


def save_screenshot(view: Page, path: str) -> None:
    """The page with a tooltip and its thumbnail open, on the middle of the first map."""
    x, y, ident = view.targets()[len(view.targets()) // 2]
    view.page.mouse.move(x, y)
    view.frame().wait_for_function(
        "id => document.getElementById('tooltip').dataset.thumbnail === id", arg=ident,
        timeout=30_000,
    )  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    view.page.screenshot(path=path)


def measure(
    app, catalogue: str, models: list[str], new: bool, second: str | None, screenshot=None
) -> dict:
    from playwright.sync_api import sync_playwright

    from app_support import browser

    with sync_playwright() as playwright:
        chromium = browser.launch_chromium(playwright)
        page = chromium.new_page(viewport={"width": 1440, "height": 1100})
        received = {"bytes": 0}
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: received.update(
            bytes=received["bytes"] + len(payload or b""))))  # fmt: skip
        responses = []
        page.on("response", lambda response: responses.append(response))
        view = Page(page, new)
        started = time.perf_counter()
        page.goto(f"{app.url}/map?catalog={catalogue}&models={','.join(models)}")
        view.wait_drawn()
        result = {"first_draw_s": round(time.perf_counter() - started, 2)}
        log(f"  first draw: {result['first_draw_s']} s")  # each figure as it comes: a slow
        # stage (panning a million points in software) must not cost the figures before it
        page.wait_for_timeout(1500)
        result["websocket_mib"] = round(received["bytes"] / 2**20, 2)
        statics = [r for r in responses if "/component/" in r.url]
        result["component_files_mib"] = round(
            sum(r.request.sizes()["responseBodySize"] for r in statics) / 2**20, 2
        )
        result["hover"] = hover_figures(view)
        log(f"  hover: {result['hover']}")
        if new and screenshot:
            save_screenshot(view, screenshot)
            result["screenshot"] = screenshot
        if new:
            drawn = int(view.frame().evaluate("() => window.productMap.data.count"))
            result["pan_ms"] = pan_ms(view, drags=5 if drawn <= 200_000 else 2)
            log(f"  pan: {result['pan_ms']}")
        if second:
            before = received["bytes"]
            started = time.perf_counter()
            switch_models(view, second)
            if new:
                view.frame().wait_for_function(
                    "() => window.productMap.data && window.productMap.data.maps === 2",
                    timeout=900_000, polling=200,
                )  # fmt: skip
            else:
                page.locator(".vega-embed svg g.concat_1_group").first.wait_for(
                    state="attached", timeout=900_000
                )
            page.wait_for_timeout(1500)
            result["model_switch"] = {
                "seconds": round(time.perf_counter() - started, 2),
                "websocket_mib": round((received["bytes"] - before) / 2**20, 2),
            }
        chromium.close()
    return result


def bench_catalogue(
    directory: Path, models: list[str], second, old: Path, screenshot=None, pages=("old", "new")
) -> dict:
    from app_support import browser

    out = {}
    scripts = {"old": old / "app.py", "new": REPO / "app.py"}
    for name, script in ((name, scripts[name]) for name in pages):
        log(f"{directory.name}: {name} page")
        app = browser.start_app(
            directory.parent,
            log_path=Path("/tmp") / f"bench-map-page-{name}-{os.getpid()}.log",
            script=script,
            timeout=300,
        )
        try:
            new = name == "new"
            out[name] = measure(app, directory.name, models, new, second, screenshot)
        except Exception as exc:  # say what failed, keep the other figures
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        finally:
            app.stop()
        log(f"{directory.name}: {name}: {out[name]}")
    return out


def pydeck_comparison(count: int = 44_441, seed: int = 0) -> dict:
    """MiB of the points of `count` products on two maps: as `st.pydeck_chart` sends them (the
    deck's JSON), against this page's binary payload (`app_support.map_payload`)."""
    import pydeck as pdk

    from app_support import map_payload

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": [str(10_000 + n) for n in range(count)],
            "title": [f"Red shirt {n} for men, casual" for n in range(count)],
            "articleType": rng.choice(["Tshirts", "Shirts", "Casual Shoes", "Watches"], count),
            **{name: rng.normal(size=count) for name in ("x0", "y0", "x1", "y1")},
        }
    )
    layers = [
        pdk.Layer("ScatterplotLayer", frame, id=f"points{m}", get_position=[f"x{m}", f"y{m}"],
                  get_fill_color=[78, 121, 167], pickable=True, get_radius=2,
                  radius_units="pixels")
        for m in (0, 1)
    ]  # fmt: skip
    deck = pdk.Deck(layers=layers, views=[pdk.View("OrthographicView")], map_style=None)
    payload = map_payload.encode(
        ids=frame["id"].tolist(),
        titles=frame["title"].tolist(),
        labels={"articleType": frame["articleType"].tolist()},
        colour_codes=np.zeros(count, np.uint8),
        legend=[{"value": "all", "colour": "#4e79a7"}],
        colour_field="articleType",
        maps={m: frame[[f"x{m}", f"y{m}"]].to_numpy() for m in (0, 1)},
    )
    binary = sum(len(v) for v in payload.values() if isinstance(v, bytes))
    return {
        "products": count,
        "pydeck_json_mib": round(len(deck.to_json().encode()) / 2**20, 2),
        "component_binary_mib": round(binary / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="a built catalogue with maps (e.g. the 44K fashion set)")
    parser.add_argument("--models", default="colour", help="models of --catalog's view")
    parser.add_argument("--synthetic", default="3000,1000000", help="sizes of synthetic maps")
    parser.add_argument("--old-commit", default="0358386", help="the page before")
    parser.add_argument("--work", default="/tmp/bench-map-page", help="synthetic catalogues")
    parser.add_argument("--screenshot", help="save the new page on --catalog, a tooltip open")
    parser.add_argument("--pages", default="old,new", help="which pages to measure")
    args = parser.parse_args()

    old = old_checkout(args.old_commit)
    result = {"machine": machine(), "load_average_before": list(os.getloadavg()), "runs": {}}
    result["points_as_sent"] = pydeck_comparison()
    if args.catalog:
        directory = Path(args.catalog).resolve()
        result["runs"][f"{directory.name} (real)"] = bench_catalogue(
            directory, args.models.split(","), None, old, args.screenshot, args.pages.split(",")
        )
    for size in [int(s) for s in args.synthetic.split(",") if s]:
        log(f"synthetic catalogue of {size:,} products")
        directory = synthetic_catalogue(
            Path(args.work) / f"synthetic-{size}" / f"synthetic{size}", size
        )
        result["runs"][f"synthetic {size:,}"] = bench_catalogue(
            directory, [SYNTHETIC_MODELS[0]], SYNTHETIC_MODELS[1], old, None, args.pages.split(",")
        )
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result)


if __name__ == "__main__":
    main()

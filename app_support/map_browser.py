"""Driving the Map page's WebGL maps from Playwright (browser tests and bench/bench_map_page.py).

The maps live in a components.v1 iframe; its script keeps its state on `window.productMap`
(decoded points, deck.gl, the hovered row, timings), which these helpers read to find where a
product is drawn. What the page shows is read from its DOM: the tooltip, the legend, and the
rings over the canvas (the hovered product's and the query's).
"""

from __future__ import annotations

import time

FRAME = "iframe[title*='product_maps']"


def maps_frame(page, timeout: float = 120.0):
    """The maps' iframe, once it has drawn its points."""
    page.wait_for_selector(FRAME, timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = next((f for f in page.frames if "product_maps" in f.url), None)
        if frame is not None:
            frame.wait_for_selector("#root[data-drawn], .nographics", state="attached",
                                    timeout=timeout * 1000)  # fmt: skip
            return frame
        time.sleep(0.05)
    raise TimeoutError("the maps' iframe did not appear")


def screen_position(page, frame, view: int, item_id: str) -> tuple[float, float]:
    """Where product `item_id` is drawn on map `view`, in the page's CSS pixels."""
    x, y = frame.evaluate(
        """([m, id]) => {
          const s = window.productMap, row = s.data.rowOf.get(id);
          const vp = s.deck.getViewports().find((v) => v.id === 'map' + m);
          const p = s.data.positions[m], xy = vp.project([p[2 * row], p[2 * row + 1]]);
          const r = document.getElementById('maps').getBoundingClientRect();
          return [r.left + vp.x + xy[0], r.top + vp.y + xy[1]];
        }""",
        [view, item_id],
    )
    box = page.locator(FRAME).bounding_box()
    return box["x"] + x, box["y"] + y


def loneliest(frame, view: int = 0) -> str:
    """The product farthest from any other on map `view` (a hover there can mean nothing else)."""
    return frame.evaluate(
        """(m) => {
          const s = window.productMap, p = s.data.positions[m], n = s.data.count;
          let best = -1, bestGap = -1;
          for (let a = 0; a < n; a++) {
            if (p[2 * a] < -1e8) continue;
            let gap = Infinity;
            for (let b = 0; b < n; b++) if (b !== a && p[2 * b] > -1e8)
              gap = Math.min(gap, Math.hypot(p[2 * a] - p[2 * b], p[2 * a + 1] - p[2 * b + 1]));
            if (gap > bestGap) { bestGap = gap; best = a; }
          }
          return s.data.idOf(best);
        }""",
        view,
    )


def rings(frame, kind: str) -> dict[int, dict]:
    """The `kind` ("hover" or "marked") rings shown, by map: {view: {"id", "offset"}}, `offset`
    being how many CSS pixels the ring's centre lies from where its product is drawn."""
    found = frame.evaluate(
        """(kind) => {
          const s = window.productMap, out = [];
          for (const ring of document.querySelectorAll('#maps .ring.' + kind)) {
            if (ring.hidden || getComputedStyle(ring).display === 'none') continue;
            const m = Number(ring.dataset.view), row = s.data.rowOf.get(ring.dataset.id);
            const vp = s.deck.getViewports().find((v) => v.id === 'map' + m);
            const p = s.data.positions[m], [x, y] = vp.project([p[2 * row], p[2 * row + 1]]);
            const r = ring.getBoundingClientRect(), c = document.getElementById('maps')
              .getBoundingClientRect();
            const cx = r.left - c.left + r.width / 2, cy = r.top - c.top + r.height / 2;
            out.push([m, ring.dataset.id, Math.hypot(cx - (vp.x + x), cy - (vp.y + y))]);
          }
          return out;
        }""",
        kind,
    )
    return {view: {"id": item_id, "offset": offset} for view, item_id, offset in found}


def state(frame) -> dict:
    """The maps' state as the page shows it: hovered and marked ids, the tooltip's text."""
    return frame.evaluate(
        """() => {
          const root = document.getElementById('root'), tip = document.getElementById('tooltip');
          const img = tip.querySelector('img');
          return {
            drawn: Number(root.dataset.drawn || 0),
            hovered: root.dataset.hovered || null,
            marked: root.dataset.marked || '',
            tooltip: tip.hidden ? null : tip.innerText,
            tooltip_id: tip.hidden ? null : tip.dataset.id,
            thumbnail: img.hidden ? null : img.getAttribute('src'),
            legend: document.getElementById('legend').innerText,
          };
        }"""
    )

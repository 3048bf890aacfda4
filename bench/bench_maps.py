"""Maps and near-duplicates on a built catalogue: which projection serves, what the page weighs.

- `--methods openTSNE,UMAP`: both libraries lay out the SAME vectors (the model's, PCA-reduced as
  `embeddings.derived.maps` does), one after the other; for each: wall-clock seconds, the
  process's CPU seconds (every thread, so a busy machine's waiting is not counted), and the
  faithfulness of `embeddings.derived.maps.faithfulness` (10-NN kept, trustworthiness). UMAP
  needs `umap-learn` (requirements-dev.txt).
- `--duplicates`: the near-duplicate range search of each model at its default threshold:
  seconds, CPU seconds, groups and products in groups (`embeddings.derived.duplicates`).
- `--page`: the Map page in headless Chromium on the catalogue's saved maps: bytes received over
  the websocket until the maps are drawn, seconds to the first drawn map, and the hover latency
  (pointer move onto a drawn point to its tooltip), median of `--hovers`; `--screenshot PATH`
  saves the page with a tooltip open (docs/map-page.png).

    python -m bench.bench_maps --catalog data/fashion-full --model efficientnet-lite0 \\
        --methods openTSNE,UMAP
    python -m bench.bench_maps --catalog data/fashion-full --duplicates pixels,efficientnet-lite0
    python -m bench.bench_maps --catalog data/fashion-full --page \\
        --models pixels,efficientnet-lite0 --screenshot docs/map-page.png
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import emit, log, machine


def clocks():
    return time.perf_counter(), time.process_time()


def since(started) -> dict:
    wall, cpu = started
    return {
        "seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def umap_layout(points: np.ndarray, seed: int) -> np.ndarray:
    import umap

    # random_state would force one thread; a fixed seed is not needed to compare.
    reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, n_jobs=os.cpu_count() or 1)
    del seed
    return np.asarray(reducer.fit_transform(points), dtype=np.float32)


def compare_methods(catalogue, model_id: str, methods: list[str], seed: int) -> list[dict]:
    from embeddings.artefacts import no_progress
    from embeddings.derived import maps
    from embeddings.index.opening import open_index

    index = open_index(catalogue, model_id)
    rows = maps.mapped_rows(catalogue, index, maps.MAX_POINTS, seed)
    started = clocks()
    points, reduction = maps.reduced_vectors(index, rows, seed, no_progress)
    log(f"{model_id}: {len(rows):,} vectors reduced in {since(started)}")
    results = []
    for method in methods:
        log(f"{model_id}: {method} layout")
        started = clocks()
        if method.lower() == "opentsne":
            coords = maps.project(points, seed, model_id, no_progress)
        elif method.lower() == "umap":
            coords = umap_layout(points, seed)
        else:
            raise SystemExit(f"unknown method {method!r}: openTSNE or UMAP")
        timing = since(started)
        faithful = maps.faithfulness(index, rows, coords, seed, no_progress)
        results.append(
            {
                "model": model_id,
                "method": method,
                "points": len(rows),
                **reduction,
                **timing,
                **faithful,
            }
        )
        log(f"{model_id}: {method}: {results[-1]}")
    return results


def duplicate_figures(catalogue, models: list[str]) -> list[dict]:
    from embeddings.derived import duplicates
    from embeddings.index.base import score_tolerance
    from embeddings.index.opening import open_index

    results = []
    for model_id in models:
        index = open_index(catalogue, model_id)
        started = clocks()
        thresholds = duplicates.default_threshold(index)
        threshold_time = since(started)
        started = clocks()
        first, second, scores, facts = duplicates.find_pairs(index, thresholds.default)
        search_time = since(started)
        groups = duplicates.group_pairs(index.ids, first, second, scores)
        same = scores >= 1 - score_tolerance(index.dim)
        identical = duplicates.group_pairs(index.ids, first[same], second[same], scores[same])
        results.append(
            {
                "model": model_id,
                "products": len(index),
                "index_type": facts["index_type"],
                "default_threshold": thresholds.default,
                "median_nearest": thresholds.median_nearest,
                "threshold": threshold_time,
                "range_search": search_time,
                "pairs": int(len(first)),
                "groups": len(groups),
                "products_in_groups": duplicates.products_in_groups(groups),
                "largest_group": max((len(g.ids) for g in groups), default=0),
                "identical_groups": len(identical),
                "products_in_identical_groups": duplicates.products_in_groups(identical),
            }
        )
        log(f"{model_id}: {results[-1]}")
    return results


def page_figures(catalogue, models: list[str], hovers: int, screenshot: str | None) -> dict:
    from playwright.sync_api import sync_playwright

    from app_support import browser

    data = Path(catalogue.directory).parent
    app = browser.start_app(data, log_path=Path("/tmp") / f"bench-maps-{os.getpid()}.log")
    try:
        with sync_playwright() as playwright:
            chromium = browser.launch_chromium(playwright)
            page = chromium.new_page(viewport={"width": 1440, "height": 1100})
            received = {"bytes": 0}
            page.on(
                "websocket",
                lambda ws: ws.on(
                    "framereceived",
                    lambda payload: received.__setitem__(
                        "bytes", received["bytes"] + len(payload or b"")
                    ),
                ),
            )
            started = time.perf_counter()
            page.goto(f"{app.url}/map?catalog={catalogue.name}&models={','.join(models)}")
            points = page.locator(".vega-embed svg g.mark-symbol.role-mark path")
            points.first.wait_for(state="attached", timeout=600_000)
            drawn = time.perf_counter() - started
            page.wait_for_timeout(2000)
            result = {
                "first_map_seconds": round(drawn, 1),
                "websocket_mib": round(received["bytes"] / 2**20, 2),
            }
            result["hover_ms"] = hover_latencies(page, hovers)
            if screenshot:
                show_a_thumbnail(page)
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=screenshot)
                result["screenshot"] = screenshot
            chromium.close()
    finally:
        app.stop()
    return result


def hover_latencies(page, hovers: int) -> dict:
    """Move the pointer onto `hovers` drawn points of the first map (a seeded sample), and time
    each move until Vega's tooltip shows that product (milliseconds: median, max), counting the
    tooltips that carried a thumbnail."""
    points = page.locator(".vega-embed svg g.concat_0_group g.mark-symbol.role-mark").first
    points = points.locator("path")
    rng = np.random.default_rng(0)
    order = rng.permutation(points.count())
    times, with_image, last = [], 0, None
    for position in order[: hovers * 4]:
        if len(times) >= hovers:
            break
        box = points.nth(int(position)).bounding_box()
        if not box:
            continue
        started = time.perf_counter()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.wait_for_function(
                "last => { const t = document.querySelector('#vg-tooltip-element');"
                " return t && t.classList.contains('visible') && t.innerText !== last; }",
                arg=last,
                timeout=3000,
            )
        except Exception:  # another point drawn over this one: no new tooltip
            continue
        times.append((time.perf_counter() - started) * 1000)
        with_image += page.locator("#vg-tooltip-element img").count() > 0
        last = page.locator("#vg-tooltip-element").inner_text()
    return {
        "n": len(times),
        "with_thumbnail": with_image,
        "median": round(statistics.median(times), 1) if times else None,
        "max": round(max(times), 1) if times else None,
    }


def show_a_thumbnail(page, tries: int = 300) -> None:
    """Leave the pointer on a point whose tooltip shows a thumbnail (for the screenshot)."""
    points = page.locator(".vega-embed svg g.concat_1_group g.mark-symbol.role-mark").first
    points = points.locator("path")
    for position in np.random.default_rng(1).permutation(points.count())[:tries]:
        box = points.nth(int(position)).bounding_box()
        if box:
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_timeout(600)
            if page.locator("#vg-tooltip-element.visible img").count():
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--model", default="efficientnet-lite0", help="the model --methods maps")
    parser.add_argument("--methods", help="e.g. openTSNE,UMAP")
    parser.add_argument("--duplicates", help="models whose near-duplicates are searched")
    parser.add_argument("--page", action="store_true", help="measure the Map page in Chromium")
    parser.add_argument("--models", default="pixels,efficientnet-lite0", help="the page's models")
    parser.add_argument("--hovers", type=int, default=15)
    parser.add_argument("--screenshot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from embeddings.catalogue import Catalogue
    from embeddings.config import resolve_catalog_dir

    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    result = {"machine": machine(), "catalogue": catalogue.name, "products": len(catalogue)}
    if args.methods:
        result["methods"] = compare_methods(
            catalogue, args.model, args.methods.split(","), args.seed
        )
    if args.duplicates:
        result["duplicates"] = duplicate_figures(catalogue, args.duplicates.split(","))
    if args.page:
        result["page"] = page_figures(
            catalogue, args.models.split(","), args.hovers, args.screenshot
        )
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result)


if __name__ == "__main__":
    main()

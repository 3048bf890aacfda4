"""Maps and near-duplicates on a built catalogue: which projection serves, what duplicates cost.

- `--methods openTSNE,UMAP`: both libraries lay out the SAME vectors (the model's, PCA-reduced
  as `embeddings.derived.maps` does), one after the other; for each: wall-clock seconds, the
  process's CPU seconds (every thread, so a busy machine's waiting is not counted), and the
  faithfulness of `embeddings.derived.maps.faithfulness` (10-NN kept, trustworthiness). UMAP
  needs `umap-learn` (requirements-dev.txt).
- `--duplicates`: the near-duplicate range search of each model at its default threshold:
  seconds, CPU seconds, groups and products in groups (`embeddings.derived.duplicates`).
- The Map page in Chromium (first draw, hover, thumbnails, bytes, against the page before):
  `python -m bench.bench_map_page`.

    python -m bench.bench_maps --catalog data/fashion-full --model efficientnet-lite0 \\
        --methods openTSNE,UMAP
    python -m bench.bench_maps --catalog data/fashion-full --duplicates pixels,efficientnet-lite0
"""

from __future__ import annotations

import argparse
import os
import time

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
    from embeddings.derived import maps
    from embeddings.index.opening import open_index
    from embeddings.progress import no_progress

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--model", default="efficientnet-lite0", help="the model --methods maps")
    parser.add_argument("--methods", help="e.g. openTSNE,UMAP")
    parser.add_argument("--duplicates", help="models whose near-duplicates are searched")
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
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result)


if __name__ == "__main__":
    main()

"""Fused models on a built catalogue: does `A+B` beat its parts, and which fusion is better?

    python -m bench.bench_fusion --catalog /work/data/fashion-full \\
        --models efficientnet-lite0,pixels --queries 1000

Leave-one-out image-to-image figures (`embeddings.quality.evaluate.image_figures`: the same sampled
products and the same definitions as `python -m embeddings evaluate`) for each part alone, their
fusion by standardised scores (`zscore`) and by reciprocal rank fusion (`rrf`), each at the
default candidate depth (`embeddings.index.fused.DEFAULT_DEPTH`). Prints a Markdown table (P@10 and
mAP@10 per label field, beside chance), then paired differences of P@10 over the same queries
(mean and a 95% interval, 1.96 standard errors of the per-query differences): each fusion
against each part, and z-score against RRF. With --json, the rows too.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from embeddings.catalogue import Catalogue
from embeddings.config import resolve_catalog_dir
from embeddings.index.fused import DEFAULT_DEPTH, METHODS, FusedIndex, fused_id
from embeddings.index.opening import open_index
from embeddings.quality.evaluate import image_figures

LABELS = ("articleType", "baseColour", "gender", "subCategory")
K = 10


def measure(catalogue: Catalogue, parts: list[str], queries: int, seed: int, depth: int) -> dict:
    opened = {m: open_index(catalogue, m) for m in parts}
    variants = dict(opened)
    for method in METHODS:
        name = f"{fused_id(parts)} ({method})"
        variants[name] = FusedIndex(
            fused_id(parts), list(opened.values()), method=method, depth=depth
        )
    seconds, rows, precision = {}, [], {}
    for name, index in variants.items():  # one at a time, to time each
        started = time.perf_counter()
        result = image_figures(catalogue, {name: index}, queries=queries, seed=seed, ks=(K,))
        seconds[name] = round(time.perf_counter() - started, 1)
        rows += result.rows
        sampled = result.manifest["image_queries"]
        precision[name] = per_query_precision(catalogue, sampled["ids"], result.neighbours[name])
    return {
        "rows": rows,
        "seconds": seconds,
        "queries": len(sampled["ids"]),
        "variants": list(variants),
        "paired": paired_differences(precision, parts),
    }


def per_query_precision(catalogue, query_ids, neighbours) -> dict[str, np.ndarray]:
    """{label: P@K of each query} (NaN where the query has no label value)."""
    out = {}
    for label in LABELS[:2]:
        values = catalogue.items[label].to_dict()
        out[label] = np.array(
            [
                np.mean([values[n] == values[q] for n in found[:K]]) if values[q] else np.nan
                for q, found in zip(query_ids, neighbours, strict=True)
            ]
        )
    return out


def paired_differences(precision: dict, parts: list[str]) -> list[dict]:
    """Mean P@K difference over the same queries, with a 95% interval, for the pairs that
    answer "does the fusion beat its parts?" and "which fusion?"."""
    fused = [name for name in precision if name not in parts]
    pairs = [(f, p) for f in fused for p in parts] + [(fused[0], fused[1])]
    out = []
    for a, b in pairs:
        for label in LABELS[:2]:
            diff = precision[a][label] - precision[b][label]
            diff = diff[~np.isnan(diff)]
            half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
            out.append(
                {
                    "a": a,
                    "b": b,
                    "label": label,
                    "mean": round(float(diff.mean()), 4),
                    "low": round(float(diff.mean() - half), 4),
                    "high": round(float(diff.mean() + half), 4),
                }
            )
    return out


def table(report: dict, labels: list[str]) -> str:
    value = {
        (r["model"], r["label"], r["metric"]): r["value"] for r in report["rows"] if r["k"] == K
    }
    header = ["model"] + [f"{label} P@{K}" for label in labels] + [f"{labels[0]} mAP@{K}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in report["variants"]:
        cells = [f"`{name}`"] + [f"{value.get((name, lb, 'precision'), 0):.3f}" for lb in labels]
        cells.append(f"{value.get((name, labels[0], 'map'), 0):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    first = report["variants"][0]
    chance = [f"{value.get((first, lb, 'chance'), 0):.3f}" for lb in labels]
    lines.append("| *chance* | " + " | ".join(chance) + " |  |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--models", default="efficientnet-lite0,pixels")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    parts = [m.strip() for m in args.models.split(",") if m.strip()]
    report = measure(catalogue, parts, args.queries, args.seed, args.depth)
    labels = [label for label in LABELS if label in catalogue.label_fields]
    print(
        f"{report['queries']:,} image queries (seed {args.seed}) on {catalogue.name} "
        f"({len(catalogue):,} products), fusion depth {args.depth}; seconds per variant: "
        f"{report['seconds']}\n"
    )
    print(table(report, labels))
    print(f"\n| P@{K} difference | label | mean | 95% interval |\n|---|---|---|---|")
    for d in report["paired"]:
        print(
            f"| `{d['a']}` − `{d['b']}` | {d['label']} | {d['mean']:+.3f} | "
            f"{d['low']:+.3f} to {d['high']:+.3f} |"
        )
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

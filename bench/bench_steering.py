"""More like this / less like this: picking the Rocchio weights by a small measurement.

    python -m bench.bench_steering --catalog /work/data/fashion-full \\
        --models efficientnet-lite0,pixels --queries 300

A simulated shopper wants products like the query *in kind and colour*: a result is relevant
when it has the query's articleType and its baseColour. For each sampled product (seeded):

1. the product's own top 10 (itself excluded);
2. feedback from that first page: up to `--feedback` relevant results liked, up to as many
   irrelevant ones disliked (products whose page has neither are left out);
3. the steered query q' = normalise(a*q + b*mean(liked) - c*mean(disliked))
   (`embeddings.search.query.steer`), for a grid of (b, c) with a = 1;
4. precision@10 of the steered results, leaving out the query and the products already judged,
   against the same first query with the same products left out (b = c = 0).

Prints the grid as a table per model (the mean over both models too) with the gain over no
steering; the default `embeddings.search.query.DEFAULT_STEERING` is the best mean.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from embeddings.catalogue import Catalogue
from embeddings.config import resolve_catalog_dir
from embeddings.index.opening import open_index
from embeddings.search.query import Steering, steer

K = 10
LIKED = (0.0, 0.5, 0.75, 1.0, 1.5)
DISLIKED = (0.0, 0.25, 0.5, 0.75, 1.0)
BATCH = 128


def relevant_codes(catalogue: Catalogue) -> dict[str, tuple[str, str]]:
    items = catalogue.items
    pairs = zip(items["articleType"], items["baseColour"], strict=True)
    return dict(zip(items.index, pairs, strict=True))


def sample(catalogue: Catalogue, index, n: int, seed: int) -> list[str]:
    items = catalogue.items
    pool = [
        i
        for i in items.index[(items["articleType"] != "") & (items["baseColour"] != "")]
        if i in index.row_of
    ]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())


def top_ids(index, vectors: np.ndarray, depth: int) -> list[list[str]]:
    out = []
    for start in range(0, len(vectors), BATCH):
        _, rows = index.search(vectors[start : start + BATCH], depth)
        out += [[index.ids[r] for r in found if r >= 0] for found in rows]
    return out


def feedback(queries, first_pages, label_of, per_side: int):
    """(query, liked, disliked) for every query whose first page has something to judge."""
    out = []
    for query, page in zip(queries, first_pages, strict=True):
        page = [i for i in page if i != query][:K]
        liked = [i for i in page if label_of[i] == label_of[query]][:per_side]
        disliked = [i for i in page if label_of[i] != label_of[query]][:per_side]
        if liked or disliked:
            out.append((query, liked, disliked))
    return out


def precision_after(index, vectors, judged, label_of) -> float:
    """Mean precision@K of each vector's results, leaving out its query and judged products."""
    depth = K + 1 + 2 * max(len(liked) + len(disliked) for _, liked, disliked in judged)
    pages = top_ids(index, vectors, depth)
    scores = []
    for (query, liked, disliked), page in zip(judged, pages, strict=True):
        skip = {query, *liked, *disliked}
        kept = [i for i in page if i not in skip][:K]
        scores.append(np.mean([label_of[i] == label_of[query] for i in kept]))
    return float(np.mean(scores))


def measure_model(catalogue, model_id: str, queries: int, seed: int, per_side: int) -> dict:
    index = open_index(catalogue, model_id)
    label_of = relevant_codes(catalogue)
    ids = sample(catalogue, index, queries, seed)
    base = index.reconstruct_batch([index.row_of[i] for i in ids])
    judged = feedback(ids, top_ids(index, base, K + 1), label_of, per_side)
    rows = {i: index.row_of[q] for i, (q, _, _) in enumerate(judged)}
    q_vectors = index.reconstruct_batch(list(rows.values()))

    def vectors_of(members):
        return index.reconstruct_batch([index.row_of[i] for i in members]) if members else []

    steered_parts = [(vectors_of(liked), vectors_of(disliked)) for _, liked, disliked in judged]
    grid = {}
    for b in LIKED:
        for c in DISLIKED:
            weights = Steering(base=1.0, liked=b, disliked=c)
            vectors = np.stack(
                [
                    steer(q, np.asarray(lv), np.asarray(dv), weights, index.segments)
                    if (b or c)
                    else q
                    for q, (lv, dv) in zip(q_vectors, steered_parts, strict=True)
                ]
            )
            grid[f"{b},{c}"] = round(precision_after(index, vectors, judged, label_of), 4)
    return {
        "queries": len(judged),
        "liked": round(float(np.mean([len(x[1]) for x in judged])), 2),
        "disliked": round(float(np.mean([len(x[2]) for x in judged])), 2),
        "grid": grid,
    }


def markdown(report: dict) -> str:
    models = list(report["models"])
    header = ["b (liked)", "c (disliked)", *[f"`{m}` P@{K}" for m in models], "mean", "gain"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    baseline = report["mean"]["0.0,0.0"]
    for key, mean in sorted(report["mean"].items(), key=lambda kv: -kv[1]):
        b, c = key.split(",")
        cells = [b, c, *(f"{report['models'][m]['grid'][key]:.3f}" for m in models)]
        cells += [f"{mean:.3f}", f"{mean - baseline:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--models", default="efficientnet-lite0,pixels")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--feedback", type=int, default=2, help="liked (and disliked) per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = {
        "models": {
            m: measure_model(catalogue, m, args.queries, args.seed, args.feedback) for m in models
        }
    }
    keys = report["models"][models[0]]["grid"]
    report["mean"] = {
        key: round(float(np.mean([report["models"][m]["grid"][key] for m in models])), 4)
        for key in keys
    }
    for m, entry in report["models"].items():
        print(
            f"`{m}`: {entry['queries']} queries with feedback, {entry['liked']} liked and "
            f"{entry['disliked']} disliked on average"
        )
    print(f"\nrelevant = same articleType and baseColour as the query; a = 1\n\n{markdown(report)}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

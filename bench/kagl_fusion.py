"""Fused text search on the kagl protocol: two models' bridged answers fused per query.

A prototype of what fused model ids (`A+B`) do for text queries, measured on the protocol of
`embeddings.quality.kagl` with the same queries and figures. Two untuned fusions of the per-model
cosine scores over the whole catalogue:

- `zsum`: each model's scores standardised per query (mean 0, sd 1 over the catalogue), summed;
- `rrf`: reciprocal rank fusion, sum of 1 / (60 + rank) over each model's top 1,000.

    python -m bench.kagl_fusion --catalog data/fashion-full --models efficientnet-lite0,colour

Prints the figures as JSON lines (one per fusion) and a Markdown row each.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from embeddings.bridge import load_bridge
from embeddings.catalogue import Catalogue
from embeddings.index.store import load_vectors
from embeddings.quality.kagl import default_title_queries, unseen_title_problem
from embeddings.quality.kagl_metrics import label_figures, title_figures

RRF_K, RRF_DEPTH, DEPTH = 60, 1000, 10


def model_scores(catalogue: Catalogue, model_id: str, texts: list[str]) -> np.ndarray:
    """Cosine scores (q, N) of the texts through the model's bridge, in catalogue order."""
    bridge = load_bridge(catalogue.bridge_dir(model_id), catalogue=catalogue, model_id=model_id)
    ids, vectors = load_vectors(catalogue.model_dir(model_id))
    row = {item_id: i for i, item_id in enumerate(ids)}
    order = np.array([row.get(i, -1) for i in catalogue.ids])
    queries = np.concatenate(
        [bridge.encode_texts(texts[s : s + 256]) for s in range(0, len(texts), 256)]
    )
    scores = np.full((len(texts), len(order)), -np.inf, dtype=np.float32)
    present = order >= 0
    for start in range(0, len(texts), 256):
        block = queries[start : start + 256] @ np.asarray(vectors).T
        scores[start : start + 256, present] = block[:, order[present]]
    return scores


def top(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def zsum(per_model: list[np.ndarray]) -> np.ndarray:
    total = 0
    for scores in per_model:
        finite = np.where(np.isfinite(scores), scores, np.nan)
        mean = np.nanmean(finite, axis=1, keepdims=True)
        sd = np.nanstd(finite, axis=1, keepdims=True)
        total = total + np.nan_to_num((finite - mean) / np.maximum(sd, 1e-9), nan=-1e9)
    return top(total, DEPTH)


def rrf(per_model: list[np.ndarray]) -> np.ndarray:
    fused = np.zeros(per_model[0].shape, dtype=np.float64)
    for scores in per_model:
        ranked = top(scores, RRF_DEPTH)
        rows = np.arange(len(scores))[:, None]
        fused[rows, ranked] += 1.0 / (RRF_K + 1 + np.arange(RRF_DEPTH))[None, :]
    return top(fused, DEPTH)


def groups(values) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for position, value in enumerate(values):
        if value:
            out.setdefault(value, set()).add(position)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--models", required=True, help="two or more bridged models, A,B")
    parser.add_argument("--fields", default="articleType,baseColour")
    args = parser.parse_args()
    catalogue = Catalogue.open(args.catalog)
    models = args.models.split(",")
    titles = default_title_queries(catalogue, models)
    for model_id in models:
        problem = unseen_title_problem(catalogue, model_id, titles)
        if problem:
            raise SystemExit(f"{model_id}: {problem}")
    started = time.perf_counter()
    by_title = groups(catalogue.items["title"].astype(str).str.strip().tolist())
    n = len(catalogue)
    tasks = {"title": (titles, [by_title[t] for t in titles])}
    for field in args.fields.split(","):
        by_value = groups(catalogue.items[field].astype(str).str.strip().tolist())
        values = sorted(by_value)
        tasks[field] = (values, [by_value[v] for v in values])
    results = {"zsum": {}, "rrf": {}}
    for task, (texts, relevant) in tasks.items():
        per_model = [model_scores(catalogue, m, list(texts)) for m in models]
        for name, fuse in (("zsum", zsum), ("rrf", rrf)):
            found = fuse(per_model)
            if task == "title":
                results[name]["title"] = title_figures(found, relevant, n)
            else:
                results[name][task] = label_figures(found, relevant, n)
    for name, figures in results.items():
        row = {
            "model": f"{'+'.join(models)} ({name})",
            "R@1": figures["title"]["recall@1"],
            "R@10": figures["title"]["recall@10"],
            "MRR@10": figures["title"]["mrr@10"],
            **{f"{f} P@10": figures[f]["precision@10"] for f in args.fields.split(",")},
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(row))
        cells = [f"{v:.3f}" for k, v in row.items() if k not in ("model", "seconds")]
        print(f"| {row['model']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

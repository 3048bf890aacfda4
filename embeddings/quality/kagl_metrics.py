"""The figures of the Marqo fashion leaderboard's protocol, on ranked result lists.

Plain numpy over row numbers, so a test can check them by hand on a tiny catalogue:

- **title queries** (their "text-to-image"): relevant = every product carrying the query's title.
  For a query with R relevant products and a ranked list of k results,
  recall@k = (relevant products in the top k) / R (BEIR's and pytrec_eval's definition, the one
  their table uses: a title shared by 20 products can reach at most 10/20 at k = 10), and
  MRR@10 = 1 / (rank of the first relevant result), 0 when none is in the top 10.
  Chance: a random ranking of N products finds k/N of the relevant ones at k; its MRR@10 is
  the sum over i <= 10 of (1/i) P(the first relevant product is at rank i).
- **label queries** (their "category-to-product", "color-to-product", ...): the query is a bare
  label value ("Tshirts", "Navy Blue"), relevant = the products with that value;
  precision@k = share of the top k that are relevant. Chance: the value's share of the N
  products. Every figure is a mean over queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TITLE_KS = (1, 10)
MRR_DEPTH = 10
LABEL_KS = (1, 10)


def hits_matrix(found: np.ndarray, relevant: Sequence[set[int]]) -> np.ndarray:
    """bool (q, k): result j of query i is one of query i's relevant rows (-1 padding never is)."""
    out = np.zeros(found.shape, dtype=bool)
    for i, rows in enumerate(relevant):
        if rows:
            out[i] = np.isin(found[i], np.fromiter(rows, dtype=np.int64))
    return out


def title_figures(
    found: np.ndarray, relevant: Sequence[set[int]], n_items: int, ks: Sequence[int] = TITLE_KS
) -> dict[str, float]:
    """recall@k and MRR@10 of ranked rows `found` (q, >= max(ks, 10)), with chance beside each."""
    hits = hits_matrix(found, relevant)
    sizes = np.array([len(r) for r in relevant], dtype=np.float64)
    if not len(sizes) or (sizes < 1).any():
        raise ValueError("every title query needs at least one relevant product")
    out: dict[str, float] = {"queries": float(len(sizes))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(hits[:, :k].sum(axis=1) / sizes))
        out[f"chance_recall@{k}"] = min(k, n_items) / n_items
    depth = min(MRR_DEPTH, hits.shape[1])
    first = np.where(hits[:, :depth].any(axis=1), hits[:, :depth].argmax(axis=1) + 1, 0)
    out[f"mrr@{MRR_DEPTH}"] = float(np.mean(np.where(first > 0, 1.0 / np.maximum(first, 1), 0)))
    out[f"chance_mrr@{MRR_DEPTH}"] = float(
        np.mean([random_mrr(int(r), n_items, MRR_DEPTH) for r in sizes])
    )
    return out


def random_mrr(relevant: int, n_items: int, depth: int = MRR_DEPTH) -> float:
    """Expected MRR@depth of a uniformly random ranking of `n_items` with `relevant` relevant."""
    total, none_yet = 0.0, 1.0
    for i in range(1, min(depth, n_items) + 1):
        left = n_items - (i - 1)
        first_here = none_yet * relevant / left
        total += first_here / i
        none_yet *= (left - relevant) / left
        if none_yet <= 0:
            break
    return total


def label_figures(
    found: np.ndarray, relevant: Sequence[set[int]], n_items: int, ks: Sequence[int] = LABEL_KS
) -> dict[str, float]:
    """precision@k of ranked rows `found` (q, >= max(ks)) for label queries, with chance."""
    hits = hits_matrix(found, relevant)
    sizes = np.array([len(r) for r in relevant], dtype=np.float64)
    out: dict[str, float] = {"queries": float(len(sizes))}
    for k in ks:
        out[f"precision@{k}"] = float(np.mean(hits[:, :k].sum(axis=1) / k))
        out[f"chance_precision@{k}"] = float(np.mean(sizes / n_items))
    return out

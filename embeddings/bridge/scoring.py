"""A bridge's held-out figures: recall of a title's own product and label precision."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Held-out queries (and candidate images) scored after training: 1,000 ranks 1,000.
HOLDOUT_QUERIES = 1000
HOLDOUT_KS = (1, 5, 10)


def holdout_scores(
    query_vectors: np.ndarray,
    image_vectors: np.ndarray,
    labels: np.ndarray | None,
    ks: Sequence[int] = HOLDOUT_KS,
) -> dict:
    """Each query i ranks all `image_vectors`; its target is image i (its own product).

    Returns recall@k (share of queries whose own image is in the top k; ties count against the
    query), chance k/n, and when `labels` are given, label precision@k (share of the top k with
    the query product's label) and its chance (mean over queries of the label's share of the
    n images).
    """
    n = len(query_vectors)
    scores = query_vectors @ image_vectors.T
    own = scores[np.arange(n), np.arange(n)]
    rank = (scores > own[:, None]).sum(axis=1) + (scores == own[:, None]).sum(axis=1) - 1
    top = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
    out: dict = {"queries": n, "candidates": n}
    for k in ks:
        out[f"recall@{k}"] = round(float((rank < k).mean()), 4)
        out[f"chance_recall@{k}"] = round(min(k, n) / n, 4)
    if labels is not None:
        labels = np.asarray(labels, dtype=object)
        values, codes = np.unique(labels, return_inverse=True)
        share = np.bincount(codes, minlength=len(values)) / n
        for k in ks:
            hits = codes[top[:, :k]] == codes[:, None]
            out[f"label_precision@{k}"] = round(float(hits.mean()), 4)
        out["chance_label_precision"] = round(float(share[codes].mean()), 4)
    return out


def summarise(manifest: dict) -> str:
    """One line: what the bridge was trained on and its held-out figures beside chance."""
    line = f"trained on {manifest['trained_on']:,} titles in {manifest['train_seconds']:.0f} s"
    holdout = manifest.get("holdout") or {}
    if not holdout:
        return line + "; too few held-out titles to score"
    n = holdout["queries"]
    line += (
        f"; held-out Recall@10 {holdout.get('recall@10', float('nan')):.3f} "
        f"(chance {holdout.get('chance_recall@10', float('nan')):.3f}, {n:,} titles "
        f"rank {n:,} images)"
    )
    if "label_precision@10" in holdout:
        line += (
            f", {holdout['label']} precision@10 {holdout['label_precision@10']:.3f} "
            f"(chance {holdout['chance_label_precision']:.3f})"
        )
    return line

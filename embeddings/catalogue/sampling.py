"""Stratified subsets: a demo catalogue with every class in its true proportion."""

from __future__ import annotations

import numpy as np
import pandas as pd


def stratified_sample(
    items: pd.DataFrame, limit: int, *, label: str | None, seed: int = 0
) -> pd.DataFrame:
    """Pick `limit` rows so each value of `label` keeps its share (largest remainders round).

    Deterministic for a given seed; the result keeps the input's row order. Without a label
    (or when `limit` >= len), a plain seeded sample.
    """
    if limit >= len(items):
        return items
    rng = np.random.default_rng(seed)
    if label is None or label not in items:
        chosen = np.sort(rng.choice(len(items), size=limit, replace=False))
        return items.iloc[chosen]
    groups = {
        value: np.flatnonzero(items[label].to_numpy() == value)
        for value in sorted(items[label].unique())
    }
    sizes = np.array([len(rows) for rows in groups.values()], dtype=float)
    exact = sizes * limit / sizes.sum()
    quota = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - quota), kind="stable")
    quota[remainder_order[: limit - quota.sum()]] += 1
    chosen = []
    for (_, rows), take in zip(groups.items(), quota, strict=True):
        chosen.extend(rng.permutation(rows)[:take])
    return items.iloc[np.sort(np.asarray(chosen, dtype=int))]

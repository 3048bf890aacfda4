"""Search results: `Hit`, and folding near-duplicate results into higher-ranked ones.

"Hide near-duplicates" (the Search page's switch, the CLI's `search --hide-duplicates`) keeps k
results that are not near-duplicates of each other: a result scoring at least the model's
near-duplicate threshold (`embeddings.derived.duplicates.default_threshold`) with a higher-ranked
result is folded into it, and the kept hit lists what was folded (`Hit.folded`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from embeddings.index.base import score_tolerance


@dataclass(frozen=True)
class Hit:
    """One result: a catalogue id, its cosine similarity to the query, and the lower-ranked
    near-duplicates folded into it (empty unless the search folds)."""

    id: str
    score: float
    folded: tuple[Hit, ...] = ()


def fold_near_duplicates(
    hits: Sequence[Hit], vectors: np.ndarray, threshold: float, k: int
) -> list[Hit]:
    """Walk `hits` in rank order; a hit scoring at least `threshold` (cosine, `vectors[i]` is
    hit i's vector) with a kept hit is folded into the first such one; stop at k kept hits."""
    kept: list[int] = []
    folded: dict[int, list[Hit]] = {}
    eps = score_tolerance(vectors.shape[1]) if vectors.ndim == 2 else 0.0
    for position, hit in enumerate(hits):
        if kept:
            similarity = vectors[kept] @ vectors[position]
            close = np.flatnonzero(similarity >= threshold - eps)
            if len(close):
                folded[kept[int(close[0])]].append(hit)
                continue
        if len(kept) == k:
            break
        kept.append(position)
        folded[position] = []
    return [replace(hits[p], folded=tuple(folded[p])) for p in kept]


def distinct_top_k(
    fetch: Callable[[int], list[Hit]],
    vectors_of: Callable[[list[str]], np.ndarray],
    k: int,
    threshold: float,
    *,
    most: int,
) -> list[Hit]:
    """k results that are not near-duplicates of each other: `fetch(n)` returns the top n hits;
    it is asked for 3k, then twice as many each time the folding leaves fewer than k, up to
    `most` (the search's own cap)."""
    wanted = min(most, max(3 * k, k + 10))
    while True:
        hits = fetch(wanted)
        kept = fold_near_duplicates(hits, vectors_of([h.id for h in hits]), threshold, k)
        if len(kept) >= k or len(hits) < wanted or wanted >= most:
            return kept
        wanted = min(most, wanted * 2)

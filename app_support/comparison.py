"""Comparing models' results for one query: agreement, pairwise overlap, label shares.

Pure functions over `{model id: [Hit, ...]}` (what `Searcher` returns) and a label lookup;
the Search page turns them into tile marks and the figures above the columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from embeddings.search.searcher import Hit


def agreement_counts(results: Mapping[str, Sequence[Hit]]) -> dict[str, int]:
    """For every product in any model's top-k: in how many models' top-k it appears."""
    counts: Counter[str] = Counter()
    for hits in results.values():
        counts.update({hit.id for hit in hits})
    return dict(counts)


@dataclass(frozen=True)
class Overlap:
    """Two models' top-k lists: how many products they share, of how many each returned."""

    first: str
    second: str
    shared: int
    size: int  # the shorter list's length (k, unless a filter left fewer products)

    @property
    def share(self) -> float:
        return self.shared / self.size if self.size else 0.0


def pairwise_overlap(results: Mapping[str, Sequence[Hit]]) -> list[Overlap]:
    """|top-k(A) ∩ top-k(B)| for every pair of models, in the order the models were given."""
    ids = {model: {hit.id for hit in hits} for model, hits in results.items()}
    return [
        Overlap(a, b, len(ids[a] & ids[b]), min(len(ids[a]), len(ids[b])))
        for a, b in combinations(results, 2)
    ]


#: `label_of(item id, field) -> value` ("" when unknown): e.g. `ProductTable.get`.
LabelOf = Callable[[str, str], str]


def label_matches(hits: Sequence[Hit], label_of: LabelOf, field: str, value: str) -> list[bool]:
    """Whether each hit's `field` equals `value` (the query's label); unknown ids never match."""
    return [bool(value) and label_of(hit.id, field) == value for hit in hits]


def label_share(hits: Sequence[Hit], label_of: LabelOf, field: str, value: str) -> float | None:
    """Share of the hits sharing the query's label, or None when there are no hits or no label."""
    if not hits or not value:
        return None
    matches = label_matches(hits, label_of, field, value)
    return sum(matches) / len(matches)


def label_share_table(
    results: Mapping[str, Sequence[Hit]],
    label_of: LabelOf,
    query_labels: Mapping[str, str],
    fields: Sequence[str],
) -> pd.DataFrame:
    """Rows: label fields the query has a value for; columns: models; cells: share of top-k."""
    rows = {}
    for field in fields:
        value = query_labels.get(field, "")
        if value:
            rows[f"{field} = {value}"] = {
                model: label_share(hits, label_of, field, value) for model, hits in results.items()
            }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(results))

"""Where models disagree: per-label-value precision, confusions, and the queries that split them.

Everything here reads an evaluation's saved neighbours (`EvaluationResult.neighbours`: each
image query's top 10 per model, leave-one-out, see `embeddings.quality.evaluate`), so no search
runs:

- `value_precision`: for one label field, each model's precision@k per label value (the mean
  over the sampled queries with that value: "how well does pixels do on Watches?");
- `worst_values` and `wrong_neighbour_labels`: the values where a model does worst, and which
  labels its wrong neighbours have there (a small confusion view: Kurtas found as Tops...);
- `disagreements`: per query, the lowest top-k overlap between any two of the models and the
  largest precision gap between them; the queries that split the models most come first.

Pure functions returning pandas tables; the Compare page draws them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

import pandas as pd

from embeddings.catalogue import Catalogue

K = 10
OTHER = "(other)"


def _queries(result) -> list[str]:
    return list((result.manifest.get("image_queries") or {}).get("ids") or [])


def available_models(result, models: Sequence[str]) -> list[str]:
    """The models among `models` whose neighbours the evaluation kept."""
    kept = getattr(result, "neighbours", None) or {}
    count = len(_queries(result))
    return [m for m in models if len(kept.get(m) or []) == count and count]


def query_precision(
    result, catalogue: Catalogue, field: str, models: Sequence[str], k: int = K
) -> pd.DataFrame:
    """One row per (query, model): the query's label `value` and its precision@k.

    Queries with no value for `field` are left out."""
    labels = catalogue.items[field].fillna("").astype(str).to_dict()
    rows = []
    for model_id in available_models(result, models):
        for query_id, neighbours in zip(_queries(result), result.neighbours[model_id], strict=True):
            value = labels.get(query_id, "")
            if not value:
                continue
            top = neighbours[:k]
            hits = sum(labels.get(i) == value for i in top)
            rows.append((query_id, model_id, value, hits / k if top else 0.0))
    return pd.DataFrame(rows, columns=["query", "model", "value", "precision"])


def value_precision(frame: pd.DataFrame) -> pd.DataFrame:
    """Index: label values; columns: each model's mean precision@k, and `queries` (how many
    sampled queries have that value). Sorted by the value's mean over the models, worst first."""
    if frame.empty:
        return pd.DataFrame(columns=["queries"])
    table = frame.pivot_table(index="value", columns="model", values="precision", aggfunc="mean")
    counts = frame.groupby("value")["query"].nunique()
    order = table.mean(axis=1).sort_values(kind="stable").index
    table = table.loc[order]
    table.insert(0, "queries", counts.loc[order].astype(int))
    table.columns.name = None
    return table


def worst_values(table: pd.DataFrame, model: str, n: int = 8, min_queries: int = 5) -> list[str]:
    """The `n` label values where `model` has the lowest precision (values with at least
    `min_queries` sampled queries, so one unlucky query does not make a value 'worst')."""
    if model not in table.columns:
        return []
    usable = table[table["queries"] >= min_queries]
    return usable[model].sort_values(kind="stable").index[:n].tolist()


def wrong_neighbour_labels(
    result,
    catalogue: Catalogue,
    field: str,
    model: str,
    values: Sequence[str],
    k: int = K,
    top: int = 4,
) -> pd.DataFrame:
    """For queries with each of `values`: the labels of `model`'s wrong neighbours in its top k.

    Rows (value, neighbour, share): the share of that value's wrong neighbours with each label,
    the `top` commonest per value and the rest as "(other)"."""
    labels = catalogue.items[field].fillna("").astype(str).to_dict()
    wanted = set(values)
    wrong: dict[str, Counter] = {v: Counter() for v in values}
    if model in available_models(result, [model]):
        for query_id, neighbours in zip(_queries(result), result.neighbours[model], strict=True):
            value = labels.get(query_id, "")
            if value in wanted:
                wrong[value].update(
                    labels.get(i) or "(no label)" for i in neighbours[:k] if labels.get(i) != value
                )
    rows = []
    for value in values:
        total = sum(wrong[value].values())
        if not total:
            continue
        common = wrong[value].most_common(top)
        rest = total - sum(count for _, count in common)
        for neighbour, count in [*common, *([(OTHER, rest)] if rest else [])]:
            rows.append((value, neighbour, count / total))
    return pd.DataFrame(rows, columns=["value", "neighbour", "share"])


def disagreements(
    result, catalogue: Catalogue, field: str, models: Sequence[str], k: int = K
) -> pd.DataFrame:
    """One row per query: its label `value`, `overlap` (the smallest share of top-k products any
    two of the models have in common), each model's precision@k, and `gap` (the largest
    precision difference). Sorted with the most disagreement first: lowest overlap, then
    largest gap. Empty with fewer than two models."""
    models = available_models(result, models)
    if len(models) < 2:
        return pd.DataFrame(columns=["query", "value", "overlap", "gap", *models])
    precision = query_precision(result, catalogue, field, models, k)
    per_query = precision.pivot_table(index="query", columns="model", values="precision")
    labels = catalogue.items[field].fillna("").astype(str).to_dict()
    tops = {m: dict(zip(_queries(result), result.neighbours[m], strict=True)) for m in models}
    rows = []
    for query_id in per_query.index:
        overlap = min(
            len(set(tops[a][query_id][:k]) & set(tops[b][query_id][:k])) / k
            for a, b in combinations(models, 2)
        )
        scores = per_query.loc[query_id, models]
        rows.append(
            {
                "query": query_id,
                "value": labels.get(query_id, ""),
                "overlap": round(overlap, 6),  # rounded: float noise must not order ties
                "gap": round(float(scores.max() - scores.min()), 6),
                **{m: float(scores[m]) for m in models},
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(
        ["overlap", "gap"], ascending=[True, False], kind="stable"
    ).reset_index(drop=True)

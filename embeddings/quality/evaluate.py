"""Measured retrieval quality per model: image-to-image by label, and text-to-image.

Two tasks, both run through each model's saved FAISS index
(`embeddings.index.opening.open_index`),
with all the queries of a model searched in one batched call:

**image** (leave-one-out). Each query is a catalogue product's own stored vector; the product
itself is removed from its result list, and the remaining top k are scored against each label
field (articleType, baseColour, gender, a folder label...). For a query q with label value y
(products with an empty label are not queries for that field), `relevant(q)` is every *other*
product in the index whose label is also y, R = |relevant(q)|, and rel_i = 1 when the i-th
result is relevant:

- precision@k = (sum of rel_i, i <= k) / k
- recall@k    = (sum of rel_i, i <= k) / R
- AP@k        = (sum over i <= k of rel_i * precision@i) / min(k, R)   (the usual normalisation:
  a perfect list scores 1 even when R < k); mAP@k is the mean of AP@k over queries.
- chance@k    = R / (N - 1), averaged over queries: the expected precision@k of a random
  ranking of the N - 1 other products (the label's frequency as each query sees it).

A query whose label no other product shares (R = 0) has nothing to find and is left out of
that field's figures. Every figure is a mean over that field's queries.

**text**, for every model that answers text (a native text tower, or a text bridge, see
`embeddings.bridge`). Each query is a product's own title; nothing is excluded:

- recall@k with label "product": the share of queries whose own product is in the top k
  (chance k / N);
- precision@k per label field: the share of the top k sharing the query product's label
  (chance: the label's share of the N products, averaged over queries).

Bridges learn from titles, so text queries are drawn from the titles the bridges held out of
training (the same split for every bridge of a catalogue); with native towers only, from all
titled products. The queries are the same for every model evaluated together.

Queries are sampled (`queries` per task, default 1,000) with a seeded generator, so a result is
deterministic for a seed; the sample sizes and the sampled ids are kept in the manifest. Indexes
above `hnsw_above` products are HNSW graphs, so their figures include HNSW's (small) misses.

A model may be a fused one (`a+b`, `embeddings.index.fused`): it is measured like any other, through
its `FusedIndex`; its text queries go through its parts' encoders side by side.

Results go to `<catalogue>/evaluation/results.json` (rows, score samples, manifest, and each
image query's top `NEIGHBOURS_KEPT` neighbours per model, which the Compare page reads for its
per-label-value figures and disagreements, see `embeddings.quality.disagreement`) with a Markdown
summary beside it; `load_results` returns None once an index or bridge has changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, partial

import numpy as np

from embeddings.artefacts import Recorded, index_identity, read_report, report_path, save_report
from embeddings.artefacts import stale_reason as artefact_stale_reason
from embeddings.bridge import TextBridge, read_holdout_ids, title_vectors
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError
from embeddings.index.base import ModelIndex
from embeddings.index.fused import FusedEncoder, FusedIndex, fused_parts
from embeddings.progress import Progress, ProgressFn, no_progress

DEFAULT_KS = (1, 5, 10, 20)
DEFAULT_QUERIES = 1000
#: The `label` of text rows that score a title's own product (not a label field).
OWN_PRODUCT = "product"
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"
RESULTS_FORMAT = 1
#: Queries per FAISS call: large enough to batch, small enough to bound memory.
SEARCH_BATCH = 512
#: Neighbours kept per image query and model (the Compare page's precision@10 per label value).
NEIGHBOURS_KEPT = 10


@dataclass
class EvaluationResult:
    """What `evaluate_catalogue` measured.

    `rows`: dicts {"model", "task" ("image"|"text"), "label", "metric" ("precision"|"recall"|
    "map"|"chance"), "k", "value"}. `score_samples`: {model: the top-k cosine scores of every
    image query, flattened}, for score-distribution charts. `manifest`: what was measured
    (models with weights ids and index fingerprints, sample sizes and ids, seed, ks, time).
    `neighbours`: {model: one list of neighbour ids per image query, in the order of
    `manifest["image_queries"]["ids"]`} (empty in results saved before they were kept).
    """

    rows: list[dict]
    score_samples: dict[str, list[float]]
    manifest: dict
    text_score_samples: dict[str, list[float]] = field(default_factory=dict)
    neighbours: dict[str, list[list[str]]] = field(default_factory=dict)

    def value(self, model: str, task: str, label: str, metric: str, k: int) -> float | None:
        for row in self.rows:
            if (row["model"], row["task"], row["label"], row["metric"], row["k"]) == (
                model,
                task,
                label,
                metric,
                k,
            ):
                return row["value"]
        return None

    def table(self):
        """The rows as a pandas DataFrame (one row per figure)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["model", "task", "label", "metric", "k", "value"])

    def to_json(self) -> dict:
        return {
            "format": RESULTS_FORMAT,
            "manifest": self.manifest,
            "rows": self.rows,
            "score_samples": self.score_samples,
            "text_score_samples": self.text_score_samples,
            "neighbours": self.neighbours,
        }


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in ks}))
    except (TypeError, ValueError):
        raise EmbeddingsError(f"ks must be whole numbers (got {ks!r})") from None
    if not ks or ks[0] < 1:
        raise EmbeddingsError(f"ks must be whole numbers of at least 1 (got {ks!r})")
    return ks


def _sample(pool: list[str], size: int, rng: np.random.Generator) -> list[str]:
    """Up to `size` ids of `pool` drawn without replacement, kept in pool order."""
    if len(pool) <= size:
        return list(pool)
    chosen = np.sort(rng.choice(len(pool), size, replace=False))
    return [pool[i] for i in chosen]


def _search(index: ModelIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the top k for each query, in batches."""
    scores, rows = [], []
    for start in range(0, len(queries), SEARCH_BATCH):
        s, r = index.search(queries[start : start + SEARCH_BATCH], k)
        scores.append(s)
        rows.append(r)
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores), np.concatenate(rows)


def _drop_self(
    rows: np.ndarray, scores: np.ndarray, own: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own row from its k + 1 results (or the last one if it is absent)."""
    is_self = rows == own[:, None]
    absent = ~is_self.any(axis=1)
    is_self[absent, -1] = True  # the query was outranked by k + 1 exact duplicates
    # Only the first occurrence counts as self (a row appears at most once per result list).
    keep = ~is_self
    return rows[keep].reshape(len(rows), k), scores[keep].reshape(len(rows), k)


def _label_codes(
    catalogue: Catalogue, ids: Sequence[str], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a label over `ids` (-1 when empty) and each code's count."""
    values = (
        catalogue.items[label]
        .reindex(list(ids))
        .fillna("")
        .astype(str)
        .str.strip()
        .to_numpy(dtype=object)
    )
    known = values != ""
    codes = np.full(len(values), -1, dtype=np.int64)
    if known.any():
        _, inverse = np.unique(values[known], return_inverse=True)
        codes[known] = inverse
    counts = (
        np.bincount(codes[known], minlength=int(codes.max()) + 1)
        if known.any()
        else np.zeros(0, np.int64)
    )
    return codes, counts


def _codes_at(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Label codes of result rows; FAISS's -1 padding (no result) gets -2, which matches nothing."""
    return np.where(rows >= 0, codes[np.maximum(rows, 0)], -2)


def image_metrics(
    retrieved: np.ndarray,
    query_codes: np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    n_items: int,
    ks: Sequence[int],
) -> dict[tuple[str, int], float] | None:
    """Leave-one-out label metrics (see the module docstring) for one label field.

    `retrieved` (q, K): result rows with the query removed; `query_codes` (q,): the queries'
    label codes; `codes`/`counts`: every row's code and each code's count. None when no
    query has a relevant product.
    """
    relevant_total = (
        np.where(query_codes >= 0, counts[np.maximum(query_codes, 0)] - 1, 0)
        if len(counts)
        else np.zeros(len(query_codes), np.int64)
    )
    usable = (query_codes >= 0) & (relevant_total > 0)
    if not usable.any():
        return None
    hits = (_codes_at(codes, retrieved[usable]) == query_codes[usable, None]).astype(np.float64)
    relevant_total = relevant_total[usable].astype(np.float64)
    cumulative = np.cumsum(hits, axis=1)
    precision_at_i = cumulative / np.arange(1, hits.shape[1] + 1)
    out: dict[tuple[str, int], float] = {}
    chance = float(np.mean(relevant_total / (n_items - 1)))
    for k in ks:
        found = cumulative[:, k - 1]
        out["precision", k] = float(np.mean(found / k))
        out["recall", k] = float(np.mean(found / relevant_total))
        average_precision = (hits[:, :k] * precision_at_i[:, :k]).sum(axis=1) / np.minimum(
            k, relevant_total
        )
        out["map", k] = float(np.mean(average_precision))
        out["chance", k] = chance
    out["queries", 0] = int(usable.sum())
    return out


def _text_encoder_loader(catalogue: Catalogue, load_embedder: Callable[[str], object] | None):
    from embeddings.models import load_model
    from embeddings.search.searcher import default_text_encoder

    embedder_of = load_embedder or cache(lambda model_id: load_model(model_id))
    return lambda model_id: default_text_encoder(catalogue, model_id, embedder_of)


class _Rows(list):
    """The result rows being gathered, one figure each."""

    def add(self, model_id: str, task: str, label: str, metric: str, k: int, value: float) -> None:
        self.append(
            {
                "model": model_id,
                "task": task,
                "label": label,
                "metric": metric,
                "k": int(k),
                "value": round(float(value), 6),
            }
        )


def evaluate_catalogue(
    catalogue: Catalogue,
    models: Sequence[str] | None = None,
    *,
    queries: int = DEFAULT_QUERIES,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    progress: ProgressFn | None = None,
    load_embedder: Callable[[str], object] | None = None,
) -> EvaluationResult:
    """Measure every model in `models` (default: every built one) on both tasks.

    `queries`: products sampled per task (all of them when the catalogue is smaller).
    `progress(done, total)` is called after each (model, task) step. `load_embedder(model_id)`
    loads a model with a native text tower (default `embeddings.models.load_model`). A model
    whose text encoder cannot be loaded (no bridge, a stale bridge, weights unavailable) gets
    image figures only, and the reason is kept in `manifest["skipped_text"]`. Raises
    `IndexMissingError`/`IndexMismatchError` when a model's index is missing or out of date.
    """
    from embeddings.index.opening import built_models, open_index

    started = time.perf_counter()
    ks = _check_ks(ks)
    if int(queries) < 1:
        raise EmbeddingsError(f"--queries must be at least 1 (got {queries})")
    models = list(models) if models else built_models(catalogue)
    if not models:
        raise EmbeddingsError(
            f"catalogue {catalogue.name!r} has no built model to evaluate; build one with "
            f"python -m embeddings build --catalog {catalogue.directory} --models pixels"
        )
    indexes = {m: open_index(catalogue, m) for m in models}
    text_encoders, skipped_text = _text_encoders(catalogue, models, load_embedder)
    steps = _Steps(len(models) + len(text_encoders), progress)
    rows = _Rows()
    image = _image_task(catalogue, indexes, int(queries), seed, ks, rows, steps)
    text = _text_task(catalogue, indexes, text_encoders, int(queries), seed, ks, rows, steps)
    manifest = {
        "format": RESULTS_FORMAT,
        "catalogue": {
            "name": catalogue.name,
            "fingerprint": catalogue.fingerprint,
            "count": len(catalogue),
        },
        "models": {m: _model_entry(catalogue, m, indexes[m], text_encoders.get(m)) for m in models},
        "seed": int(seed),
        "ks": list(ks),
        "queries_requested": int(queries),
        "image_queries": image["queries"],
        "text_queries": text["queries"],
        "label_fields": list(catalogue.label_fields),
        "skipped_text": skipped_text,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return EvaluationResult(
        list(rows), image["scores"], manifest, text["scores"], image["neighbours"]
    )


def image_figures(
    catalogue: Catalogue,
    indexes: dict[str, ModelIndex],
    *,
    queries: int = DEFAULT_QUERIES,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
) -> EvaluationResult:
    """The image-to-image task alone over indexes already opened (benchmarks compare variants
    of a model, e.g. two fusions of the same parts, under names of their own)."""
    rows = _Rows()
    image = _image_task(
        catalogue, indexes, int(queries), seed, _check_ks(ks), rows, _Steps(len(indexes), None)
    )
    manifest = {"image_queries": image["queries"], "seed": int(seed), "ks": list(ks)}
    return EvaluationResult(list(rows), image["scores"], manifest, {}, image["neighbours"])


class _Steps:
    """Counts finished (model, task) steps as `Progress` events."""

    def __init__(self, total: int, progress: ProgressFn | None):
        self.done, self.total, self.progress = 0, total, progress or no_progress

    def advance(self) -> None:
        self.done += 1
        self.progress(Progress("evaluate", None, self.done, self.total, "model and task steps"))


def _text_encoders(catalogue: Catalogue, models: list[str], load_embedder) -> tuple[dict, dict]:
    """The text encoder of every model that answers text, and why the others do not."""
    load_text = _text_encoder_loader(catalogue, load_embedder)
    encoders, skipped = {}, {}
    for model_id in models:
        try:
            encoders[model_id] = load_text(model_id)
        except EmbeddingsError as exc:
            skipped[model_id] = str(exc)
    return encoders, skipped


def _image_task(
    catalogue: Catalogue,
    indexes: dict[str, ModelIndex],
    queries: int,
    seed: int,
    ks: tuple[int, ...],
    rows: _Rows,
    steps: _Steps,
) -> dict:
    """Leave-one-out image queries: the same sampled products for every model."""
    in_all = set.intersection(*(set(index.ids) for index in indexes.values()))
    pool = [i for i in catalogue.ids if i in in_all]
    image_ids = _sample(pool, queries, np.random.default_rng([seed, 0]))
    per_label: dict[str, dict[str, int]] = {}
    scores_of: dict[str, list[float]] = {}
    neighbours: dict[str, list[list[str]]] = {}
    for model_id, index in indexes.items():
        usable_ks = tuple(k for k in ks if k <= len(index) - 1)
        if image_ids and usable_ks:
            own = np.array([index.row_of[i] for i in image_ids], dtype=np.int64)
            scores, found = _search(index, index.reconstruct_batch(own), usable_ks[-1] + 1)
            found, scores = _drop_self(found, scores, own, usable_ks[-1])
            scores_of[model_id] = [round(float(s), 4) for s in scores.ravel()]
            neighbours[model_id] = _neighbour_ids(index, found[:, :NEIGHBOURS_KEPT])
            for label in catalogue.label_fields:
                codes, counts = _label_codes(catalogue, index.ids, label)
                figures = image_metrics(found, codes[own], codes, counts, len(index), usable_ks)
                if figures is None:
                    continue
                per_label.setdefault(label, {})[model_id] = figures.pop(("queries", 0))
                for (metric, k), value in figures.items():
                    rows.add(model_id, "image", label, metric, k, value)
        steps.advance()
    return {
        "scores": scores_of,
        "neighbours": neighbours,
        "queries": {
            "sampled": len(image_ids),
            "population": len(pool),
            "ids": image_ids,
            "per_label": per_label,
        },
    }


def _neighbour_ids(index: ModelIndex, found: np.ndarray) -> list[list[str]]:
    """Result rows as catalogue ids, per query (padding dropped)."""
    return [[index.ids[row] for row in rows if row >= 0] for rows in found.tolist()]


def _text_query_ids(catalogue: Catalogue, indexes: dict, encoders: dict, queries: int, seed: int):
    """Titled products every text model holds; for bridges, only titles none of them trained on."""
    titles = catalogue.items["title"].astype(str).str.strip()
    pool = set(titles.index[titles != ""])
    for model_id in encoders:
        pool &= set(indexes[model_id].ids)
    bridged = [m for m, e in encoders.items() if getattr(e, "kind", "") == "bridge"]
    bridged = list(dict.fromkeys(_bridged_parts(bridged, encoders)))
    for model_id in bridged:
        pool &= set(read_holdout_ids(catalogue.bridge_dir(model_id)))
    kind = "titles held out of every bridge's training" if bridged else "all titled products"
    ids = _sample(
        [i for i in catalogue.ids if i in pool], queries, np.random.default_rng([seed, 1])
    )
    return ids, titles.reindex(ids).tolist(), kind


def _bridged_parts(models: list[str], encoders: dict):
    """The models whose text bridges `models` use (a fused model's bridged parts)."""
    for model_id in models:
        encoder = encoders[model_id]
        if isinstance(encoder, FusedEncoder):
            parts = dict(zip(fused_parts(model_id), encoder.parts, strict=True))
            yield from (p for p, e in parts.items() if getattr(e, "kind", "") == "bridge")
        else:
            yield model_id


def _text_vectors(
    catalogue: Catalogue, encoder, query_titles: list[str], cached: dict
) -> np.ndarray:
    if isinstance(encoder, FusedEncoder):  # each part's vectors, side by side
        return np.hstack(
            [_text_vectors(catalogue, part, query_titles, cached) for part in encoder.parts]
        )
    if isinstance(encoder, TextBridge):
        # The catalogue's title cache: the same MiniLM vectors encode_texts would compute.
        if "titles" not in cached:
            cached["titles"] = title_vectors(catalogue)
        return encoder.encode_sentence_vectors(
            cached["titles"].for_titles(query_titles), query_titles
        )
    return np.concatenate(
        [
            encoder.encode_texts(query_titles[s : s + SEARCH_BATCH])
            for s in range(0, len(query_titles), SEARCH_BATCH)
        ]
    )


def _text_task(
    catalogue: Catalogue,
    indexes: dict,
    encoders: dict,
    queries: int,
    seed: int,
    ks: tuple[int, ...],
    rows: _Rows,
    steps: _Steps,
) -> dict:
    """Titles as queries: recall of the title's own product, label precision of the top k."""
    if not encoders:
        return {"scores": {}, "queries": {"sampled": 0, "pool": None, "ids": []}}
    text_ids, query_titles, pool_kind = _text_query_ids(catalogue, indexes, encoders, queries, seed)
    scores_of: dict[str, list[float]] = {}
    cached: dict = {}
    for model_id, encoder in encoders.items():
        index = indexes[model_id]
        if text_ids:
            depth = min(ks[-1], len(index))
            scores, found = _search(
                index, _text_vectors(catalogue, encoder, query_titles, cached), depth
            )
            scores_of[model_id] = [round(float(s), 4) for s in scores.ravel()]
            own = np.array([index.row_of[i] for i in text_ids], dtype=np.int64)
            _text_figures(
                catalogue, index, model_id, found, own, [k for k in ks if k <= depth], rows
            )
        steps.advance()
    return {
        "scores": scores_of,
        "queries": {"sampled": len(text_ids), "pool": pool_kind, "ids": text_ids},
    }


def _text_figures(
    catalogue: Catalogue,
    index: ModelIndex,
    model_id: str,
    found: np.ndarray,
    own: np.ndarray,
    ks: list[int],
    rows: _Rows,
) -> None:
    n_items = len(index)
    for k in ks:
        rows.add(
            model_id,
            "text",
            OWN_PRODUCT,
            "recall",
            k,
            np.mean((found[:, :k] == own[:, None]).any(axis=1)),
        )
        rows.add(model_id, "text", OWN_PRODUCT, "chance", k, k / n_items)
    for label in catalogue.label_fields:
        codes, counts = _label_codes(catalogue, index.ids, label)
        query_codes = codes[own]
        usable = query_codes >= 0
        if not usable.any():
            continue
        chance = float(np.mean(counts[query_codes[usable]] / n_items))
        for k in ks:
            hits = _codes_at(codes, found[usable, :k]) == query_codes[usable, None]
            rows.add(model_id, "text", label, "precision", k, hits.mean())
            rows.add(model_id, "text", label, "chance", k, chance)


def _model_entry(catalogue: Catalogue, model_id: str, index: ModelIndex, encoder) -> dict:
    if isinstance(index, FusedIndex):  # what it fuses, each part described as a model
        encoders = encoder.parts if isinstance(encoder, FusedEncoder) else [None] * len(index.parts)
        return {
            "weights_id": index.weights_id,
            "index_type": index.manifest["index_type"],
            "count": len(index),
            "text": getattr(encoder, "kind", None),
            "fusion": index.method,
            "parts": {
                part.model_id: _model_entry(catalogue, part.model_id, part, part_encoder)
                for part, part_encoder in zip(index.parts, encoders, strict=True)
            },
        }
    entry = {
        "weights_id": index.weights_id,
        "index_fingerprint": index_identity(index.manifest),
        "index_type": index.manifest.get("index_type"),
        "count": len(index),
        "built_at": index.manifest.get("built_at"),
        "text": getattr(encoder, "kind", None),
    }
    if getattr(encoder, "kind", None) == "bridge":
        bridge = encoder.manifest
        entry["bridge"] = {
            "trained_at": bridge.get("trained_at"),
            "trained_on": bridge.get("trained_on"),
            "holdout": bridge.get("holdout"),
        }
    return entry


# -- saving and loading ----------------------------------------------------------------------
def results_dir(catalogue: Catalogue):
    return report_path(catalogue.directory, "")


def save_results(catalogue: Catalogue, result: EvaluationResult) -> dict:
    """Write `results.json` and `summary.md` under `<catalogue>/evaluation/` (each atomically).

    Returns {"json": path, "markdown": path}.
    """
    return save_report(
        catalogue, RESULTS_FILE, result.to_json(), SUMMARY_FILE, summary_markdown(result)
    )


def _records(models: dict) -> Iterator[Recorded]:
    """What each model's entry recorded (a fused model: each part's)."""
    for model_id, entry in models.items():
        if "parts" in entry:
            yield from _records(entry["parts"])
            continue
        bridged = entry.get("text") == "bridge"
        trained_at = entry.get("bridge", {}).get("trained_at")
        yield Recorded(model_id, entry.get("index_fingerprint") or "", bridged, trained_at)


def stale_reason(catalogue: Catalogue, manifest: dict) -> str | None:
    """Why saved results no longer describe the catalogue's indexes and bridges (None: current)."""
    fingerprint = manifest.get("catalogue", {}).get("fingerprint")
    return artefact_stale_reason(catalogue, fingerprint, _records(manifest.get("models", {})))


def load_results(catalogue: Catalogue) -> EvaluationResult | None:
    """The saved results, or None when there are none, they are unreadable, or stale."""
    data = read_report(catalogue, RESULTS_FILE, RESULTS_FORMAT)
    if data is None:
        return None
    manifest = data.get("manifest") or {}
    if stale_reason(catalogue, manifest) is not None:
        return None
    return EvaluationResult(
        data.get("rows", []),
        data.get("score_samples", {}),
        manifest,
        data.get("text_score_samples", {}),
        data.get("neighbours") or {},
    )


# -- reporting -------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    """Three decimals; tiny chance levels (10 / 44,441) keep two significant digits instead of
    0.000."""
    if value is None:
        return "–"
    return f"{value:.2g}" if 0 < abs(value) < 0.001 else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def summary_markdown(result: EvaluationResult) -> str:
    """A readable Markdown report of a result (the same figures as `rows`)."""
    manifest = result.manifest
    catalogue = manifest["catalogue"]
    lines = [
        f"# Retrieval quality: {catalogue['name']}",
        "",
        f"{catalogue['count']:,} products; seed {manifest['seed']}; measured "
        f"{manifest['created_at']} in {manifest['seconds']:.0f} s.",
        "",
    ]
    for model_id, entry in manifest["models"].items():
        text = {"native": "native text tower", "bridge": "text bridge"}.get(
            entry.get("text"), "no text queries"
        )
        lines.append(
            f"- `{model_id}`: {entry['count']:,} vectors ({entry['index_type']}), weights "
            f"`{entry['weights_id']}`, {text}"
        )
    lines += _image_section(result) + _text_section(result)
    for model_id, reason in manifest.get("skipped_text", {}).items():
        lines.append(f"\n`{model_id}`: no text figures ({reason})")
    return "\n".join(lines) + "\n"


def _image_section(result: EvaluationResult) -> list[str]:
    manifest, ks = result.manifest, result.manifest["ks"]
    image, big = manifest["image_queries"], ks[-1]
    lines = [
        "",
        "## Image to image (leave-one-out)",
        "",
        f"{image['sampled']:,} query products sampled of {image['population']:,}. precision@k, "
        "mAP@k (normalised by min(k, relevant)) and recall@k, where relevant = the other products "
        "sharing the query's label; chance = expected precision of a random ranking.",
        "",
    ]
    header = ["label", "model", *(f"P@{k}" for k in ks), *(f"mAP@{k}" for k in ks)]
    header += [f"R@{big}", "chance"]
    rows = []
    for label in manifest["label_fields"]:
        for model_id in manifest["models"]:
            value = partial(result.value, model_id, "image", label)
            if value("precision", ks[0]) is None:
                continue
            cells = [label, f"`{model_id}`"]
            cells += [_fmt(value("precision", k)) for k in ks]
            cells += [_fmt(value("map", k)) for k in ks]
            rows.append(cells + [_fmt(value("recall", big)), _fmt(value("chance", ks[0]))])
    return lines + _table(header, rows)


def _text_section(result: EvaluationResult) -> list[str]:
    manifest, ks = result.manifest, result.manifest["ks"]
    big = ks[-1]
    text_models = [m for m in manifest["models"] if manifest["models"][m].get("text")]
    lines = ["", "## Text to image", ""]
    if not text_models:
        return lines + ["No model evaluated here answers text queries."]
    lines += [
        f"{manifest['text_queries']['sampled']:,} product titles as queries "
        f"({manifest['text_queries']['pool']}). Recall@k: the title's own product is in the top "
        "k; label precision@k: share of the top k with the query product's label.",
        "",
    ]
    rows = []
    for model_id in text_models:
        value = partial(result.value, model_id, "text", OWN_PRODUCT)
        cells = [f"`{model_id}`", manifest["models"][model_id]["text"]]
        rows.append(cells + [_fmt(value("recall", k)) for k in ks] + [_fmt(value("chance", big))])
    lines += _table(["model", "via", *(f"R@{k}" for k in ks), f"chance R@{big}"], rows)
    k_label = 10 if 10 in ks else big
    lines += ["", f"Label precision@{k_label} of text queries (chance in brackets):", ""]
    rows = []
    for model_id in text_models:
        cells = [f"`{model_id}`"]
        for label in manifest["label_fields"]:
            value = result.value(model_id, "text", label, "precision", k_label)
            chance = result.value(model_id, "text", label, "chance", k_label)
            cells.append("–" if value is None else f"{value:.3f} ({chance:.3f})")
        rows.append(cells)
    return lines + _table(["model", *manifest["label_fields"]], rows)

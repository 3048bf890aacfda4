"""Fused models: a model id `A+B` ranks by fusing the ranked lists of models A and B.

A fused model needs no index of its own. `FusedIndex` is a `ModelIndex` over its parts' indexes,
so a fused id works wherever a model id does (search of every kind, steering, evaluation, the
app's picker and Compare page):

- its products are those every part holds (rows in the first part's order);
- its "vectors" are the parts' vectors side by side (`segments` gives each part's width), so a
  query for it is each part's query vector, concatenated, and each part answers in its own space;
- `search` asks every part for its top `depth` (default 100, at least k) and fuses the lists.

Two fusions, measured on the fashion set by `bench/bench_fusion.py` (README, "Fused models"):

- ``"zscore"`` (standardised scores, the default): each part's cosine scores are standardised
  over its own top-`depth` list for that query, z = (s - mean) / std, so a raw-pixel 0.95 and a
  CNN 0.6 count the same when each is as far above its model's usual top scores. A candidate
  found by one part only is scored exactly by the other (its stored vector times the query), not
  guessed. The fused score is the mean z over the parts.
- ``"rrf"`` (reciprocal rank fusion): sum over the parts of 1 / (60 + rank); a product absent
  from a part's list gets nothing from it. Scores are ignored, only ranks count.

Fused scores are not cosines: `Hit.score` of a fused model is the fused score (mean z, or the
RRF sum), higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from embeddings.errors import EmbeddingsError, QueryError
from embeddings.index.base import ModelIndex

SEPARATOR = "+"
#: Candidates each part contributes before fusing (raised to k when k is larger).
DEFAULT_DEPTH = 100
#: The constant of reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009).
RRF_K = 60
METHODS = ("zscore", "rrf")
#: Chosen by measurement (bench/bench_fusion.py): see the README's "Fused models".
DEFAULT_METHOD = "zscore"


# -- ids ---------------------------------------------------------------------------------------
def is_fused(model_id: str) -> bool:
    return SEPARATOR in str(model_id)


def fused_parts(model_id: str) -> list[str]:
    """The models a fused id names (`"a+b"` -> `["a", "b"]`); a plain id is its own one part."""
    return [part.strip() for part in str(model_id).split(SEPARATOR)]


def fused_id(parts: Sequence[str]) -> str:
    return SEPARATOR.join(parts)


def check_model_id(model_id: str) -> str:
    """`model_id` if it names a registered model or a fusion of two or more distinct ones.

    Raises `EmbeddingsError` naming the unknown part(s) and the fused id they came from.
    """
    from embeddings.models import get_spec, list_models

    model_id = str(model_id).strip()
    if not is_fused(model_id):
        get_spec(model_id)  # "unknown model 'x'; known models: ..."
        return model_id
    parts = fused_parts(model_id)
    known = [spec.id for spec in list_models()]
    unknown = [p for p in parts if p not in known]
    if unknown:
        names = " and ".join(repr(p) for p in unknown)
        raise EmbeddingsError(
            f"unknown model {names} in fused model {model_id!r}; a fused id joins two known "
            f"models with '+', e.g. efficientnet-lite0+pixels; known models: {', '.join(known)}"
        )
    if len(set(parts)) != len(parts):
        raise EmbeddingsError(
            f"fused model {model_id!r} names a model twice; join different models, "
            "e.g. efficientnet-lite0+pixels"
        )
    return fused_id(parts)


def fused_pairs(models: Sequence[str]) -> list[str]:
    """Every fusion of two of `models` (plain ids), in their order: what the app's picker offers."""
    plain = [m for m in models if not is_fused(m)]
    return [fused_id(pair) for pair in combinations(plain, 2)]


def missing_parts(model_id: str, built: Sequence[str]) -> list[str]:
    """The parts of `model_id` that have no index among `built`."""
    return [p for p in fused_parts(model_id) if p not in built]


# -- fusing ranked lists -------------------------------------------------------------------------
def rrf_scores(rank_lists: Sequence[np.ndarray], rrf_k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of ranked row lists (-1 = padding): {row: sum of 1/(rrf_k+rank)}."""
    fused: dict[int, float] = {}
    for rows in rank_lists:
        for rank, row in enumerate(rows, start=1):
            if row >= 0:
                fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (rrf_k + rank)
    return fused


def zscore_scores(
    rank_lists: Sequence[np.ndarray],
    score_lists: Sequence[np.ndarray],
    exact_scores,
) -> dict[int, float]:
    """Standardised score fusion: {row: mean over parts of (score - mean) / std}.

    Each part's mean and std come from its own list's scores. `exact_scores(part, rows)` gives
    a part's true scores of rows its list does not hold, so every candidate has every score.
    """
    candidates = sorted({int(r) for rows in rank_lists for r in rows if r >= 0})
    if not candidates:
        return {}
    position = {row: i for i, row in enumerate(candidates)}
    total = np.zeros(len(candidates), dtype=np.float64)
    for part, (rows, scores) in enumerate(zip(rank_lists, score_lists, strict=True)):
        valid = rows >= 0
        listed = dict(zip(rows[valid].tolist(), scores[valid].tolist(), strict=True))
        values = np.empty(len(candidates), dtype=np.float64)
        absent = [row for row in candidates if row not in listed]
        if absent:
            values[[position[r] for r in absent]] = exact_scores(part, np.array(absent))
        for row, score in listed.items():
            values[position[row]] = score
        own = scores[valid].astype(np.float64)
        spread = max(float(own.std()), 1e-6) if len(own) else 1.0
        total += (values - (float(own.mean()) if len(own) else 0.0)) / spread
    total /= len(rank_lists)
    return dict(zip(candidates, total.tolist(), strict=True))


def top_of(fused: dict[int, float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of a fused {row: score}: (scores, rows), ties broken by row, padded to k."""
    ranked = sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
    scores = np.full(k, -np.inf, dtype=np.float32)
    rows = np.full(k, -1, dtype=np.int64)
    for i, (row, score) in enumerate(ranked):
        rows[i], scores[i] = row, score
    return scores, rows


# -- the index -----------------------------------------------------------------------------------
class FusedIndex(ModelIndex):
    """A `ModelIndex` over several models' indexes that ranks by fusing their results."""

    backend = "fusion"

    def __init__(
        self,
        model_id: str,
        parts: Sequence[ModelIndex],
        *,
        method: str = DEFAULT_METHOD,
        depth: int = DEFAULT_DEPTH,
    ):
        if method not in METHODS:
            raise EmbeddingsError(f"unknown fusion {method!r}; fusions: {', '.join(METHODS)}")
        self.parts = list(parts)
        self.method, self.depth = method, int(depth)
        others = [set(p.ids) for p in self.parts[1:]]
        ids = [i for i in self.parts[0].ids if all(i in held for held in others)]
        super().__init__(model_id, _fused_manifest(model_id, self.parts, method, len(ids)), ids)
        #: fused row -> each part's row, and each part's row -> fused row (-1: not fused)
        self._part_rows = [np.array([p.row_of[i] for i in ids], dtype=np.int64) for p in self.parts]
        self._fused_rows = []
        for part, rows in zip(self.parts, self._part_rows, strict=True):
            back = np.full(len(part), -1, dtype=np.int64)
            back[rows] = np.arange(len(ids))
            self._fused_rows.append(back)
        self.native_filters = all(p.native_filters for p in self.parts)

    @property
    def part_ids(self) -> list[str]:
        return [p.model_id for p in self.parts]

    @property
    def segments(self) -> tuple[int, ...]:
        return tuple(p.dim for p in self.parts)

    def reconstruct_batch(self, rows: Sequence[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.hstack(
            [
                part.reconstruct_batch(own[rows])
                for part, own in zip(self.parts, self._part_rows, strict=True)
            ]
        ).astype(np.float32)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        filters: dict[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each part's top `depth` for its slice of each query, fused (`method`)."""
        queries = self.checked_queries(queries)
        k = self.clamped_k(k, rows)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        if k == 0:
            return out_scores, out_rows
        slices = self._split(queries)
        lists = [
            self._part_search(j, part_queries, max(self.depth, k), rows, filters)
            for j, part_queries in enumerate(slices)
        ]
        for q in range(len(queries)):
            rank_lists = [found[q] for _, found in lists]
            if self.method == "rrf":
                fused = rrf_scores(rank_lists)
            else:
                fused = zscore_scores(
                    rank_lists,
                    [scores[q] for scores, _ in lists],
                    lambda part, absent, q=q: self._exact(part, slices[part][q], absent),
                )
            out_scores[q], out_rows[q] = top_of(fused, k)
        return out_scores, out_rows

    def _split(self, queries: np.ndarray) -> list[np.ndarray]:
        edges = np.cumsum((0, *self.segments))
        return [queries[:, a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def _part_search(self, j: int, queries, depth: int, rows, filters):
        """Part j's (scores, fused rows) for its query slices; rows it cannot fuse become -1."""
        part = self.parts[j]
        if filters and part.native_filters:
            scores, found = part.search(queries, depth, filters=filters)
        else:
            allowed = None if rows is None else np.sort(self._part_rows[j][np.asarray(rows)])
            scores, found = part.search(queries, depth, rows=allowed)
        fused = np.where(found >= 0, self._fused_rows[j][np.maximum(found, 0)], -1)
        return np.where(fused >= 0, scores, -np.inf), fused

    def _exact(self, j: int, query: np.ndarray, fused_rows: np.ndarray) -> np.ndarray:
        """Part j's cosine of `query` with the stored vectors of these fused rows."""
        vectors = self.parts[j].reconstruct_batch(self._part_rows[j][fused_rows])
        return vectors @ np.asarray(query, dtype=np.float32)


def _fused_manifest(model_id: str, parts: Sequence[ModelIndex], method: str, count: int) -> dict:
    """A manifest describing the fusion (what evaluation records and the Catalogue page shows)."""
    return {
        "model_id": model_id,
        "weights_id": fused_id([p.weights_id for p in parts]),
        "dim": sum(p.dim for p in parts),
        "count": count,
        "metric": f"fused ({method})",
        "index_type": f"fusion ({method}) of {', '.join(p.model_id for p in parts)}",
        "catalogue_fingerprint": parts[0].manifest.get("catalogue_fingerprint"),
        "built_at": max(str(p.manifest.get("built_at")) for p in parts),
        "backend": "fusion",
        "parts": {p.model_id: p.manifest for p in parts},
    }


class FusedEncoder:
    """The parts' text or image encoders side by side: a query for a fused model."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        kinds = {getattr(p, "kind", "native") for p in self.parts}
        self.kind = "bridge" if "bridge" in kinds else "native"
        self.weights_id = fused_id([str(getattr(p, "weights_id", None)) for p in self.parts])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.hstack([p.encode_texts(texts) for p in self.parts]).astype(np.float32)

    def encode_images(self, images: Sequence) -> np.ndarray:
        return np.hstack([p.encode_images(images) for p in self.parts]).astype(np.float32)


def fused_encoder(model_id: str, load_part) -> FusedEncoder:
    """A `FusedEncoder` of each part's encoder (`load_part(part id)`); a part that cannot encode
    (no text tower and no bridge, say) makes the fused model unable to, with the part's reason."""
    parts = []
    for part in fused_parts(model_id):
        try:
            parts.append(load_part(part))
        except QueryError as exc:
            raise QueryError(f"fused model {model_id!r}: {exc}") from exc
    return FusedEncoder(parts)

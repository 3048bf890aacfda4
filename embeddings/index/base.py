"""The one interface of a loaded model index, whichever backend holds its vectors.

`embeddings.index.store.FaissIndex` (files in the catalogue, memory-mapped) and
`embeddings.index.milvus.MilvusIndex` (a Milvus collection) both derive from `ModelIndex`:
row-aligned `ids` and `row_of`, the manifest, stored vectors by row, and `search`. The checks
every backend needs (query dimensions, k) live here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from embeddings.errors import IndexMismatchError


def score_tolerance(dim: int, dtype=np.float32) -> float:
    """How far a cosine of two unit vectors, summed in `dtype` over `dim` terms, may stray from
    the exact value, whatever the summation order (BLAS kernel, SIMD width, thread split).

    The probabilistic rounding-error bound of a dot product, lambda * sqrt(d) * u (Higham and
    Mary, 2019), with lambda = 8 and u the unit roundoff of `dtype`, plus a few u for the
    normalisation of each vector. A worst-case bound (d * u) would be 120 times larger at 14,400
    dimensions and blur every threshold; observed errors sit well inside this one.
    """
    unit_roundoff = float(np.finfo(dtype).eps) / 2
    return (8.0 * float(np.sqrt(max(1, int(dim)))) + 4.0) * unit_roundoff


class ModelIndex(ABC):
    """A built model's index: search it with `search`, map rows to ids with `ids` / `row_of`.

    Label filters reach it as row numbers (`search(rows=...)`); an index that evaluates them
    itself (Milvus) says so with `native_filters = True` and takes `filters={label: value}`.
    """

    backend = ""
    native_filters = False
    #: Hits one query of `range_search` can return at most (None: unlimited); a query that
    #: reaches it may have lost some.
    range_limit: int | None = None

    def __init__(self, model_id: str, manifest: dict, ids: list[str]):
        self.model_id = model_id
        self.manifest = manifest
        self.ids = ids
        self.row_of = {item_id: row for row, item_id in enumerate(ids)}

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def weights_id(self) -> str:
        return self.manifest["weights_id"]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def segments(self) -> tuple[int, ...]:
        """Widths of the independently normalised parts of a vector: one model, one part (a
        fused model's vectors are its parts' side by side, see `embeddings.index.fused`)."""
        return (self.dim,)

    def vector(self, item_id: str) -> np.ndarray:
        """The stored vector of an item (float32, L2-normalised)."""
        return self.reconstruct_batch([self.row_of[item_id]])[0]

    @abstractmethod
    def reconstruct_batch(self, rows: Sequence[int]) -> np.ndarray:
        """Stored vectors of these row numbers, in order: float32 (len(rows), dim)."""

    @abstractmethod
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        filters: dict[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (n_queries, k'); rows of -1 are padding.

        `rows` restricts the search to those row numbers (a label filter worked out by the
        caller); `filters` ({label: value}) only for an index with `native_filters`.
        """

    def range_search(
        self, queries: np.ndarray, radius: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query positions, rows, scores) of every stored vector scoring at least `radius` with
        each query (a cosine; at most `range_limit` hits per query), for near-duplicates."""
        raise NotImplementedError(f"the {self.backend} index has no range search")

    def range_batch(self, wanted: int) -> int:
        """How many queries one `range_search` call should carry (a backend may cap it)."""
        return wanted

    def checked_queries(self, queries: np.ndarray) -> np.ndarray:
        """`queries` as a C-contiguous float32 (n, dim) array, refusing another model's vectors."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise IndexMismatchError(
                f"query vectors have {queries.shape[1]} dimensions but the {self.model_id!r} index "
                f"has {self.dim}: the query was embedded by another model"
            )
        return queries

    def clamped_k(self, k: int, rows: np.ndarray | None, cap: int | None = None) -> int:
        """k limited to what can be ranked: the index's size, or the allowed rows."""
        k = min(int(k), len(self.ids) if rows is None else len(rows))
        return max(0, k if cap is None else min(k, cap))

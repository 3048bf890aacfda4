"""Near-duplicate products: pairs of products whose cosine similarity is at least a threshold,
found with the model's index itself, and the groups they form.

- `find_pairs(index, threshold)` asks the index for every product's neighbours within the
  threshold: FAISS `range_search` (exact on a flat index, approximate like any search on HNSW),
  or the Milvus backend's range search (`radius` / `range_filter` search parameters; Milvus caps
  one query's results at 16,384, and the pairs record how many queries reached the cap). Scores
  within float rounding of the threshold count (`index.base.score_tolerance` of the model's
  dimension), so identical images (1.0 up to rounding) meet 1.0 at any dimension.
- `group_pairs` joins pairs into groups (connected components of the pair graph), largest first;
  a group's `min_score` is the lowest score among the pairs that link it (a chain A~B~C puts A
  and C in one group even when they are less similar to each other).
- `default_threshold(index)` is chosen from the model's own score distribution (README,
  "Near-duplicates"): scores of different models are not on one scale.
- Search results fold near-duplicates with the same cosine rule (`embeddings.search.hits`), at
  the model's default threshold.

Pairs found at a threshold (the model's `floor`) are saved in `<catalogue>/duplicates/<model>/`
(`embeddings.artefacts`), so the app can regroup them at any threshold above it without searching
again; a rebuild of the index makes them stale.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embeddings.artefacts import (
    index_identity,
    load_artefact,
    save_artefact,
    writing,
)
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError, QueryError, describe_os_error
from embeddings.index.base import ModelIndex, score_tolerance
from embeddings.index.opening import open_snapshot
from embeddings.progress import Progress, ProgressFn, no_progress

KIND = "duplicates"
PAIRS_FORMAT = 1
#: Products searched per range-search call (fewer where the index caps it: Milvus).
QUERY_BATCH = 512
#: Refuse a threshold that links more pairs than this (memory); raise the threshold instead.
MAX_PAIRS = 20_000_000
#: Sampled products whose nearest-neighbour score sets the default threshold.
THRESHOLD_SAMPLE = 1_000
#: A pair is a near-duplicate when its cosine distance (1 - score) is at most this share of the
#: median distance between a product and its nearest neighbour (see `default_threshold`).
DISTANCE_SHARE = 0.1
#: The lowest threshold the app offers (and saves pairs at), as a share of that median distance.
FLOOR_SHARE = 0.3


@dataclass(frozen=True)
class DuplicateGroup:
    """Products that are near-duplicates of each other, and the weakest link between them."""

    ids: list[str]
    min_score: float


@dataclass
class DuplicatePairs:
    """Every pair of products of one model scoring at least `floor`, as row numbers of `ids`."""

    model_id: str
    ids: list[str]
    first: np.ndarray  # int64 rows, first < second
    second: np.ndarray
    scores: np.ndarray  # float32
    floor: float
    manifest: dict = field(default_factory=dict)
    dim: int = 1  # the model's dimension: how much float rounding a threshold allows

    def groups(self, threshold: float) -> list[DuplicateGroup]:
        """The groups at `threshold` (which must be at least `floor`)."""
        eps = score_tolerance(self.dim)
        if threshold < self.floor - eps:
            raise QueryError(
                f"the {self.model_id!r} pairs were found at {self.floor:.4f} or above; "
                f"a threshold of {threshold:.4f} needs a new search"
            )
        keep = self.scores >= threshold - eps
        return group_pairs(self.ids, self.first[keep], self.second[keep], self.scores[keep])


# -- searching ---------------------------------------------------------------------------------
def find_pairs(
    index: ModelIndex, threshold: float, *, progress: ProgressFn | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(first rows, second rows, scores, facts) of every pair scoring at least `threshold`.

    Each pair appears once, first < second. `facts` records the search: backend, seconds,
    queries that hit Milvus's per-query cap. Raises `QueryError` above `MAX_PAIRS` pairs.
    """
    check_threshold(threshold)
    say = progress or no_progress
    radius = float(threshold) - score_tolerance(index.dim)
    total, started = len(index), time.perf_counter()
    parts, found_pairs, capped = [], 0, 0
    batch = index.range_batch(QUERY_BATCH)
    for start in range(0, total, batch):
        rows = np.arange(start, min(total, start + batch), dtype=np.int64)
        owners, found, scores = index.range_search(index.reconstruct_batch(rows), radius)
        if index.range_limit is not None:
            capped += int((np.bincount(owners, minlength=len(rows)) >= index.range_limit).sum())
        owners = rows[owners]
        other = (found >= 0) & (found != owners) & (scores >= radius)
        owners, found, scores = owners[other], found[other], scores[other]
        first, second = np.minimum(owners, found), np.maximum(owners, found)
        parts.append((first, second, scores.astype(np.float32)))
        found_pairs += len(first)
        if found_pairs > 2 * MAX_PAIRS:  # each pair is found from both ends
            raise QueryError(
                f"more than {MAX_PAIRS:,} pairs of {index.model_id!r} products score "
                f"{threshold:.4f} or more; choose a higher threshold"
            )
        message = f"range search at {threshold:.4f}"
        say(Progress("search", index.model_id, int(rows[-1]) + 1, total, message))
    first, second, scores = (
        np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3)
    )
    first, second, scores = _unique_pairs(first, second, scores, total)
    facts = {
        "backend": index.backend,
        "method": "milvus range search" if index.backend == "milvus" else "faiss range_search",
        "index_type": index.manifest.get("index_type"),
        "seconds": round(time.perf_counter() - started, 2),
        "capped_queries": int(capped),
    }
    return first, second, scores, facts


def check_threshold(threshold: float) -> float:
    """A cosine threshold, or a `QueryError` saying what a valid one is."""
    if not -1.0 <= float(threshold) <= 1.0:
        raise QueryError(f"a cosine threshold is between -1 and 1 (got {threshold})")
    return float(threshold)


def _unique_pairs(first, second, scores, n: int):
    """Each (first, second) once, keeping its highest score (HNSW may find it from one end)."""
    first = np.asarray(first, np.int64)
    second = np.asarray(second, np.int64)
    scores = np.asarray(scores, np.float32)
    if not len(first):
        return first, second, scores
    key = first * n + second
    order = np.lexsort((-scores, key))
    key, first, second, scores = key[order], first[order], second[order], scores[order]
    keep = np.ones(len(key), bool)
    keep[1:] = key[1:] != key[:-1]
    return first[keep], second[keep], scores[keep]


def group_pairs(
    ids: Sequence[str], first: np.ndarray, second: np.ndarray, scores: np.ndarray
) -> list[DuplicateGroup]:
    """Connected components of the pairs with 2 or more products, largest first (then the
    tightest, then by first id); members in row order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(first):
        return []
    n = len(ids)
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    linked = np.unique(np.concatenate([first, second]))
    groups: dict[int, list[int]] = {}
    for row in linked:
        groups.setdefault(int(labels[row]), []).append(int(row))
    weakest = np.full(n, np.inf)
    np.minimum.at(weakest, labels[first], scores)
    found = [
        DuplicateGroup([ids[r] for r in rows], float(weakest[component]))
        for component, rows in groups.items()
    ]
    found.sort(key=lambda g: (-len(g.ids), -g.min_score, g.ids[0]))
    return found


def products_in_groups(groups: Sequence[DuplicateGroup]) -> int:
    return sum(len(g.ids) for g in groups)


# -- thresholds --------------------------------------------------------------------------------
def nearest_neighbour_scores(index: ModelIndex, sample: int = THRESHOLD_SAMPLE, seed: int = 0):
    """Each sampled product's score with its nearest other product (float32 (sample,))."""
    n = len(index)
    if n < 2:
        return np.zeros(0, np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    scores, found = index.search(index.reconstruct_batch(rows), 2)
    own = found == rows[:, None]
    # The first hit that is not the product itself (identical vectors may rank it second).
    return np.where(own[:, 0], scores[:, 1], scores[:, 0]).astype(np.float32)


@dataclass(frozen=True)
class Thresholds:
    """A model's default near-duplicate threshold and the lowest one the app offers."""

    default: float
    floor: float
    median_nearest: float  # the median nearest-neighbour score it was derived from
    sample: int


def default_threshold(index: ModelIndex, *, seed: int = 0) -> Thresholds:
    """Thresholds from the model's nearest-neighbour scores (see `DISTANCE_SHARE`).

    With d the median cosine distance between a product and its nearest neighbour, the default
    is 1 - `DISTANCE_SHARE` * d: a pair counts as a near-duplicate when the two are ten times
    closer than products usually are to their closest other product. The floor is
    1 - `FLOOR_SHARE` * d. Both are rounded down to 4 decimals.
    """
    nearest = nearest_neighbour_scores(index, seed=seed)
    if not len(nearest):
        return Thresholds(1.0, 1.0, 1.0, 0)
    median = float(np.median(nearest))
    distance = max(0.0, 1.0 - median)

    def floor4(value: float) -> float:
        return float(np.floor(min(1.0, value) * 10_000) / 10_000)

    return Thresholds(
        floor4(1.0 - DISTANCE_SHARE * distance),
        floor4(1.0 - FLOOR_SHARE * distance),
        round(median, 6),
        len(nearest),
    )


# -- saved pairs -------------------------------------------------------------------------------
def search_hint(catalogue: Catalogue, model_id: str) -> str:
    return (
        f"find them: python -m embeddings duplicates --catalog {catalogue.directory} "
        f"--model {model_id}"
    )


def compute_pairs(
    index: ModelIndex,
    *,
    floor: float | None = None,
    progress: ProgressFn | None = None,
) -> DuplicatePairs:
    """Every pair scoring at least `floor` (default: the model's own floor), with a manifest."""
    thresholds = default_threshold(index)
    floor = thresholds.floor if floor is None else float(floor)
    first, second, scores, facts = find_pairs(index, floor, progress=progress)
    manifest = {
        "format": PAIRS_FORMAT,
        "model_id": index.model_id,
        "index": index_identity(index.manifest),
        "floor": floor,
        "default_threshold": thresholds.default,
        "model_floor": thresholds.floor,
        "median_nearest": thresholds.median_nearest,
        "threshold_sample": thresholds.sample,
        "pairs": len(first),
        **facts,
        "computed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return DuplicatePairs(
        index.model_id, list(index.ids), first, second, scores, floor, manifest, index.dim
    )


def save_pairs(catalogue: Catalogue, pairs: DuplicatePairs) -> None:
    """Swap the pairs in (the caller is inside `embeddings.artefacts.writing`)."""
    save_artefact(
        catalogue,
        KIND,
        pairs.model_id,
        arrays={
            "first": pairs.first.astype(np.int64),
            "second": pairs.second.astype(np.int64),
            "scores": pairs.scores.astype(np.float32),
        },
        ids=pairs.ids,
        manifest=pairs.manifest,
    )


def load_pairs(catalogue: Catalogue, model_id: str) -> DuplicatePairs:
    """The saved pairs of `model_id` (`IndexMissingError` if none, `StaleArtefactError` once
    the index was rebuilt)."""
    hint = search_hint(catalogue, model_id)
    manifest, arrays, ids = load_artefact(
        catalogue, KIND, model_id, ("first", "second", "scores"), hint
    )
    return DuplicatePairs(
        model_id,
        ids,
        arrays["first"],
        arrays["second"],
        arrays["scores"],
        float(manifest["floor"]),
        manifest,
        int(manifest["index"].get("dim") or 1),
    )


@dataclass
class DuplicateSearch:
    """What `find_duplicates` found: the groups at `threshold`, every pair at the floor, and why
    the pairs were not saved (None when they were, or when saving was not asked)."""

    groups: list[DuplicateGroup]
    pairs: DuplicatePairs
    threshold: float
    not_saved: str | None = None


def find_duplicates(
    catalogue_dir,
    model_id: str,
    threshold: float | None = None,
    *,
    save: bool = True,
    progress: ProgressFn | None = None,
) -> DuplicateSearch:
    """One model's near-duplicates: the CLI's and the app's one path.

    Searches at min(threshold, the model's floor) so the saved pairs also serve every threshold
    the app offers. With `save` they are then saved in the catalogue; when that cannot be done
    (a build holds the catalogue, a read-only folder) the groups are still returned, with the
    reason in `not_saved`: an hour of search on a large catalogue is never thrown away.
    """
    if threshold is not None:
        check_threshold(threshold)
    catalogue, indexes = open_snapshot(Catalogue.open(catalogue_dir).directory, [model_id])
    index = indexes[model_id]
    if isinstance(index, EmbeddingsError):
        raise index
    thresholds = default_threshold(index)
    threshold = thresholds.default if threshold is None else float(threshold)
    pairs = compute_pairs(index, floor=min(threshold, thresholds.floor), progress=progress)
    found = DuplicateSearch(pairs.groups(threshold), pairs, threshold)
    if save:
        (progress or no_progress)(Progress("save", model_id, 0, 1, "saving the pairs"))
        try:
            with writing(catalogue):
                save_pairs(catalogue, pairs)
        except (EmbeddingsError, OSError) as exc:
            found.not_saved = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    return found

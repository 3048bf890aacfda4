"""2-D maps of a model's embedding space, computed once and saved in the catalogue.

`compute_map(catalogue, index)` projects the model's stored vectors to 2-D with openTSNE (FFT-
accelerated t-SNE; why not UMAP: README, "Maps"), after a PCA to `PCA_DIMS` dimensions when the
vectors have more (raw pixels have 14,400). Above `MAX_POINTS` products it maps a sample
stratified by the catalogue's main label, and says so in the manifest (`sampled`).

Each map states how faithful it is (`faithfulness` in the manifest):

- `neighbours_kept`: over `FAITHFULNESS_SAMPLE` mapped products, the share of each one's
  `NEIGHBOURS` nearest neighbours in the embedding (cosine, exact, among the mapped products)
  that are also among its `NEIGHBOURS` nearest on the map (Euclidean); `chance` is what a random
  map would keep (k / (n - 1));
- `trustworthiness`: scikit-learn's `trustworthiness` (k = `NEIGHBOURS`, cosine) over a
  sub-sample of `TRUST_SAMPLE` products: 1 when no map neighbour is a stranger in the embedding.

A map is saved in `<catalogue>/maps/<model>/` (`coords.npy`, `ids.txt`, `manifest.json`; see
`embeddings.artefacts`): `load_map` refuses it once the index is rebuilt. `make_maps` is the one
path of the CLI (`python -m embeddings map`) and the app's Map page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embeddings.artefacts import (
    StaleArtefactError,
    index_identity,
    load_artefact,
    save_artefact,
    writing,
)
from embeddings.catalogue import Catalogue, stratified_sample
from embeddings.errors import EmbeddingsError, QueryError
from embeddings.index.base import ModelIndex
from embeddings.index.opening import built_models, open_snapshot
from embeddings.progress import Progress, ProgressFn, no_progress

KIND = "maps"
MAP_FORMAT = 1
METHOD = "openTSNE"
#: Catalogues above this many products are mapped on a stratified sample of this size. The Map
#: page draws a million points on the GPU; openTSNE's FFT layout grows about linearly with n.
MAX_POINTS = 1_000_000
#: Vectors with more dimensions are reduced by PCA to this many first.
PCA_DIMS = 50
#: The PCA is fitted on at most this many products (then applied to all).
PCA_FIT_ROWS = 10_000
NEIGHBOURS = 10
FAITHFULNESS_SAMPLE = 1_000
TRUST_SAMPLE = 2_000
#: Fewer products than this make no map worth drawing.
MIN_POINTS = 5
CHUNK_ROWS = 4_096
#: t-SNE iterations: the early-exaggeration phase, then the main one (openTSNE's defaults).
EXAGGERATION_ITER = 250
MAIN_ITER = 500
CALLBACK_EVERY = 25
THREADS_ABOVE = 5_000


@dataclass
class EmbeddingMap:
    """A model's map: `coords[i]` is where product `ids[i]` lies; `manifest` says how it was
    made and how faithful it is."""

    model_id: str
    ids: list[str]
    coords: np.ndarray  # float32 (n, 2)
    manifest: dict
    row_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.row_of = {item_id: row for row, item_id in enumerate(self.ids)}

    @property
    def sampled(self) -> bool:
        return bool(self.manifest.get("sampled"))


def compute_hint(catalogue: Catalogue, model_id: str) -> str:
    return (
        f"compute it: python -m embeddings map --catalog {catalogue.directory} --models {model_id}"
    )


def mapped_rows(
    catalogue: Catalogue, index: ModelIndex, max_points: int = MAX_POINTS, seed: int = 0
) -> np.ndarray:
    """Row numbers of the index to map: all of them, or a sample stratified by the main label."""
    if len(index) <= max_points:
        return np.arange(len(index), dtype=np.int64)
    items = catalogue.items.reindex(index.ids)
    items["_row"] = np.arange(len(index.ids))
    label = catalogue.main_label if catalogue.main_label in items else None
    if label is not None:
        items[label] = items[label].fillna("")
    chosen = stratified_sample(items, max_points, label=label, seed=seed)
    return chosen["_row"].to_numpy(dtype=np.int64)


def _chunks(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[start : start + CHUNK_ROWS] for start in range(0, len(rows), CHUNK_ROWS)]


def reduced_vectors(
    index: ModelIndex, rows: np.ndarray, seed: int, say: ProgressFn
) -> tuple[np.ndarray, dict]:
    """The vectors of `rows`, PCA-reduced to `PCA_DIMS` when they have more (float32)."""
    model_id, total = index.model_id, len(rows)
    if index.dim <= PCA_DIMS:
        parts = []
        for chunk in _chunks(rows):
            parts.append(index.reconstruct_batch(chunk))
            say(Progress("vectors", model_id, sum(map(len, parts)), total, "reading vectors"))
        return np.concatenate(parts).astype(np.float32), {"pca": None}
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(rows, size=min(PCA_FIT_ROWS, len(rows)), replace=False))
    components = min(PCA_DIMS, len(fit_rows))
    say(Progress("vectors", model_id, 0, total, f"fitting a PCA to {components} dimensions"))
    pca = PCA(components, svd_solver="auto", random_state=seed)
    pca.fit(index.reconstruct_batch(fit_rows))
    out = np.empty((total, components), np.float32)
    done = 0
    for chunk in _chunks(rows):
        out[done : done + len(chunk)] = pca.transform(index.reconstruct_batch(chunk))
        done += len(chunk)
        say(Progress("vectors", model_id, done, total, f"PCA to {components} dimensions"))
    kept = float(pca.explained_variance_ratio_.sum())
    return out, {"pca": {"dims": components, "fit_rows": len(fit_rows), "variance_kept": kept}}


def _neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k nearest other points (exact, FAISS) and their Euclidean distances."""
    import faiss

    flat = faiss.IndexFlatL2(points.shape[1])
    flat.add(points)
    squared, found = flat.search(points, k + 1)
    own = found == np.arange(len(points))[:, None]
    # Drop the point itself; identical points can push it out of the list: then drop the last.
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones(found.shape, bool)
    keep[np.arange(len(points)), drop] = False
    found = found[keep].reshape(len(points), k)
    distances = np.sqrt(np.maximum(squared[keep].reshape(len(points), k), 0.0))
    return found, distances


def project(points: np.ndarray, seed: int, model_id: str, say: ProgressFn) -> np.ndarray:
    """openTSNE's 2-D embedding of `points` (float32 (n, 2)), with progress per 25 iterations.

    The 3 x perplexity nearest neighbours t-SNE needs come from an exact FAISS search (faster
    here than openTSNE's own Annoy search, and exact).
    """
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    points = np.ascontiguousarray(points, dtype=np.float32)
    perplexity = perplexity_for(len(points))
    total = EXAGGERATION_ITER + MAIN_ITER
    calls = {"done": 0}

    def callback(iteration, error, embedding) -> bool:
        calls["done"] = min(total, calls["done"] + CALLBACK_EVERY)
        say(Progress("layout", model_id, calls["done"], total, "laying out the map (t-SNE)"))
        return False

    say(Progress("layout", model_id, 0, total, "finding neighbours for t-SNE"))
    found, distances = _neighbours(points, min(len(points) - 1, int(3 * perplexity)))
    affinities = PerplexityBasedNN(
        perplexity=perplexity,
        knn_index=PrecomputedNeighbors(found, distances),
        n_jobs=threads_for(len(points)),
        random_state=seed,
    )
    tsne = TSNE(
        n_components=2,
        early_exaggeration_iter=EXAGGERATION_ITER,
        n_iter=MAIN_ITER,
        n_jobs=threads_for(len(points)),
        random_state=seed,
        callbacks=callback,
        callbacks_every_iters=CALLBACK_EVERY,
        verbose=False,
    )
    return np.asarray(tsne.fit(points, affinities=affinities), dtype=np.float32)


def threads_for(n: int) -> int:
    """openTSNE's threads: one below `THREADS_ABOVE` points, where a parallel region costs more
    (tens of milliseconds per iteration on a busy machine) than the work it shares."""
    return max(1, os.cpu_count() or 1) if n > THREADS_ABOVE else 1


def perplexity_for(n: int) -> float:
    """t-SNE's usual perplexity of 30, lowered for tiny catalogues (it needs 3 x perplexity
    neighbours per point)."""
    return float(min(30.0, max(1.0, (n - 1) / 3.0)))


def _top_k_cosine(
    index: ModelIndex, rows: np.ndarray, sample: np.ndarray, k: int
) -> list[list[int]]:
    """For each sampled position, the positions (in `rows`) of its k nearest others by cosine."""
    queries = index.reconstruct_batch(rows[sample])
    best_scores = np.full((len(sample), 0), -np.inf, np.float32)
    best_pos = np.zeros((len(sample), 0), np.int64)
    start = 0
    for chunk in _chunks(rows):
        scores = queries @ index.reconstruct_batch(chunk).T
        positions = np.arange(start, start + len(chunk))
        scores[sample[:, None] == positions[None, :]] = -np.inf  # not itself
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_pos = np.concatenate([best_pos, np.broadcast_to(positions, scores.shape)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_pos = np.take_along_axis(best_pos, keep, axis=1)
        start += len(chunk)
    return best_pos.tolist()


def _top_k_on_map(coords: np.ndarray, sample: np.ndarray, k: int) -> list[list[int]]:
    import faiss

    flat = faiss.IndexFlatL2(2)
    flat.add(np.ascontiguousarray(coords, dtype=np.float32))
    _, found = flat.search(np.ascontiguousarray(coords[sample], dtype=np.float32), k + 1)
    return [
        [p for p in near if p != own and p >= 0][:k]
        for own, near in zip(sample, found, strict=True)
    ]


def faithfulness(
    index: ModelIndex, rows: np.ndarray, coords: np.ndarray, seed: int, say: ProgressFn
) -> dict:
    """How well the map keeps each product's neighbours (see the module docstring)."""
    from sklearn.manifold import trustworthiness

    n = len(rows)
    k = min(NEIGHBOURS, n - 1)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(FAITHFULNESS_SAMPLE, n), replace=False))
    say(Progress("faithfulness", index.model_id, 0, 2, f"comparing {k} nearest neighbours"))
    in_embedding = _top_k_cosine(index, rows, sample, k)
    on_map = _top_k_on_map(coords, sample, k)
    kept = float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(in_embedding, on_map, strict=True)])
    )
    say(Progress("faithfulness", index.model_id, 1, 2, "trustworthiness"))
    trust_sample = np.sort(rng.choice(n, size=min(TRUST_SAMPLE, n), replace=False))
    trust_k = min(k, (len(trust_sample) - 1) // 2)  # scikit-learn needs k < n / 2
    trust = (
        float(
            trustworthiness(
                index.reconstruct_batch(rows[trust_sample]),
                coords[trust_sample],
                n_neighbors=trust_k,
                metric="cosine",
            )
        )
        if trust_k >= 1
        else None
    )
    say(Progress("faithfulness", index.model_id, 2, 2, "done"))
    return {
        "neighbours": k,
        "neighbours_kept": round(kept, 4),
        "chance": round(k / (n - 1), 6),
        "sample": len(sample),
        "trustworthiness": None if trust is None else round(trust, 4),
        "trust_sample": len(trust_sample),
    }


def _distinct(points: np.ndarray) -> int:
    return len(np.unique(np.asarray(points, dtype=np.float32), axis=0))


def check_spread(points: np.ndarray, model_id: str, catalogue_name: str) -> None:
    """Refuse vectors a map cannot spread out: all of them the same (t-SNE's neighbour
    distances are then all zero and its layout undefined). A `QueryError` naming the model."""
    if len(points) and np.ptp(points, axis=0).max() <= 1e-6:
        raise QueryError(
            f"model {model_id!r} cannot be mapped in {catalogue_name!r}: all {len(points):,} "
            "of its vectors are the same (the model sees every product as the same picture), "
            "so there is nothing to lay out; other models may still tell them apart"
        )


def compute_map(
    catalogue: Catalogue,
    index: ModelIndex,
    *,
    max_points: int = MAX_POINTS,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> EmbeddingMap:
    """A new map of `index` (not saved: see `make_maps`)."""
    say = progress or no_progress
    if len(index) < MIN_POINTS:
        raise QueryError(
            f"model {index.model_id!r} has {len(index)} vectors in {catalogue.name!r}; "
            f"a map needs at least {MIN_POINTS}"
        )
    started = time.perf_counter()
    rows = mapped_rows(catalogue, index, max_points, seed)
    points, reduction = reduced_vectors(index, rows, seed, say)
    check_spread(points, index.model_id, catalogue.name)
    reduced_at = time.perf_counter()
    coords = project(points, seed, index.model_id, say)
    if not np.isfinite(coords).all():
        raise QueryError(
            f"model {index.model_id!r} cannot be mapped in {catalogue.name!r}: t-SNE found no "
            f"layout ({_distinct(points):,} distinct vectors among {len(points):,}: the "
            "model sees too many of the products as the same picture)"
        )
    projected_at = time.perf_counter()
    faithful = faithfulness(index, rows, coords, seed, say)
    manifest = {
        "format": MAP_FORMAT,
        "model_id": index.model_id,
        "index": index_identity(index.manifest),
        "method": METHOD,
        "perplexity": perplexity_for(len(rows)),
        "seed": seed,
        "products": len(index),
        "mapped": len(rows),
        "sampled": len(rows) < len(index),
        "sample_label": catalogue.main_label if len(rows) < len(index) else None,
        **reduction,
        "faithfulness": faithful,
        "seconds": {
            "vectors": round(reduced_at - started, 1),
            "layout": round(projected_at - reduced_at, 1),
            "faithfulness": round(time.perf_counter() - projected_at, 1),
        },
        "computed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return EmbeddingMap(index.model_id, [index.ids[r] for r in rows], coords, manifest)


def save_map(catalogue: Catalogue, result: EmbeddingMap) -> None:
    """Swap a computed map in (the caller is inside `embeddings.artefacts.writing`)."""
    save_artefact(
        catalogue,
        KIND,
        result.model_id,
        arrays={"coords": result.coords.astype(np.float32)},
        ids=result.ids,
        manifest=result.manifest,
    )


def load_map(catalogue: Catalogue, model_id: str) -> EmbeddingMap:
    """The saved map of `model_id`: `IndexMissingError` when there is none, `StaleArtefactError`
    (an `IndexMismatchError`) once the index has been rebuilt since; both say what to run."""
    hint = compute_hint(catalogue, model_id)
    manifest, arrays, ids = load_artefact(catalogue, KIND, model_id, ("coords",), hint)
    coords = arrays["coords"]
    if coords.shape != (len(ids), 2) or len(ids) != manifest.get("mapped"):
        raise StaleArtefactError(
            f"the saved map of {model_id!r} is damaged ({coords.shape} coordinates for "
            f"{len(ids)} ids); {hint}"
        )
    return EmbeddingMap(model_id, ids, coords.astype(np.float32, copy=False), manifest)


@dataclass
class MapOutcome:
    """What `make_maps` did for one model: "computed" (with the map) or "failed" (`message`)."""

    model_id: str
    status: str
    message: str = ""
    map: EmbeddingMap | None = None


def make_maps(
    catalogue_dir,
    models: Sequence[str] | None = None,
    *,
    max_points: int = MAX_POINTS,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> list[MapOutcome]:
    """Compute and save the maps of `models` (default: every built model) of a catalogue.

    Holds the catalogue's build lock throughout (`BuildBusyError` at once while a build runs). A
    model that fails (no index, too few products) is reported in its outcome; the others are
    computed and saved.
    """
    catalogue = Catalogue.open(catalogue_dir)
    models = list(models) if models else built_models(catalogue)
    if not models:
        raise EmbeddingsError(f"catalogue {catalogue.name!r} has no built model to map")
    outcomes = []
    with writing(catalogue):
        catalogue, indexes = open_snapshot(catalogue.directory, models)
        for model_id in models:
            index = indexes[model_id]
            try:
                if isinstance(index, EmbeddingsError):
                    raise index
                result = compute_map(
                    catalogue, index, max_points=max_points, seed=seed, progress=progress
                )
                (progress or no_progress)(Progress("save", model_id, 0, 1, "saving"))
                save_map(catalogue, result)
                (progress or no_progress)(Progress("save", model_id, 1, 1, "saved"))
                outcomes.append(MapOutcome(model_id, "computed", map=result))
            except EmbeddingsError as exc:
                outcomes.append(MapOutcome(model_id, "failed", str(exc)))
    return outcomes

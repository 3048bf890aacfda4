"""Training a catalogue's bridge from the model's own index vectors and the titles.

`fit_bridge` trains on vectors handed to it (a build passes the vectors it is about to commit, so
the index and its bridge go in place together) and stages the result; `train_bridge_for_catalogue`
trains from the committed index and puts the bridge in place at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from embeddings.bridge.artefact import (
    BRIDGE_FORMAT,
    TextBridge,
    check_bridge_manifest,
    commit_bridge,
    read_bridge_manifest,
    stage_bridge,
)
from embeddings.bridge.exclusion import ExcludedTitles
from embeddings.bridge.memory_fit import fit_memory
from embeddings.bridge.recipes import DEFAULT_RECIPE, MemoryOptions, check_recipe
from embeddings.bridge.scoring import HOLDOUT_QUERIES, holdout_scores, summarise
from embeddings.bridge.sentences import TEXT_DIM, TEXT_MODEL_ID, title_vectors
from embeddings.bridge.training import (
    DEFAULT_HOLDOUT_FRACTION,
    REDUCE_ABOVE,
    REDUCED_RANK,
    TrainOptions,
    holdout_titles,
    train_head,
)
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError, IndexMismatchError, IndexMissingError
from embeddings.index.store import load_vectors, read_manifest, rebuild_advice
from embeddings.locks import commit_lock
from embeddings.progress import Progress, ProgressFn, no_progress


@dataclass
class BridgeFit:
    """A trained bridge waiting in `staging` (None: the bridge in place is already up to date)."""

    model_id: str
    summary: str
    staging: Path | None


def _recipe_settings(recipe: str, memory_options, exclude: ExcludedTitles | None) -> dict:
    """The settings of a bridge that come from the catalogue's choices (recipe, exclusion)."""
    return {
        "excluded_titles_sha256": exclude.sha256 if exclude else None,
        "recipe": check_recipe(recipe),
        "memory": memory_options.__dict__ if recipe == "memory" else None,
    }


def fit_bridge(
    catalogue: Catalogue,
    model_id: str,
    *,
    ids: list[str],
    vectors: np.ndarray,
    weights_id: str,
    seed: int = 0,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    options: TrainOptions | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    exclude: ExcludedTitles | None = None,
    recipe: str = DEFAULT_RECIPE,
    memory_options: MemoryOptions | None = None,
) -> BridgeFit | None:
    """Train the text bridge of an image model on `vectors` (row-aligned with `ids`) and stage it.

    Returns None when no product has a title. The title vectors come from (and fill) the
    catalogue's MiniLM cache. Deterministic for a seed. A bridge already trained with the same
    settings on the same weights, catalogue version and titles is kept (`force` retrains it).
    Products carrying an `exclude`d title never reach training (see `bridge.exclusion`);
    `recipe` is one of `bridge.recipes.RECIPES`.
    """
    started = time.perf_counter()
    titles = _titles(catalogue, ids)
    if not (titles != "").any():
        return None
    say = progress or no_progress
    say(Progress("bridge", model_id, message="embedding titles (cached after the first time)"))
    cache = title_vectors(catalogue)
    options = options or TrainOptions()
    memory_options = memory_options or MemoryOptions()
    settings = {  # what makes a trained bridge the same one (`_up_to_date`)
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "options": options.__dict__,
        "titles_fingerprint": cache.fingerprint,
        "weights_id": weights_id,
        "catalogue_fingerprint": catalogue.fingerprint,
        **_recipe_settings(recipe, memory_options, exclude),
    }
    previous = _up_to_date(catalogue, model_id, settings) if not force else None
    if previous is not None:
        return BridgeFit(model_id, "up to date, " + summarise(previous), None)
    split = _split(catalogue, model_id, titles, cache, holdout_fraction, seed, exclude)
    say(Progress("bridge", model_id, message=f"training on {len(split.train_rows):,} titles"))
    weights, bias = train_head(
        cache.for_titles(titles[split.train_rows]),
        vectors[split.train_rows],
        seed=seed,
        options=options,
        progress=say,
        label=model_id,
    )
    manifest = _manifest(model_id, settings, weights, vectors.shape[1], split, exclude)
    memory, basis = None, None
    if recipe == "memory":
        say(Progress("bridge", model_id, message="building the memory of titles and labels"))
        memory, basis = fit_memory(
            catalogue, ids, vectors, titles, split.train_rows, cache, memory_options, seed
        )
        manifest["memory_texts"] = len(memory.texts)
    bridge = TextBridge(model_id, weights, bias, manifest, memory, basis)
    manifest["holdout"] = _holdout_figures(catalogue, ids, vectors, titles, split, cache, bridge)
    manifest["train_seconds"] = round(time.perf_counter() - started, 2)
    # To the microsecond: saved evaluations compare it to notice a retrained bridge, and a
    # retrain can land within the second of the training it replaces.
    manifest["trained_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    staging = stage_bridge(
        catalogue.bridge_dir(model_id),
        weights=weights,
        bias=bias,
        holdout_ids=[ids[r] for r in np.flatnonzero(split.is_held | split.is_excluded)],
        manifest=manifest,
        excluded_titles=list(exclude.titles) if exclude else None,
        memory=memory,
        basis=basis,
    )
    return BridgeFit(model_id, summarise(manifest), staging)


def _titles(catalogue: Catalogue, ids: list[str]) -> np.ndarray:
    """The products' titles, row-aligned with `ids` ("" for a product without one)."""
    titles = catalogue.items["title"].reindex(ids).fillna("").astype(str).str.strip()
    return titles.to_numpy(dtype=object)


def _manifest(model_id: str, settings: dict, weights, dim: int, split, exclude) -> dict:
    """A bridge's manifest before its memory and held-out figures are added."""
    return {
        "format": BRIDGE_FORMAT,
        "model_id": model_id,
        **settings,
        "dim": int(weights.shape[0]),
        "text_model": TEXT_MODEL_ID,
        "text_dim": TEXT_DIM,
        "method": _method(settings["recipe"], dim),
        "trained_on": int(len(split.train_rows)),
        "held_out_products": int(split.is_held.sum()),
        "held_out_titles": split.held_titles,
        "excluded_titles": exclude.record(int(split.is_excluded.sum())) if exclude else None,
    }


def _method(recipe: str, dim: int) -> str:
    method = (
        "linear head W x + b over frozen MiniLM title vectors, ridge start, symmetric "
        "InfoNCE against the index's image vectors"
    )
    if dim > REDUCE_ABOVE:
        method += f", rank {REDUCED_RANK} principal subspace"
    if recipe == "memory":
        method += (
            "; mixed with a memory of the training titles and label sentences (nearest texts "
            "by MiniLM and TF-IDF cosine, mean image vector of their products)"
        )
    return method


@dataclass
class _Split:
    """Which rows train the bridge, which are held out (scored), which are excluded."""

    train_rows: np.ndarray
    is_held: np.ndarray
    is_excluded: np.ndarray
    held_titles: int


def _split(catalogue, model_id, titles, cache, holdout_fraction, seed, exclude) -> _Split:
    titled = titles != ""
    held_titles = holdout_titles(cache.titles, fraction=holdout_fraction, seed=seed)
    is_excluded = np.zeros(len(titles), dtype=bool)
    if exclude:
        is_excluded = np.array([t in exclude for t in titles], dtype=bool)
    is_held = np.array([t in held_titles for t in titles], dtype=bool) & titled & ~is_excluded
    train_rows = np.flatnonzero(titled & ~is_held & ~is_excluded)
    if len(train_rows) < 2:
        raise EmbeddingsError(
            f"catalogue {catalogue.name!r} has {len(train_rows)} titled products to train "
            f"the {model_id!r} text bridge from; it needs at least 2"
        )
    return _Split(train_rows, is_held, is_excluded, len(held_titles))


def _up_to_date(catalogue: Catalogue, model_id: str, settings: dict) -> dict | None:
    """The manifest of the bridge in place when it was trained with exactly these settings."""
    previous = read_bridge_manifest(catalogue.bridge_dir(model_id))
    if previous is None or any(previous.get(key) != value for key, value in settings.items()):
        return None
    try:
        check_bridge_manifest(previous, catalogue=catalogue, model_id=model_id)
    except EmbeddingsError:
        return None
    return previous


def _holdout_figures(catalogue, ids, vectors, titles, split: _Split, cache, bridge) -> dict:
    """Held-out figures: one product per held-out title (a title shared by several products would
    make "its own product" ambiguous), up to HOLDOUT_QUERIES of them, drawn with the seed."""
    held_rows = np.flatnonzero(split.is_held)
    _, first = np.unique(titles[held_rows], return_index=True)
    distinct = held_rows[np.sort(first)]
    rng = np.random.default_rng(bridge.manifest["seed"])
    if len(distinct) > HOLDOUT_QUERIES:
        distinct = np.sort(rng.choice(distinct, HOLDOUT_QUERIES, replace=False))
    if len(distinct) < 2:
        return {}
    label = catalogue.main_label
    labels = (
        catalogue.items[label].reindex([ids[r] for r in distinct]).fillna("").to_numpy(dtype=object)
        if label
        else None
    )
    query_titles = list(titles[distinct])
    queries = bridge.encode_sentence_vectors(cache.for_titles(query_titles), query_titles)
    return {**holdout_scores(queries, vectors[distinct], labels), "label": label}


def train_bridge_for_catalogue(catalogue: Catalogue, model_id: str, **options) -> str | None:
    """Train the bridge of a model from its committed index and put it in place.

    `options` are `fit_bridge`'s. Returns a one-line summary (held-out figures beside chance),
    or None when no product of the index has a title.
    """
    model_dir = catalogue.model_dir(model_id)
    index_manifest = read_manifest(model_dir)
    hint = rebuild_advice(catalogue.directory, model_id)
    if index_manifest is None:
        raise IndexMissingError(
            f"no index for model {model_id!r} in catalogue {catalogue.name!r}; "
            f"build it first: {hint[len('rebuild it: ') :]}"
        )
    if (
        index_manifest.get("model_id") != model_id
        or index_manifest.get("catalogue_fingerprint") != catalogue.fingerprint
    ):
        raise IndexMismatchError(
            f"the {model_id!r} index of catalogue {catalogue.name!r} is out of date; {hint}"
        )
    ids, vectors = load_vectors(model_dir)
    fit = fit_bridge(
        catalogue,
        model_id,
        ids=ids,
        vectors=vectors,
        weights_id=index_manifest["weights_id"],
        **options,
    )
    if fit is None:
        return None
    if fit.staging is not None:
        with commit_lock(catalogue.directory, exclusive=True):
            commit_bridge(fit.staging, catalogue.bridge_dir(model_id))
    return fit.summary

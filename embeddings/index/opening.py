"""A catalogue's indexes: which models are built, and opening them (one model, a fused id, or
several as one build left them).

Every reader opens indexes here: the Searcher's loaders, the evaluation, maps, near-duplicates,
publishing and the app's cached resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embeddings.catalogue import Catalogue
from embeddings.errors import CatalogueChangedError, EmbeddingsError, IndexMismatchError
from embeddings.index.base import ModelIndex
from embeddings.index.fused import FusedIndex, check_model_id, fused_parts, is_fused
from embeddings.index.store import load_model_index, read_manifest
from embeddings.locks import commit_lock


def built_models(catalogue: Catalogue) -> list[str]:
    """Ids of the models with an index in this catalogue (whatever its state), sorted."""
    from embeddings.models.naming import folder_name

    models_dir = catalogue.directory / "models"
    if not models_dir.is_dir():
        return []
    found = []
    for folder in models_dir.iterdir():
        if not folder.is_dir() or folder.name.startswith(".") or "." in folder.name:
            continue
        manifest = read_manifest(folder)
        if manifest is None:
            continue
        # A family id lives in a folder named after it (`naming.folder_name`); the id is the
        # manifest's. A folder whose manifest names another model is not that model's index.
        model_id = manifest.get("model_id") or folder.name
        if folder_name(model_id) == folder.name:
            found.append(model_id)
    return sorted(found)


def open_index(
    catalogue: Catalogue, model_id: str, *, mmap: bool = True, lock: bool = True
) -> ModelIndex:
    """Load and validate a model's index in a catalogue, on the backend its build recorded.

    A FAISS index is memory-mapped by default (`mmap`): opening costs no copy of the vectors,
    pages come in on first use and stay shared with the page cache. Raises
    `CatalogueChangedError` when the index belongs to a newer build of the catalogue than
    `catalogue` (open the catalogue again), `IndexMismatchError` when it is really out of date.
    A fused id (`a+b`, see `embeddings.index.fused`) opens its parts and fuses them.
    """
    if is_fused(model_id):
        model_id = check_model_id(model_id)
        parts = [open_index(catalogue, p, mmap=mmap, lock=lock) for p in fused_parts(model_id)]
        return FusedIndex(model_id, parts)
    try:
        return load_model_index(
            catalogue.model_dir(model_id),
            catalogue_fingerprint=catalogue.fingerprint,
            model_id=model_id,
            mmap=mmap,
            lock=lock,
        )
    except IndexMismatchError as exc:
        now = catalogue.on_disk_fingerprint()
        if now is not None and now != catalogue.fingerprint:
            raise CatalogueChangedError(
                f"catalogue {catalogue.name!r} was rebuilt while it was open; open it again"
            ) from exc
        raise


def open_snapshot(
    directory: Path, models: Sequence[str], *, mmap: bool = True
) -> tuple[Catalogue, dict[str, ModelIndex | EmbeddingsError]]:
    """The catalogue in `directory` and the indexes of `models` as one build left them.

    Opened under the catalogue's shared commit lock, so a build committing meanwhile waits. A
    model whose index cannot be opened maps to its error (the others still answer).
    """
    with commit_lock(directory):
        catalogue = Catalogue.open(directory, lock=False)
        indexes: dict[str, ModelIndex | EmbeddingsError] = {}
        plain = dict.fromkeys(p for model_id in models for p in fused_parts(model_id))
        for model_id in plain:  # each model once, also when fused models name it
            try:
                indexes[model_id] = open_index(catalogue, model_id, mmap=mmap, lock=False)
            except EmbeddingsError as exc:
                indexes[model_id] = exc
    for model_id in models:
        if is_fused(model_id):
            indexes[model_id] = fuse_opened(model_id, indexes)
    return catalogue, {m: indexes[m] for m in models}


def fuse_opened(
    model_id: str, indexes: dict[str, ModelIndex | EmbeddingsError]
) -> FusedIndex | EmbeddingsError:
    """The fused index of `model_id` over its parts' opened indexes, or the first part's error."""
    for part in fused_parts(model_id):
        if isinstance(indexes.get(part), EmbeddingsError):
            error = indexes[part]
            return type(error)(f"fused model {model_id!r}: {error}")
    return FusedIndex(model_id, [indexes[p] for p in fused_parts(model_id)])

"""Artefacts computed from a model's built index and saved beside it (maps, duplicate pairs).

Each lives in `<catalogue>/<kind>/<model id>/`: numpy arrays, `ids.txt` (row-aligned catalogue
ids) and `manifest.json`, which records the identity of the index it came from (`index`: model,
weights, dimensions, count, the catalogue's fingerprint and the index's build time). Rebuilding
the index changes that identity, so from then on the artefact is stale: readers refuse it with a
`StaleArtefactError` that says how to recompute it.

Writing follows the rules of builds (`embeddings.locks`, `embeddings.atomic`): the writer holds
the catalogue's build lock (one writer at a time, and the only one allowed to repair what a killed
writer left), writes a complete folder beside the old one and swaps it in under the exclusive
commit lock. Readers take the commit lock shared and never write.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.atomic import (
    fsync_files,
    recover_interrupted_swap,
    remove_staging_leftovers,
    staging_dir,
    swap_in,
)
from embeddings.catalogue import Catalogue
from embeddings.errors import IndexMismatchError, IndexMissingError
from embeddings.index.store import read_manifest
from embeddings.locks import build_lock, commit_lock

MANIFEST_FILE = "manifest.json"
IDS_FILE = "ids.txt"
#: What ties an artefact to the index it was computed from (with a hash of the whole manifest,
#: which tells two builds apart even within the same second).
IDENTITY_KEYS = ("model_id", "weights_id", "dim", "count", "catalogue_fingerprint", "built_at")
HASH_KEY = "manifest_sha256"
KINDS = ("maps", "duplicates")


class StaleArtefactError(IndexMismatchError):
    """A saved map or duplicate list was computed from an earlier build of the model's index."""


@dataclass(frozen=True)
class Step:
    """Progress of a long computation over one model, for a tqdm bar or `st.progress`."""

    model_id: str
    stage: str  # e.g. "vectors", "layout", "faithfulness", "search", "save"
    done: int = 0
    total: int = 0
    message: str = ""


ProgressFn = Callable[[Step], None]


def no_progress(step: Step) -> None:
    """The default progress callback: shows nothing."""


def index_identity(index_manifest: dict) -> dict:
    """The fields of an index manifest an artefact records, to notice a rebuild."""
    digest = hashlib.sha256(json.dumps(index_manifest, sort_keys=True).encode()).hexdigest()
    return {**{key: index_manifest.get(key) for key in IDENTITY_KEYS}, HASH_KEY: digest}


def artefact_dir(catalogue: Catalogue, kind: str, model_id: str) -> Path:
    from embeddings.models.naming import folder_name

    return catalogue.directory / kind / folder_name(model_id)


@contextmanager
def writing(catalogue: Catalogue) -> Iterator[None]:
    """Hold the catalogue's build lock and repair what a killed writer left in `maps/` and
    `duplicates/` (a half-swapped folder, staging folders). `BuildBusyError` when a build or
    another writer holds the lock."""
    with build_lock(catalogue.directory):
        for kind in KINDS:
            folder = catalogue.directory / kind
            if folder.is_dir():
                for old in folder.glob("*.old"):
                    recover_interrupted_swap(old.with_name(old.name[: -len(".old")]))
                remove_staging_leftovers(folder)
        yield


def save_artefact(
    catalogue: Catalogue,
    kind: str,
    model_id: str,
    *,
    arrays: dict[str, np.ndarray],
    ids: list[str],
    manifest: dict,
) -> Path:
    """Write an artefact folder and swap it in (the caller is inside `writing(catalogue)`).

    `manifest["index"]` must be the `index_identity` of the index it was computed from; when the
    index has changed since (it cannot while the build lock is held, but a manifest edited by
    hand can), nothing is swapped in and `StaleArtefactError` is raised.
    """
    target = artefact_dir(catalogue, kind, model_id)
    staging = staging_dir(target)
    try:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
        (staging / IDS_FILE).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        fsync_files(staging)
        with commit_lock(catalogue.directory, exclusive=True):
            current = read_manifest(catalogue.model_dir(model_id))
            if current is None or index_identity(current) != manifest["index"]:
                raise StaleArtefactError(
                    f"the {model_id!r} index changed while its {kind} were computed; run again"
                )
            swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_artefact_manifest(catalogue: Catalogue, kind: str, model_id: str) -> dict | None:
    """An artefact's manifest, or None when there is none (or it is unreadable)."""
    try:
        manifest = json.loads((artefact_dir(catalogue, kind, model_id) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check_current(catalogue: Catalogue, kind: str, model_id: str, manifest: dict, hint: str):
    """Refuse an artefact whose index was rebuilt (or removed) since it was computed."""
    index = read_manifest(catalogue.model_dir(model_id))
    if index is None:
        raise IndexMissingError(f"model {model_id!r} has no index in catalogue {catalogue.name!r}")
    recorded = manifest.get("index") or {}
    current = index_identity(index)
    if recorded != current or current["catalogue_fingerprint"] != catalogue.fingerprint:
        changed = [k for k in (*IDENTITY_KEYS, HASH_KEY) if recorded.get(k) != current.get(k)]
        raise StaleArtefactError(
            f"the saved {kind} of {model_id!r} were computed from an earlier build of its index "
            f"({', '.join(changed or ['catalogue'])} changed); {hint}"
        )


def load_artefact(
    catalogue: Catalogue, kind: str, model_id: str, names: tuple[str, ...], hint: str
) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """(manifest, arrays by name, ids) of a current artefact, read under the shared commit lock.

    `IndexMissingError` when there is none, `StaleArtefactError` when its index was rebuilt or
    its files are damaged; both messages end with `hint` (how to compute it).
    """
    folder = artefact_dir(catalogue, kind, model_id)
    with commit_lock(catalogue.directory):
        manifest = read_artefact_manifest(catalogue, kind, model_id)
        if manifest is None:
            raise IndexMissingError(
                f"no saved {kind} for {model_id!r} in {catalogue.name!r}; {hint}"
            )
        check_current(catalogue, kind, model_id, manifest, hint)
        try:
            arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in names}
            with open(folder / IDS_FILE, encoding="utf-8", newline="") as handle:
                ids = handle.read().split("\n")[:-1]
        except (OSError, ValueError) as exc:
            raise StaleArtefactError(
                f"the saved {kind} of {model_id!r} are damaged ({exc}); {hint}"
            ) from exc
    return manifest, arrays, ids

"""Results computed from a catalogue's built indexes, saved, and noticed as stale after a rebuild.

One protocol for all of them: each records the identity of every index (and text bridge) it was
computed from (`index_identity`: model, weights, dimensions, count, the catalogue's fingerprint,
the index's build time and a hash of its whole manifest), and a reader compares that record with
the indexes as they are now (`stale_reason`). Two shapes share it:

- **Per-model artefacts** (maps, duplicate pairs) live in `<catalogue>/<kind>/<model id>/`: numpy
  arrays, `ids.txt` (row-aligned catalogue ids) and `manifest.json`. Readers refuse a stale one
  with a `StaleArtefactError` that says how to recompute it (`save_artefact`, `load_artefact`).
- **Reports** over several models (the sampled evaluation, the KAGL text figures) are a JSON file
  and a Markdown summary in `<catalogue>/evaluation/` (`save_report`, `read_report`); a stale one
  reads as absent, and `stale_reason` says why.

Writing follows the rules of builds (`embeddings.locks`, `embeddings.atomic`): the writer holds
the catalogue's build lock (one writer at a time, and the only one allowed to repair what a killed
writer left), writes a complete folder beside the old one and swaps it in under the exclusive
commit lock. Readers take the commit lock shared and never write.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
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
    write_atomic,
)
from embeddings.bridge.artefact import read_bridge_manifest
from embeddings.catalogue import Catalogue
from embeddings.config import MANIFEST_FILE
from embeddings.errors import IndexMismatchError, IndexMissingError
from embeddings.index.store import read_manifest
from embeddings.locks import build_lock, commit_lock

IDS_FILE = "ids.txt"
#: What ties an artefact to the index it was computed from (with a hash of the whole manifest,
#: which tells two builds apart even within the same second).
IDENTITY_KEYS = ("model_id", "weights_id", "dim", "count", "catalogue_fingerprint", "built_at")
HASH_KEY = "manifest_sha256"
KINDS = ("maps", "duplicates")
#: The folder of a catalogue's reports (its name is on disk in catalogues and bundles).
REPORTS_DIR = "evaluation"


class StaleArtefactError(IndexMismatchError):
    """A saved map or duplicate list was computed from an earlier build of the model's index."""


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


# -- identities and staleness, for every kind ----------------------------------------------------
def legacy_fingerprint(index_manifest: dict) -> str:
    """The 16-hex identity evaluations saved before `index_identity` (still read, never written)."""
    keys = ("model_id", "weights_id", "catalogue_fingerprint", "count", "dim", "built_at")
    text = "\n".join(str(index_manifest.get(k)) for k in keys)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_matches(recorded, index_manifest: dict) -> bool:
    """Whether a recorded identity (an `index_identity`, or a legacy fingerprint) is this
    build's."""
    if isinstance(recorded, str):
        return recorded == legacy_fingerprint(index_manifest)
    return recorded == index_identity(index_manifest)


@dataclass(frozen=True)
class Recorded:
    """What a saved result recorded of one model: its index identity, and (for text results
    through a bridge) the bridge's `trained_at`."""

    model_id: str
    index: object = None  # an index_identity dict, a legacy fingerprint, or None: not recorded
    bridge: bool = False  # whether a text bridge was involved
    bridge_trained_at: str | None = None


def model_record(catalogue: Catalogue, model_id: str, *, bridge: bool = False) -> Recorded:
    """What a result computed now from `model_id` records (`bridge`: through its text bridge)."""
    manifest = read_manifest(catalogue.model_dir(model_id))
    trained_at = None
    if bridge:
        trained_at = (read_bridge_manifest(catalogue.bridge_dir(model_id)) or {}).get("trained_at")
    return Recorded(model_id, index_identity(manifest) if manifest else None, bridge, trained_at)


def stale_reason(
    catalogue: Catalogue, fingerprint: str | None, records: Iterator[Recorded] | list[Recorded]
) -> str | None:
    """Why a result no longer describes the catalogue (None: it is current): its products
    changed (`fingerprint` is the catalogue's at the time), an index was rebuilt or removed, or a
    bridge was retrained."""
    if fingerprint != catalogue.fingerprint:
        return "the catalogue's products changed since the evaluation"
    for record in records:
        if record.index is not None:
            manifest = read_manifest(catalogue.model_dir(record.model_id))
            if manifest is None:
                return f"model {record.model_id!r} has no index any more"
            if not identity_matches(record.index, manifest):
                return f"model {record.model_id!r} was rebuilt since the evaluation"
        if record.bridge:
            now = read_bridge_manifest(catalogue.bridge_dir(record.model_id)) or {}
            if now.get("trained_at") != record.bridge_trained_at:
                return f"the text bridge of {record.model_id!r} was retrained since the evaluation"
    return None


# -- reports: JSON + Markdown in <catalogue>/evaluation/ -------------------------------------------
def report_path(catalogue_dir: Path, file_name: str) -> Path:
    return Path(catalogue_dir) / REPORTS_DIR / file_name


def save_report(
    catalogue: Catalogue, file_name: str, data: dict, summary_name: str, summary: str
) -> dict:
    """Write a report's JSON and its Markdown summary, each atomically: {"json", "markdown"}."""
    json_path = report_path(catalogue.directory, file_name)
    markdown_path = report_path(catalogue.directory, summary_name)
    write_atomic(json_path, json.dumps(data))
    write_atomic(markdown_path, summary)
    return {"json": json_path, "markdown": markdown_path}


def read_report(catalogue: Catalogue, file_name: str, format_version: int) -> dict | None:
    """A saved report's JSON (a dict of that format), or None when absent or unreadable."""
    try:
        data = json.loads(report_path(catalogue.directory, file_name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != format_version:
        return None
    return data

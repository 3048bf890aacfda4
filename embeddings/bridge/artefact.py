"""A trained bridge on disk, and loading it back: `TextBridge`, its manifest and checks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embeddings.atomic import fsync_files, staging_dir, swap_in
from embeddings.bridge.memory import Memory, load_memory, save_memory
from embeddings.bridge.sentences import TEXT_DIM, encode_sentences
from embeddings.bridge.training import apply_head
from embeddings.catalogue import Catalogue
from embeddings.config import MANIFEST_FILE
from embeddings.errors import IndexMismatchError, IndexMissingError
from embeddings.index.store import read_manifest
from embeddings.lines import read_lines
from embeddings.models import l2_normalise

BRIDGE_FORMAT = 1
WEIGHTS_FILE = "weights.npy"
BIAS_FILE = "bias.npy"
HOLDOUT_FILE = "holdout_ids.txt"
#: The principal directions the memory's prototypes are stored in (wide image spaces only).
BASIS_FILE = "memory_basis.npy"
#: The titles a build kept out of training (`--bridge-exclude-titles`), one per line.
EXCLUDED_TITLES_FILE = "excluded_titles.txt"


class StaleBridgeError(IndexMismatchError):
    """A bridge was trained on vectors of other weights than the model's index holds now."""


class TextBridge:
    """A trained bridge: `encode_texts` maps texts into one model's image space.

    Satisfies `embeddings.search.searcher.TextEncoder` (`kind == "bridge"`).
    """

    kind = "bridge"

    def __init__(
        self,
        model_id: str,
        weights: np.ndarray,
        bias: np.ndarray,
        manifest: dict,
        memory: Memory | None = None,
        basis: np.ndarray | None = None,
    ):
        self.model_id = model_id
        self.weights = weights  # (d, 384)
        self.bias = bias  # (d,)
        self.manifest = manifest
        self.memory = memory  # the `memory` recipe's lookup (None: the head alone)
        self.basis = basis  # (d, rank): the memory's prototypes are in these coordinates

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def weights_id(self) -> str:
        """The weights of the image vectors it was trained on (checked against the index)."""
        return self.manifest.get("weights_id", "")

    @property
    def recipe(self) -> str:
        return self.manifest.get("recipe", "linear")

    def encode_sentence_vectors(
        self, text_vectors: np.ndarray, texts: Sequence[str] | None = None
    ) -> np.ndarray:
        """Image-space vectors (n, d), L2-normalised, from MiniLM vectors (n, 384) of `texts`.

        The `memory` recipe needs the texts themselves too (its lexical lookup).
        """
        head = apply_head(self.weights, self.bias, text_vectors)
        if self.memory is None:
            return head
        if texts is None or len(texts) != len(head):
            raise ValueError("a memory bridge needs the texts beside their MiniLM vectors")
        recalled = self.memory.prototype_mix(list(texts), text_vectors)
        if self.basis is not None:
            recalled = recalled @ self.basis.T
        share = float(self.manifest["memory"]["head_weight"])
        return l2_normalise(share * head + (1 - share) * recalled)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, d), L2-normalised, in the model's image space."""
        texts = list(texts)
        return self.encode_sentence_vectors(encode_sentences(texts), texts)


def retrain_hint(catalogue: Catalogue, model_id: str) -> str:
    return (
        f"retrain it: python -m embeddings bridge --catalog {catalogue.directory} "
        f"--models {model_id}"
    )


def check_bridge_manifest(manifest: dict, *, catalogue: Catalogue, model_id: str) -> None:
    """Raise `StaleBridgeError` unless the bridge maps into the space of the model's index.

    A bridge belongs to the model's weights: trained on vectors of other weights (or of another
    dimension) it is stale. Trained on an earlier version of the catalogue (fewer products) it
    still maps into the same space and answers; the next build retrains it.
    """
    hint = retrain_hint(catalogue, model_id)
    if manifest.get("format") != BRIDGE_FORMAT:
        raise StaleBridgeError(
            f"the text bridge of {model_id!r} has format {manifest.get('format')!r}, "
            f"not {BRIDGE_FORMAT}; {hint}"
        )
    if manifest.get("model_id") != model_id:
        raise StaleBridgeError(
            f"the text bridge in {catalogue.bridge_dir(model_id)} was trained for model "
            f"{manifest.get('model_id')!r}, not {model_id!r}; {hint}"
        )
    index = read_manifest(catalogue.model_dir(model_id))
    if index is None:
        raise IndexMissingError(
            f"model {model_id!r} has a text bridge but no index in catalogue "
            f"{catalogue.name!r}; build the index first"
        )
    if index.get("weights_id") != manifest.get("weights_id") or index.get("dim") != manifest.get(
        "dim"
    ):
        raise StaleBridgeError(
            f"the text bridge of {model_id!r} was trained on vectors of weights "
            f"{manifest.get('weights_id')!r} ({manifest.get('dim')}-d), but the index now "
            f"holds weights {index.get('weights_id')!r} ({index.get('dim')}-d); {hint}"
        )


def read_bridge_manifest(bridge_dir: Path) -> dict | None:
    """A bridge's manifest, or None when there is none (or it is unreadable)."""
    try:
        manifest = json.loads((Path(bridge_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def load_bridge(bridge_dir: Path, *, catalogue: Catalogue, model_id: str) -> TextBridge:
    """Load a model's bridge, refusing one that is missing, damaged or stale.

    Stale means the model's index now holds vectors of other weights (`StaleBridgeError`, an
    `IndexMismatchError`, saying how to retrain). The sentence encoder itself loads on the
    first `encode_texts`.
    """
    bridge_dir = Path(bridge_dir)
    manifest = read_bridge_manifest(bridge_dir)
    if manifest is None:
        raise IndexMissingError(
            f"no text bridge for model {model_id!r} in {bridge_dir}; "
            f"train one: python -m embeddings bridge --catalog {catalogue.directory} "
            f"--models {model_id}"
        )
    check_bridge_manifest(manifest, catalogue=catalogue, model_id=model_id)
    try:
        weights = np.load(bridge_dir / WEIGHTS_FILE, allow_pickle=False)
        bias = np.load(bridge_dir / BIAS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StaleBridgeError(
            f"the text bridge files in {bridge_dir} are damaged ({exc}); "
            f"{retrain_hint(catalogue, model_id)}"
        ) from exc
    dim = manifest.get("dim")
    if weights.shape != (dim, TEXT_DIM) or bias.shape != (dim,):
        raise StaleBridgeError(
            f"the text bridge files in {bridge_dir} disagree with its manifest "
            f"(weights {weights.shape}, bias {bias.shape}, manifest dim {dim}); "
            f"{retrain_hint(catalogue, model_id)}"
        )
    memory, basis = _load_memory(bridge_dir, manifest, catalogue, model_id)
    return TextBridge(
        model_id,
        weights.astype(np.float32, copy=False),
        bias.astype(np.float32, copy=False),
        manifest,
        memory,
        basis,
    )


def _load_memory(bridge_dir: Path, manifest: dict, catalogue: Catalogue, model_id: str):
    """The memory (and its basis) of a `memory`-recipe bridge; (None, None) for the others."""
    if manifest.get("recipe", "linear") != "memory":
        return None, None
    try:
        memory = load_memory(bridge_dir, manifest["memory"])
        basis = None
        if (bridge_dir / BASIS_FILE).is_file():
            basis = np.load(bridge_dir / BASIS_FILE, allow_pickle=False).astype(np.float32)
        width = memory.prototypes.shape[1]
        if (basis is None and width != manifest["dim"]) or (
            basis is not None and basis.shape != (manifest["dim"], width)
        ):
            raise ValueError(f"prototypes of width {width} for a {manifest['dim']}-d space")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StaleBridgeError(
            f"the text bridge memory in {bridge_dir} is damaged ({exc}); "
            f"{retrain_hint(catalogue, model_id)}"
        ) from exc
    return memory, basis


def stage_bridge(
    bridge_dir: Path,
    *,
    weights: np.ndarray,
    bias: np.ndarray,
    holdout_ids: list[str],
    manifest: dict,
    excluded_titles: list[str] | None = None,
    memory: Memory | None = None,
    basis: np.ndarray | None = None,
) -> Path:
    """Write every file of a bridge into a fresh folder beside `bridge_dir`; returns it.

    `commit_bridge` swaps it in (under the catalogue's commit lock): readers never see half a
    bridge.
    """
    staging = staging_dir(bridge_dir)
    try:
        np.save(staging / WEIGHTS_FILE, weights.astype(np.float32))
        np.save(staging / BIAS_FILE, bias.astype(np.float32))
        (staging / HOLDOUT_FILE).write_text("".join(f"{i}\n" for i in holdout_ids))
        if excluded_titles:
            (staging / EXCLUDED_TITLES_FILE).write_text(
                "".join(f"{t}\n" for t in excluded_titles), encoding="utf-8"
            )
        if memory is not None:
            save_memory(memory, staging)
        if basis is not None:
            np.save(staging / BASIS_FILE, basis.astype(np.float32))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        fsync_files(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def commit_bridge(staging: Path, bridge_dir: Path) -> None:
    swap_in(staging, bridge_dir)


def read_holdout_ids(bridge_dir: Path) -> list[str]:
    """The product ids whose titles the bridge never saw in training."""
    try:
        return (Path(bridge_dir) / HOLDOUT_FILE).read_text().splitlines()
    except OSError:
        return []


def read_excluded_titles(bridge_dir: Path) -> list[str]:
    """The titles the bridge was told to keep out of training (empty when none were)."""
    try:
        lines = read_lines(Path(bridge_dir) / EXCLUDED_TITLES_FILE)
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in lines if line.strip()]

"""Where ONNX exports are cached, and whether one can be used (no torch needed here).

One folder per model and weights id:

    $EMBEDDINGS_MODELS/<model>/<weights slug>/       (default ~/.cache/embeddings/onnx)
        model.onnx                (or image.onnx + text.onnx for CLIP)
        preprocess.json           image recipe (`embeddings.models.preprocess`) and/or text
                                  settings (tokenizer file, max length, padding)
        tokenizer.json            text encoders only, for the `tokenizers` library
        manifest.json             written last: model, weights id, opset, input size, versions
                                  of torch/onnx/onnxruntime used, drift measured against torch,
                                  and the size and SHA-256 of every other file

An export is written into a staging folder beside its place and swapped in whole
(`embeddings.atomic`), under a per-folder lock so two processes never export the same model at
once. `open_export` accepts a folder only when its manifest names the same model, weights and
export format and every file has the recorded size and hash: a partial, damaged or edited
export is `StaleExport` and is made again (or refused when torch is absent).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embeddings.config import MANIFEST_FILE, models_home
from embeddings.errors import ModelLoadError

#: `EMBEDDINGS_MODELS`: the folder of ONNX exports (like `TORCH_HOME` or `HF_HOME`).
#: Version of the folder layout above; exports of another format are remade.
EXPORT_FORMAT = 1
PREPROCESS_FILE = "preprocess.json"
TOKENIZER_FILE = "tokenizer.json"
BLOCK_BYTES = 1 << 20


class StaleExport(ModelLoadError):
    """No usable export in a folder: missing, partial, damaged, or for other weights."""


#: Read-only export folders looked in first (a served bundle's `encoders/`): never written.
_read_only_homes: list[Path] = []


def add_read_only_home(folder: Path) -> None:
    """Also find exports in `folder`, laid out like `models_home()`, before the cache; an export
    there is used when it passes `open_export`, and nothing is ever written into it."""
    folder = Path(folder)
    if folder not in _read_only_homes:
        _read_only_homes.append(folder)


def find_read_only_export(model_id: str, weights_id: str) -> OnnxExport | None:
    """The usable export of (`model_id`, `weights_id`) in a read-only home, if one has it."""
    for home in _read_only_homes:
        try:
            return open_export(export_dir(model_id, weights_id, home), model_id, weights_id)
        except StaleExport:
            continue
    return None


def weights_slug(weights_id: str) -> str:
    """A folder name for a weights id: `sha256:0123...` -> `sha256-0123...`; a name such as
    `torchvision/resnet50/IMAGENET1K_V2` -> `torchvision_resnet50_IMAGENET1K_V2-<8 hex>`."""
    if re.fullmatch(r"sha256:[0-9a-f]+", weights_id):
        return weights_id.replace(":", "-")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", weights_id).strip("._")[:80]
    return f"{readable}-{hashlib.sha256(weights_id.encode()).hexdigest()[:8]}"


def export_dir(model_id: str, weights_id: str, home: Path | None = None) -> Path:
    """`<home>/<model folder>/<weights slug>` (`naming.folder_name`: a short id is its own)."""
    from embeddings.models.naming import folder_name

    return (home or models_home()) / folder_name(model_id) / weights_slug(weights_id)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


@dataclass(frozen=True)
class OnnxExport:
    """A checked export folder: its manifest and its preprocessing settings."""

    folder: Path
    manifest: dict
    preprocess: dict

    def path(self, name: str) -> Path:
        return self.folder / name


def open_export(folder: Path, model_id: str, weights_id: str) -> OnnxExport:
    """The export in `folder`, checked file by file; raises `StaleExport` saying what is wrong."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise StaleExport(f"no ONNX export in {folder}") from None
    except (OSError, ValueError) as exc:
        raise StaleExport(
            f"the export manifest {folder / MANIFEST_FILE} is unreadable: {exc}"
        ) from exc
    if not isinstance(manifest, dict):
        raise StaleExport(f"the export manifest {folder / MANIFEST_FILE} is not a JSON object")
    expected = {"format": EXPORT_FORMAT, "model_id": model_id, "weights_id": weights_id}
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise StaleExport(
                f"the export in {folder} has {key} {manifest.get(key)!r}, not {value!r}"
            )
    _check_files(folder, manifest.get("files"))
    try:
        preprocess = json.loads((folder / PREPROCESS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise StaleExport(f"{folder / PREPROCESS_FILE} is unreadable: {exc}") from exc
    return OnnxExport(folder, manifest, preprocess)


def _check_files(folder: Path, files) -> None:
    if not isinstance(files, dict) or PREPROCESS_FILE not in files:
        raise StaleExport(f"the export manifest in {folder} lists no files")
    for name, record in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise StaleExport(f"the export in {folder} lacks {name}")
        if not isinstance(record, dict) or path.stat().st_size != record.get("bytes"):
            raise StaleExport(f"{path} has another size than its manifest records (partial?)")
        if file_sha256(path) != record.get("sha256"):
            raise StaleExport(f"{path} does not match the hash its manifest records (edited?)")


@contextlib.contextmanager
def export_lock(folder: Path) -> Iterator[None]:
    """Hold `<folder>.lock` exclusively (waiting for it): one exporter per export folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.with_name(folder.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

"""Loading a model on ONNX Runtime: find its export, or make it once with torch.

`load_onnx_model` is what `embeddings.models.load_model` does by default for the neural models
(`ModelSpec.onnx`): the weights id comes from the registry without loading anything
(`expected_weights_id`: default weights keep their names, local ones are `sha256:...`), the
export folder from that id (`embeddings.models.onnx_cache`). A usable export is opened as it is;
a missing or stale one is made on first use by the model's torch loader and
`embeddings.models.export`, with a message, when torch is installed. Without torch and without
an export, `ModelLoadError` says what to do.

`EMBEDDINGS_RUNTIME=torch` (or `load_model(..., runtime="torch")`) keeps the torch embedders,
for comparison and benchmarks.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from embeddings.atomic import fsync_files, recover_interrupted_swap, staging_dir, swap_in
from embeddings.config import MANIFEST_FILE, MODELS_ENV
from embeddings.errors import ModelLoadError
from embeddings.models.base import Embedder, ModelSpec
from embeddings.models.onnx_cache import (
    EXPORT_FORMAT,
    OnnxExport,
    StaleExport,
    export_dir,
    export_lock,
    file_record,
    find_read_only_export,
    open_export,
)

RUNTIME_ENV = "EMBEDDINGS_RUNTIME"
RUNTIMES = ("onnx", "torch")

Messages = Callable[[str], None]


def say_on_stderr(message: str) -> None:
    """The default for export messages: one line on stderr (like a download's progress)."""
    print(f"embeddings: {message}", file=sys.stderr, flush=True)


def chosen_runtime(runtime: str | None = None) -> str:
    """`runtime`, else `$EMBEDDINGS_RUNTIME`, else "onnx"; refuses anything else."""
    value = (runtime or os.environ.get(RUNTIME_ENV) or "onnx").strip().lower()
    if value not in RUNTIMES:
        raise ModelLoadError(
            f"unknown runtime {value!r} (from {'the caller' if runtime else RUNTIME_ENV}); "
            f"choose one of: {', '.join(RUNTIMES)}"
        )
    return value


def _refuse_without_torch(model_id: str, folder: Path, reason: StaleExport) -> None:
    try:
        import torch  # noqa: F401  (only to know whether an export can be made here)
    except ImportError:
        raise ModelLoadError(
            f"model {model_id!r} needs its ONNX export ({reason}), and torch, which makes it, "
            f"is not installed here. Make it where torch is installed (python -m embeddings "
            f"export --models {model_id}), then copy that folder to {folder} (or set "
            f"{MODELS_ENV} to a copy of that machine's export folder); or install torch "
            "(pip install -r requirements.txt)"
        ) from None


def ensure_export(
    model_id: str,
    weights_id: str,
    make: Callable[[Path], dict],
    *,
    messages: Messages | None = None,
) -> OnnxExport:
    """The checked export of (`model_id`, `weights_id`), made by `make(folder)` when it is
    missing or stale. `make` writes the model files and `preprocess.json` into `folder` and
    returns the manifest's fields; the manifest (with every file's size and hash) is written
    last and the folder swapped in whole, under the export's lock."""
    bundled = find_read_only_export(model_id, weights_id)
    if bundled is not None:
        return bundled
    folder = export_dir(model_id, weights_id)
    try:
        return open_export(folder, model_id, weights_id)
    except StaleExport as stale:
        reason = stale
    _refuse_without_torch(model_id, folder, reason)
    say = messages or say_on_stderr
    with export_lock(folder):
        recover_interrupted_swap(folder)
        _drop_leftovers(folder)
        try:  # another process may have made it while this one waited for the lock
            return open_export(folder, model_id, weights_id)
        except StaleExport as stale:
            reason = stale
        say(f"exporting {model_id} to ONNX, once for these weights ({reason})")
        started = time.perf_counter()
        staging = staging_dir(folder)
        try:
            fields = make(staging)
            manifest = _manifest(model_id, weights_id, staging, fields)
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
            fsync_files(staging)
            swap_in(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        drift = ", ".join(
            f"{part}: cosine >= {value['min_cosine']:.7f}"
            for part, value in manifest["drift"].items()
        )
        say(
            f"exported {model_id} to {folder} in {time.perf_counter() - started:.1f} s "
            f"(against torch: {drift})"
        )
    return open_export(folder, model_id, weights_id)


def _manifest(model_id: str, weights_id: str, folder: Path, fields: dict) -> dict:
    from embeddings.models.export import OPSET, versions

    return {
        "format": EXPORT_FORMAT,
        "model_id": model_id,
        "weights_id": weights_id,
        "opset": OPSET,
        **fields,
        "versions": versions(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {path.name: file_record(path) for path in sorted(folder.iterdir())},
    }


def _drop_leftovers(folder: Path) -> None:
    """Staging folders a killed export of this folder left (under its lock: none is live)."""
    for stale in folder.parent.glob(f".{folder.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_onnx_model(
    spec: ModelSpec,
    options: dict,
    torch_loader: Callable[..., Embedder],
    *,
    messages: Messages | None = None,
) -> Embedder:
    """`spec`'s model on ONNX Runtime, exporting it first from `torch_loader(**options)` when
    its export is missing or stale."""
    from embeddings.models import expected_weights_id
    from embeddings.models.onnx_embedders import embedder_for_export

    weights_id = expected_weights_id(spec.id, options)

    def make(folder: Path) -> dict:
        from embeddings.models.export import export_embedder

        embedder = torch_loader(**options)
        if embedder.weights_id != weights_id:
            raise ModelLoadError(
                f"model {spec.id!r} loaded weights {embedder.weights_id!r}, expected "
                f"{weights_id!r}; nothing was exported"
            )
        return export_embedder(embedder, folder)

    export = ensure_export(spec.id, weights_id, make, messages=messages)
    hint = f"delete {export.folder} to make the export again"
    return embedder_for_export(spec, export, hint=hint)

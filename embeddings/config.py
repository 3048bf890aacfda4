"""Where things live on disk."""

from __future__ import annotations

import os
from pathlib import Path

#: The one name of every manifest the project writes beside what it describes: a model's index,
#: its text bridge, its ONNX export, a saved map or duplicate list.
MANIFEST_FILE = "manifest.json"

#: The folder of ONNX exports (the models cache) is `$EMBEDDINGS_MODELS` when set.
MODELS_ENV = "EMBEDDINGS_MODELS"

#: The repository root (the folder holding the `embeddings` package).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The folder that holds every catalogue: `$EMBEDDINGS_DATA`, else `data/` in the repository."""
    override = os.environ.get("EMBEDDINGS_DATA")
    return Path(override).expanduser().resolve() if override else REPO_ROOT / "data"


def list_catalogue_dirs(root: Path | None = None) -> list[Path]:
    """Catalogue folders (those holding a `catalog.json`) directly under the data folder, by
    name."""
    root = data_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "catalog.json").is_file())


def resolve_catalog_dir(value: str) -> Path:
    """A `--catalog` value: a folder path as given, or a bare name inside the data folder."""
    path = Path(value).expanduser()
    if path.is_dir() or os.sep in value or value.startswith("."):
        return path
    return data_dir() / value


def models_home() -> Path:
    """The models cache (ONNX exports): `$EMBEDDINGS_MODELS`, else `~/.cache/embeddings/onnx`."""
    override = os.environ.get(MODELS_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache/embeddings/onnx"

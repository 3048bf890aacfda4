"""Weights identified by their content, not their name.

A model loaded from a local file or folder (`--weights MODEL=PATH`) records
`weights_id_for_path(PATH)` in its index manifest, so two different files that share a name
(`a/r50.pth`, `b/r50.pth`) never share vectors in an incremental build nor pass each other's
manifest check, while the same bytes copied elsewhere keep their index valid. The default
weights of each model keep the fixed ids their specs give (indexes built before stay valid).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from embeddings.errors import ModelLoadError

#: Read size while hashing: large weights files stream through in blocks of this many bytes.
BLOCK_BYTES = 1 << 20
#: Folders left out of a folder's identity: a clone's history is not part of the weights.
SKIPPED_FOLDERS = frozenset({".git"})


def weights_id_for_path(path: str | os.PathLike) -> str:
    """`"sha256:"` and the first 16 hex digits of a SHA-256 over the weights at `path`.

    A file: the SHA-256 of its bytes. A folder: every regular file below it (links to files are
    followed, as in the Hugging Face cache; linked folders are not entered; `.git` folders are
    skipped), in the order of their relative posix paths, each hashed as its path and the
    SHA-256 of its bytes. So editing, adding, removing or renaming any file changes the id, and
    the folder's own name and place do not. Raises `OSError` when something cannot be read.
    """
    path = Path(path)
    if not path.is_dir():
        return "sha256:" + _file_digest(path).hexdigest()[:16]
    digest = hashlib.sha256()
    for relative, file in _files_below(path):
        name = relative.encode("utf-8", "surrogateescape")
        digest.update(len(name).to_bytes(8, "big") + name + _file_digest(file).digest())
    return "sha256:" + digest.hexdigest()[:16]


def local_weights_id(model_id: str, path: str | os.PathLike) -> str:
    """`weights_id_for_path`, with a failure to read reported as the model's `ModelLoadError`."""
    try:
        return weights_id_for_path(path)
    except OSError as exc:
        raise ModelLoadError(
            f"model {model_id!r} could not read {path} to identify its weights "
            f"({exc}); check the files' permissions"
        ) from exc


def _file_digest(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
    return digest


def _files_below(folder: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every regular file below `folder`, sorted by the former."""
    found = []
    for current, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if name not in SKIPPED_FOLDERS]
        for name in files:
            file = Path(current, name)
            if file.is_file():  # follows links to files; skips sockets, fifos, broken links
                found.append((file.relative_to(folder).as_posix(), file))
    return sorted(found)

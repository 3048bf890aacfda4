"""Atomic writes on disk: a file, or a whole folder, replaced so readers see old or new.

- `write_atomic(path, data)`: temp file in the same folder, fsync, `os.replace`.
- `swap_in(staging, target)`: a fully written folder takes the place of `target`.
- `recover_interrupted_swap(target)`: the writer's repair of a swap cut short by a crash.

Readers never call the last one: recovery belongs to the process that holds the catalogue's
build lock (`embeddings.locks`). A reader that finds `target` missing treats it as not built.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

OLD_SUFFIX = ".old"
STAGING_INFIX = ".new-"


def write_temporary(path: Path, data: bytes | str) -> Path:
    """Write `data` in full (fsynced) to a temp file beside `path`; the caller renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(
            fd, 0o644
        )  # mkstemp makes it private; catalogue files are as readable as a plain write
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    os.replace(write_temporary(path, data), path)


def staging_dir(target: Path) -> Path:
    """A fresh, empty folder beside `target` to write its next version into."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{STAGING_INFIX}"))
    staging.chmod(0o755)  # mkdtemp makes it private; an index is as readable as its catalogue
    return staging


def fsync_files(folder: Path) -> None:
    """Flush every file of `folder` to disk (before it is swapped in)."""
    for path in Path(folder).iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by the folder `staging`: rename old aside, rename new in, drop old.

    Callers hold the catalogue's exclusive commit lock, so readers (which take it shared) never
    see the moment between the two renames. A crash there leaves `<target>.old`, which the next
    build puts back (`recover_interrupted_swap`) before it does anything else.
    """
    old = target.with_name(target.name + OLD_SUFFIX)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_swap(target: Path) -> bool:
    """Put back `<target>.old` when a crash left no `target` (writers only). True if repaired."""
    target = Path(target)
    old = target.with_name(target.name + OLD_SUFFIX)
    if not target.exists() and old.exists():
        os.replace(old, target)
        return True
    if target.exists() and old.exists():  # the new one is in; the old one was not dropped yet
        shutil.rmtree(old, ignore_errors=True)
    return False


def remove_staging_leftovers(folder: Path) -> None:
    """Drop half-written staging folders and temp files a killed writer left in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for stale in folder.iterdir():
        if stale.name.startswith(".") and (
            STAGING_INFIX in stale.name or stale.name.endswith(".tmp")
        ):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(
                missing_ok=True
            )

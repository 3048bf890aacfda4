"""Two file locks per catalogue folder, so a builder and any number of readers can share it.

- The **build lock** (`.build.lock`, exclusive, never waited for): one build of a catalogue at a
  time, whichever process or app session starts it. Its holder alone may repair what a killed
  build left behind.
- The **commit lock** (`.commit.lock`): a build takes it exclusively for the few milliseconds in
  which it swaps the new index folders in and saves the catalogue; readers take it shared while
  they open the catalogue and its index files. So a reader sees the catalogue and its indexes
  all before a build's commit or all after it, never a mix.

Readers never write: when the commit lock file does not exist (a catalogue no build of this
version has touched, or one on read-only storage), they read without it. Locks are `flock`
locks, released by the kernel when their process dies.

`waiting_lock` is the same kind of lock for anything else one process at a time must make (a
bundle's cache entry): it waits for the holder, after saying that it waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from embeddings.errors import CatalogueError

BUILD_LOCK_FILE = ".build.lock"
COMMIT_LOCK_FILE = ".commit.lock"


class BuildBusyError(CatalogueError):
    """Another process (or app session) is building this catalogue right now."""


@contextlib.contextmanager
def build_lock(catalogue_dir: Path) -> Iterator[None]:
    """Hold the catalogue's build lock, or raise `BuildBusyError` at once if it is taken."""
    directory = Path(catalogue_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / BUILD_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise BuildBusyError(
                f"catalogue {directory.name!r} is being built by {holder} right now; "
                "wait for that build to finish, then run this one again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def commit_lock(catalogue_dir: Path, *, exclusive: bool = False) -> Iterator[None]:
    """The catalogue's commit lock: exclusive for a build's commit, shared for readers.

    A reader gets no lock (and writes nothing) when the lock file is absent or unreadable.
    """
    path = Path(catalogue_dir) / COMMIT_LOCK_FILE
    flags = os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY
    try:
        fd = os.open(path, flags, 0o644)
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        if exclusive:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def waiting_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock file `path` exclusively; when another process holds it, call `on_wait`
    (to say so), then wait for it. The kernel releases it when its holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

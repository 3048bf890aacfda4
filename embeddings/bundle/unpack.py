"""Unpacking a bundle archive (`.tar.gz`, `.tar`, `.zip`) with our own checks, on any Python.

Nothing here relies on the standard library's extraction or its `tarfile` filters (whose checks
differ between patch releases, and which some releases get wrong for long link chains): each
member is checked here before a byte of it is written.

- Only regular files and folders: a link of any kind, a device, a FIFO, a sparse or encrypted
  member is refused. Every path must pass `member_path` (relative, no `..`, no reserved names).
- `bundle.json` is read first. `publish` writes it first; in an archive published before that,
  a first pass over the headers finds it (that pass writes nothing, and gives up past
  `PREAMBLE_MEMBERS` members or the size cap).
- The total it declares must fit the size cap (`EMBEDDINGS_BUNDLE_MAX_GB`) and the free disk.
- Every file member must be listed there, once, with the listed size in its header: an unlisted
  or differently sized member is refused before it is written, and no file is ever written past
  its listed size. So an archive writes at most what `bundle.json` declares. Folders are made only
  as the parents of listed files.
- Files are created new (never through an existing path), with default permissions: no owners,
  modes or times come from the archive.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from embeddings.bundle.limits import BundleLimits
from embeddings.bundle.manifest import (
    BUNDLE_FILE,
    MANIFEST_MAX_BYTES,
    BundleError,
    declared_bytes,
    folders_of,
    member_path,
    parse_manifest,
)
from embeddings.progress import Progress, ProgressFn, no_progress

UNPACKING = "unpacking and checking the bundle"

#: How many members may come before `bundle.json` in an archive published before it came first.
PREAMBLE_MEMBERS = 10_000
_DAMAGED = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError,
    NotImplementedError, zlib.error, lzma.LZMAError,
)  # fmt: skip


def unpack_archive(
    archive: Path,
    into: Path,
    *,
    source: str,
    limits: BundleLimits,
    say: ProgressFn = no_progress,
) -> dict:
    """Unpack `archive` into the new folder `into` (see the module docstring); return its checked
    `bundle.json`. Raises `BundleError`; the caller deletes `into` then."""
    into.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            return _unpack_zip(archive, into, source, limits, say)
        return _unpack_tar(archive, into, source, limits, say)
    except BundleError:
        raise
    except _DAMAGED as exc:
        raise BundleError(
            f"the bundle archive from {source} could not be unpacked ({type(exc).__name__}: "
            f"{exc}): it is damaged or not an archive, or the disk refused it; it is not served"
        ) from exc


class _Writer:
    """Writes the listed files of one manifest into `into`, each once and never past its size."""

    def __init__(self, manifest, data: bytes, into: Path, source: str, limits, say) -> None:
        self.manifest, self.into, self.source, self.say = manifest, into, source, say
        self.listed = {entry["path"]: entry["size"] for entry in manifest["files"]}
        self.folders = folders_of(self.listed)
        self.total = declared_bytes(manifest) + len(data)
        self.done = self.said = 0  # bytes written, and when progress was last said
        self.written: set[str] = set()
        if self.total > limits.max_bytes:
            raise BundleError(
                f"the bundle from {source} declares {self.total:,} bytes, more than the bundle "
                f"size limit {limits.describe()}; it is not unpacked"
            )
        free = shutil.disk_usage(into).free
        if self.total > free:
            raise BundleError(
                f"the bundle from {source} needs {self.total / 1e6:,.1f} MB and only "
                f"{free / 1e6:,.1f} MB are free beside {into.parent}; free some space"
            )
        self._create(BUNDLE_FILE, data)

    def folder(self, path: str) -> None:
        if path not in self.folders:
            raise BundleError(
                f"the bundle archive from {self.source} holds the folder {path}, which holds no "
                f"file {BUNDLE_FILE} lists; it is not served"
            )
        (self.into / path).mkdir(parents=True, exist_ok=True)

    def file(self, path: str, size: int, stream: Callable[[], BinaryIO]) -> None:
        listed = self.listed.get(path)
        if listed is None or path in self.written:
            said = "lists it once" if listed is not None else "does not list it"
            raise BundleError(
                f"the bundle archive from {self.source} holds {path} (again), and {BUNDLE_FILE} "
                f"{said}; every file must be listed once, so it is not served"
            )
        if size != listed:
            raise BundleError(
                f"the bundle archive from {self.source} holds {path} of {size:,} bytes, and "
                f"{BUNDLE_FILE} lists {listed:,}; it is not served"
            )
        with stream() as data:
            self._create(path, data, listed)

    def finish(self) -> None:
        missing = sorted(set(self.listed) - self.written)
        if missing:
            raise BundleError(
                f"the bundle archive from {self.source} lacks {missing[0]} (and "
                f"{len(missing) - 1:,} more files) that {BUNDLE_FILE} lists; it is not served"
            )

    def _create(self, path: str, data, size: int | None = None) -> None:
        """A new file at `path` holding `data` (bytes or a stream), at most `size` bytes."""
        size = len(data) if size is None else size
        target = self.into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            blocks = [data] if isinstance(data, bytes) else iter(lambda: data.read(1 << 20), b"")
            left = size
            for block in blocks:
                if len(block) > left:
                    raise BundleError(
                        f"the bundle archive from {self.source} holds more of {path} than its "
                        f"{size:,} listed bytes; it is not served"
                    )
                out.write(block)
                left -= len(block)
                self.done += len(block)
                if self.done - self.said >= self.total / 200 or self.done == self.total:
                    self.said = self.done  # at most 200 steps: a page redraws its bar on each
                    step = Progress("unpacking", None, self.done, self.total, UNPACKING, "bytes")
                    self.say(step)
        if left:
            raise BundleError(f"the bundle archive from {self.source} holds less of {path}")
        self.written.add(path)


def _unpack_tar(archive, into, source, limits, say) -> dict:
    with tarfile.open(archive, "r:*") as packed:
        first, data = _tar_manifest(packed, source, limits)
        writer = _Writer(parse_manifest(data, where=source), data, into, source, limits, say)
        for member in packed:  # from the first member again, then on to the end
            path = _tar_checked(member, source)
            if member is first or path is None:
                continue
            if member.isdir():
                writer.folder(path)
            else:
                writer.file(path, member.size, lambda member=member: packed.extractfile(member))
        writer.finish()
        return writer.manifest


def _tar_manifest(packed: tarfile.TarFile, source: str, limits: BundleLimits):
    """The `bundle.json` member and its bytes: the first member, or found by a first pass over
    the headers of an older archive (bounded; it writes nothing)."""
    seen = skipped = 0
    while (member := packed.next()) is not None:
        path = _tar_checked(member, source)
        if path == BUNDLE_FILE and member.isreg():
            if member.size > MANIFEST_MAX_BYTES:
                raise BundleError(f"{source}: {BUNDLE_FILE} is over {MANIFEST_MAX_BYTES >> 20} MB")
            return member, packed.extractfile(member).read()
        seen, skipped = seen + 1, skipped + member.size
        if seen > PREAMBLE_MEMBERS or skipped > limits.max_bytes:
            break
    raise BundleError(
        f"the bundle archive from {source} has no {BUNDLE_FILE} near its start; it is not a "
        "bundle, or a very old one: publish it again with this version"
    )


def _tar_checked(member: tarfile.TarInfo, source: str) -> str | None:
    """The member's path when it is a regular file or a folder (None: the archive's root)."""
    kind = (
        "a symbolic link" if member.issym() else "a hard link" if member.islnk()
        else "a character device" if member.ischr() else "a block device" if member.isblk()
        else "a FIFO" if member.isfifo() else "a sparse file" if member.issparse()
        else None if member.isreg() or member.isdir() else f"an entry of type {member.type!r}"
    )  # fmt: skip
    return _checked(member.name, kind, member.isdir(), source)


def _unpack_zip(archive, into, source, limits, say) -> dict:
    with zipfile.ZipFile(archive) as packed:
        members = [(info, _zip_checked(info, source)) for info in packed.infolist()]
        found = [info for info, path in members if path == BUNDLE_FILE and not info.is_dir()]
        if len(found) != 1:
            raise BundleError(
                f"the bundle archive from {source} holds {len(found)} {BUNDLE_FILE} files, "
                "not one; it is not served"
            )
        if found[0].file_size > MANIFEST_MAX_BYTES:
            raise BundleError(f"{source}: {BUNDLE_FILE} is over {MANIFEST_MAX_BYTES >> 20} MB")
        with packed.open(found[0]) as handle:
            data = handle.read(MANIFEST_MAX_BYTES + 1)
        writer = _Writer(parse_manifest(data, where=source), data, into, source, limits, say)
        for info, path in members:
            if info is found[0] or path is None:
                continue
            if info.is_dir():
                writer.folder(path)
            else:
                writer.file(path, info.file_size, lambda info=info: packed.open(info))
        writer.finish()
        return writer.manifest


def _zip_checked(info: zipfile.ZipInfo, source: str) -> str | None:
    mode = info.external_attr >> 16
    kind = None
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
    elif info.flag_bits & 0x1:
        kind = "an encrypted file"
    return _checked(info.filename, kind, info.is_dir(), source)


def _checked(name: str, kind: str | None, is_dir: bool, source: str) -> str | None:
    if kind is not None:
        raise BundleError(
            f"the bundle archive from {source} holds {name!r}, {kind}; a bundle holds regular "
            "files and folders only, so it is not served"
        )
    if is_dir and name.strip("/") in ("", "."):
        return None  # the archive's own root folder
    return member_path(name, where=f"the bundle archive from {source}")

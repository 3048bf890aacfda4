"""Opening a published bundle (`embeddings.bundle.publish`) to serve: a folder, archive or URL.

`open_bundle(source)` returns the bundle's catalogue folder, ready to serve read-only:

- a folder holding `bundle.json`: used where it is, after checking that it holds exactly the
  files listed, with their sizes (`embeddings.bundle.manifest.check_folder`);
- an archive file (`.tar.gz`, `.tar`, `.zip`): unpacked once into the cache folder;
- an `http://` or `https://` URL: downloaded once into the cache folder (with progress, within
  the size cap and deadline of `embeddings.bundle.limits`), then unpacked.

An archive is checked against `expected_sha256` when one is given (`EMBEDDINGS_BUNDLE_SHA256`;
a folder has no archive to check, so the two together are refused), unpacked into a private
temporary folder by `embeddings.bundle.unpack` (which checks every member itself), checked file
by file against `bundle.json` (size and SHA-256), and only then moved into place in one rename.
A partial, damaged or hostile bundle is refused with a message, and what it left is deleted: it
is never served, and the next start tries again. Every failure is a `BundleError`.

The cache folder is `EMBEDDINGS_BUNDLE_CACHE`, else `~/.cache/embeddings/bundles`; an entry is
`<cache>/<key>/` with its mark `.verified`. One process at a time makes an entry, under the lock
`<cache>/.<key>.lock` (released by the kernel if its holder dies), with temporary names of its
own; another process opening the same source meanwhile says that it waits, then serves the
entry the first one made. An entry that lost its mark or a file is made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embeddings.bundle.download import download
from embeddings.bundle.limits import BundleLimits
from embeddings.bundle.manifest import (  # noqa: F401 - the names bundles are opened with
    BUNDLE_FILE,
    BUNDLE_FORMAT,
    ENCODERS_DIR,
    BundleError,
    check_folder,
    file_sha256,
)
from embeddings.bundle.unpack import unpack_archive
from embeddings.locks import waiting_lock
from embeddings.progress import Progress, ProgressFn, no_progress

BUNDLE_ENV = "EMBEDDINGS_BUNDLE"
SHA256_ENV = "EMBEDDINGS_BUNDLE_SHA256"
CACHE_ENV = "EMBEDDINGS_BUNDLE_CACHE"
VERIFIED_MARK = ".verified"
WAITING = "another process is downloading or unpacking this bundle; waiting for it"


@dataclass(frozen=True)
class OpenedBundle:
    """A bundle ready to serve: its catalogue folder and its `bundle.json`."""

    folder: Path
    manifest: dict
    source: str

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def encoders_dir(self) -> Path:
        """Its ONNX exports, for `embeddings.models.onnx_cache.add_read_only_home`."""
        return self.folder / ENCODERS_DIR


def cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV, "").strip()
    return (
        Path(override).expanduser()
        if override
        else Path.home() / ".cache" / "embeddings" / "bundles"
    )


def open_bundle(
    source: str,
    *,
    cache: Path | None = None,
    expected_sha256: str | None = None,
    progress: ProgressFn | None = None,
    limits: BundleLimits | None = None,
) -> OpenedBundle:
    """The served form of `source` (see the module docstring); raises `BundleError`.

    `limits` defaults to `BundleLimits.from_env()` (`EMBEDDINGS_BUNDLE_MAX_GB`)."""
    say = progress or no_progress
    cache = Path(cache) if cache is not None else cache_dir()
    expected = (expected_sha256 or "").strip().lower() or None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise BundleError(f"{SHA256_ENV}={expected_sha256!r} is not a SHA-256 (64 hex digits)")
    limits = limits or BundleLimits.from_env()
    source = source.strip()
    if source.lower().startswith(("http://", "https://")):
        key = _key(f"{source}\n{expected or ''}")
        entry = _Entry(cache, key, source, expected, limits, say)
        return entry.open(lambda private: download(source, private, limits=limits, say=say))
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # "~someone" of no known user
        path = Path(source)
    if path.is_dir():
        if expected is not None:
            raise BundleError(
                f"{SHA256_ENV} is set, but {BUNDLE_ENV}={source} is a folder, which has no "
                f"archive to check: serve the archive itself, or unset {SHA256_ENV}"
            )
        return OpenedBundle(path.resolve(), check_folder(path, full=False), source)
    if path.is_file():
        stat = path.stat()
        key = _key(f"{path.resolve()}\n{stat.st_size}\n{stat.st_mtime_ns}\n{expected or ''}")
        return _Entry(cache, key, source, expected, limits, say).open(None, archive=path)
    raise BundleError(
        f"{BUNDLE_ENV}={source}: no such folder or file (give a bundle folder, an archive "
        "made by `python -m embeddings publish --archive`, or an https:// URL)"
    )


def _key(identity: str) -> str:
    """A cache entry's name: 16 hex digits of what identifies the bundle (bytes of any name)."""
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass
class _Entry:
    """One bundle's place in the cache, `<cache>/<key>/`, and how it is made."""

    cache: Path
    key: str
    source: str
    expected: str | None
    limits: BundleLimits
    say: ProgressFn

    @property
    def folder(self) -> Path:
        return self.cache / self.key

    def open(self, fetch: Callable[[Path], None] | None, archive: Path | None = None):
        """The entry when it is whole; else made by this process, or by the one holding its
        lock (waiting for it). `fetch` writes the archive into a private file."""
        served = self._whole()
        if served is not None:
            return served
        try:
            self._make_root()
            with waiting_lock(self.cache / f".{self.key}.lock", self._waiting):
                served = self._whole()  # made by the process this one waited for
                if served is None:
                    self._clear()
                    self._make(fetch, archive)
                    served = self._whole()
        except OSError as exc:
            raise BundleError(
                f"the bundle from {self.source} could not be put into the cache {self.cache} "
                f"({type(exc).__name__}: {exc}); it is not served, and the next start tries again"
            ) from exc
        if served is None:
            raise BundleError(f"the bundle from {self.source} did not stay in {self.cache}")
        return served

    def _waiting(self) -> None:
        self.say(Progress("waiting", message=WAITING))

    def _make_root(self) -> None:
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            if not os.access(self.cache, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable", str(self.cache))
        except OSError as exc:
            raise BundleError(
                f"the bundle cache {self.cache} cannot be used ({exc.strerror or exc}); set "
                f"{CACHE_ENV} to a folder this process may write"
            ) from exc

    def _whole(self) -> OpenedBundle | None:
        """The entry's catalogue folder when it was made and checked, and still holds every file."""
        try:
            name = json.loads((self.folder / VERIFIED_MARK).read_text())["name"]
            if "/" in name or name.startswith("."):
                return None
            folder = self.folder / name
            return OpenedBundle(folder, check_folder(folder, full=False), self.source)
        except (OSError, ValueError, TypeError, KeyError, BundleError):
            return None  # not made, or damaged since: made again, under the lock

    def _clear(self) -> None:
        """What a failed or killed maker of this entry left (only the lock holder makes it)."""
        if self.folder.is_dir() and not self.folder.is_symlink():
            shutil.rmtree(self.folder)
        elif self.folder.exists() or self.folder.is_symlink():
            self.folder.unlink()
        for leftover in self.cache.glob(f".{self.key}.*"):
            if leftover.name != f".{self.key}.lock":
                _remove(leftover)

    def _make(self, fetch, archive: Path | None) -> None:
        private = None
        try:
            if archive is None:
                handle, name = tempfile.mkstemp(
                    dir=self.cache, prefix=f".{self.key}.", suffix=".download"
                )
                os.close(handle)
                private = archive = Path(name)
                fetch(private)
            self._unpack(archive)
        finally:
            if private is not None:  # a download is never kept: the next start fetches again
                private.unlink(missing_ok=True)

    def _unpack(self, archive: Path) -> None:
        """Unpack into a private folder, check everything, then move it into place at once."""
        if self.expected is not None:
            self.say(Progress("checking", None, 0, 1, "checking the bundle"))
            actual = file_sha256(archive)
            if actual != self.expected:
                raise BundleError(
                    f"the bundle archive from {self.source} has SHA-256 {actual}, not "
                    f"{self.expected} ({SHA256_ENV}); it is not served"
                )
        staging = Path(tempfile.mkdtemp(dir=self.cache, prefix=f".{self.key}.unpack-"))
        try:
            payload = staging / "payload"
            self.say(Progress("unpacking", None, 0, 1, "unpacking and checking the bundle"))
            manifest = unpack_archive(
                archive, payload, source=self.source, limits=self.limits, say=self.say
            )
            self.say(Progress("checking", None, 0, 1, "checking the bundle"))
            check_folder(payload, full=True)
            payload.rename(staging / manifest["name"])
            mark = {"source": self.source, "name": manifest["name"]}
            (staging / VERIFIED_MARK).write_text(json.dumps(mark))
            os.replace(staging, self.folder)  # cleared under the lock: nobody else puts it there
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

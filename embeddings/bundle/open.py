"""Opening a published bundle (`embeddings.bundle.publish`) to serve it: a folder, an archive, or
a URL.

`open_bundle(source)` returns the bundle's catalogue folder, ready to serve read-only:

- a folder holding `bundle.json`: used where it is, after checking that every listed file is
  there with its size;
- an archive file (`.tar.gz`, `.tar`, `.zip`): unpacked once into the cache folder;
- an `http://` or `https://` URL: downloaded once into the cache folder (with progress), then
  unpacked.

An archive is checked against `expected_sha256` when one is given (`EMBEDDINGS_BUNDLE_SHA256`),
unpacked into a temporary folder, checked file by file against `bundle.json` (size and SHA-256),
and only then moved into place in one rename. A partial or damaged download is refused with a
message and deleted, so the next start downloads it again; it is never served. The cache folder
is `EMBEDDINGS_BUNDLE_CACHE`, else `~/.cache/embeddings/bundles`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from embeddings.errors import EmbeddingsError

BUNDLE_ENV = "EMBEDDINGS_BUNDLE"
SHA256_ENV = "EMBEDDINGS_BUNDLE_SHA256"
CACHE_ENV = "EMBEDDINGS_BUNDLE_CACHE"
BUNDLE_FILE = "bundle.json"
#: The bundle's ONNX exports (text and upload queries without torch), laid out like the cache.
ENCODERS_DIR = "encoders"
BUNDLE_FORMAT = 1
VERIFIED_MARK = ".verified"
DOWNLOAD_TIMEOUT_S = 60

ProgressFn = Callable[[str, int, int], None]  # (what, done, total; total 0 when unknown)


class BundleError(EmbeddingsError):
    """A bundle cannot be opened: missing, damaged, partial, or not a bundle."""


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
) -> OpenedBundle:
    """The served form of `source` (see the module docstring); raises `BundleError`."""
    say = progress or (lambda what, done, total: None)
    cache = Path(cache) if cache is not None else cache_dir()
    expected = (expected_sha256 or "").strip().lower() or None
    source = source.strip()
    if source.lower().startswith(("http://", "https://")):
        return _from_url(source, cache, expected, say)
    path = Path(source).expanduser()
    if path.is_dir():
        manifest = check_folder(path, full=False)
        return OpenedBundle(path.resolve(), manifest, source)
    if path.is_file():
        return _from_archive(path, cache, expected, say, source)
    raise BundleError(
        f"{BUNDLE_ENV}={source}: no such folder or file (give a bundle folder, an archive "
        "made by `python -m embeddings publish --archive`, or an https:// URL)"
    )


def check_folder(folder: Path, *, full: bool) -> dict:
    """`bundle.json` of `folder` after checking every file it lists (sizes; SHA-256 when `full`)."""
    try:
        manifest = json.loads((folder / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{folder} is not a bundle: {BUNDLE_FILE} is missing or unreadable ({exc})"
        ) from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{folder}: bundle format {manifest.get('format')!r} is not {BUNDLE_FORMAT}; "
            "publish it again with this version"
        )
    for entry in manifest.get("files", []):
        path = folder / _safe_member(entry["path"])
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise BundleError(
                f"{folder}: {entry['path']} is missing or has the wrong size; the bundle is "
                "incomplete: publish or download it again"
            )
        if full and file_sha256(path) != entry["sha256"]:
            raise BundleError(
                f"{folder}: {entry['path']} does not match its SHA-256 in {BUNDLE_FILE}; "
                "the bundle is damaged: publish or download it again"
            )
    return manifest


def _from_url(url: str, cache: Path, expected: str | None, say: ProgressFn) -> OpenedBundle:
    key = hashlib.sha256(f"{url}\n{expected or ''}".encode()).hexdigest()[:16]
    ready = _cached(cache / key)
    if ready is not None:
        return OpenedBundle(ready, check_folder(ready, full=False), url)
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / f".{key}.download"
    try:
        _download(url, download, say)
        return _unpack_checked(download, cache / key, expected, say, url)
    finally:
        download.unlink(missing_ok=True)  # a damaged download is never kept: the next start retries


def _from_archive(
    path: Path, cache: Path, expected: str | None, say: ProgressFn, source: str
) -> OpenedBundle:
    stat = path.stat()
    key = hashlib.sha256(
        f"{path.resolve()}\n{stat.st_size}\n{stat.st_mtime_ns}\n{expected or ''}".encode()
    )
    target = cache / key.hexdigest()[:16]
    ready = _cached(target)
    if ready is not None:
        return OpenedBundle(ready, check_folder(ready, full=False), source)
    cache.mkdir(parents=True, exist_ok=True)
    return _unpack_checked(path, target, expected, say, source)


def _cached(target: Path) -> Path | None:
    """The catalogue folder of an earlier, fully checked unpacking into `target`."""
    if not (target / VERIFIED_MARK).is_file():
        return None
    folders = [p for p in target.iterdir() if p.is_dir()]
    return folders[0] if len(folders) == 1 else None


def _download(url: str, target: Path, say: ProgressFn) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "embeddings-bundle/1"})
    done = 0
    try:
        with (
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
            open(target, "wb") as out,
        ):
            total = int(response.headers.get("Content-Length") or 0)
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                say("download", done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BundleError(
            f"downloading the bundle from {url} failed after {done:,} bytes ({exc}); it is "
            "not served, and the next start tries again"
        ) from exc
    if total and done != total:
        raise BundleError(
            f"the download of {url} stopped at {done:,} of {total:,} bytes; it is not "
            "served, and the next start tries again"
        )


def _unpack_checked(
    archive: Path, target: Path, expected: str | None, say: ProgressFn, source: str
) -> OpenedBundle:
    """Unpack into a temporary folder, check everything, then move it into place at once."""
    if expected is not None:
        say("checking", 0, 1)
        actual = file_sha256(archive)
        if actual != expected:
            raise BundleError(
                f"the bundle archive from {source} has SHA-256 {actual}, not {expected} "
                f"({SHA256_ENV}); it is not served"
            )
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.unpack-"))
    try:
        payload = staging / "payload"
        say("unpacking", 0, 1)
        _extract(archive, payload, source)
        manifest = check_folder(payload, full=True)
        name = _safe_member(manifest.get("name") or "catalogue").name
        payload.rename(staging / name)
        (staging / VERIFIED_MARK).write_text(json.dumps({"source": source, "name": name}))
        try:
            os.replace(staging, target)
        except OSError:  # another process put the same bundle in place first: use that one
            if _cached(target) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    folder = _cached(target)
    return OpenedBundle(folder, check_folder(folder, full=False), source)


def _extract(archive: Path, into: Path, source: str) -> None:
    """Extract an archive's regular files only, refusing paths that leave `into`."""
    into.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as packed:
                for member in packed.infolist():
                    if not member.is_dir():
                        target = into / _safe_member(member.filename)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with packed.open(member) as data, open(target, "wb") as out:
                            shutil.copyfileobj(data, out)
            return
        with tarfile.open(archive) as packed:
            packed.extractall(into, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise BundleError(
            f"the bundle archive from {source} is damaged or not an archive ({exc}); it is "
            "not served"
        ) from exc


def _safe_member(name: str) -> Path:
    pure = PurePosixPath(str(name).replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BundleError(f"the bundle lists the path {name!r}, which leaves the bundle folder")
    return Path(*pure.parts)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

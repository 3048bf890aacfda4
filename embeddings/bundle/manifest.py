"""What a bundle is: `bundle.json`, the rule for every path in a bundle, and checking a folder.

`bundle.json` never vouches for itself: it must be a JSON object of this format that lists every
file of the bundle (at least one) with its path, its size in bytes and its SHA-256, each path
once; a bundle folder holds exactly the listed files and `bundle.json`, as regular files in plain
folders (no links, no devices). Anything else is a `BundleError` naming what is wrong.

Every path (a listed file, an archive member, the catalogue's folder name) is relative, uses `/`,
climbs nowhere (`..`), and holds no empty, reserved (`CON`, `NUL`, ... on any system, so a bundle
unpacks the same everywhere) or over-long name, no backslash, drive letter or control character.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from embeddings.errors import EmbeddingsError

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1
#: The bundle's ONNX exports (text and upload queries without torch), laid out like the cache.
ENCODERS_DIR = "encoders"
#: Largest `bundle.json` read (about half a million listed files).
MANIFEST_MAX_BYTES = 64 << 20
#: Longest name of one folder or file (bytes of UTF-8, as most file systems allow) and path.
NAME_MAX_BYTES = 255
PATH_MAX_CHARS = 1024
RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{kind}{n}" for kind in ("COM", "LPT") for n in range(1, 10)]
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(EmbeddingsError):
    """A bundle cannot be opened: missing, damaged, partial, hostile or not a bundle."""


def path_problem(name: object) -> str | None:
    """What is wrong with `name` as a path inside a bundle, or None when it is fine."""
    if not isinstance(name, str):
        return "is not text"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\\" in name:
        return "holds a backslash"
    if name.startswith("/"):
        return "is absolute"
    if len(name) > PATH_MAX_CHARS:
        return f"is longer than {PATH_MAX_CHARS} characters"
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts:
        return "is empty"
    if len(parts[0]) == 2 and parts[0][1] == ":":
        return "starts with a drive letter"
    for part in parts:
        if part == "..":
            return "climbs out of the bundle folder (..)"
        if len(part.encode("utf-8")) > NAME_MAX_BYTES:
            return f"holds a name longer than {NAME_MAX_BYTES} bytes"
        if part.split(".")[0].rstrip(" ").upper() in RESERVED_NAMES:
            return f"uses the reserved name {part!r}"
    return None


def member_path(name: object, *, where: str) -> str:
    """`name` as a normalised relative path (`a/b`), or `BundleError` saying why it is refused."""
    problem = path_problem(name)
    if problem is not None:
        raise BundleError(
            f"{where}: the path {_shown(name)} {problem}; a bundle holds only relative paths "
            "inside its folder, so it is not served"
        )
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def parse_manifest(data: bytes, *, where: str) -> dict:
    """`bundle.json`'s content checked (see the module docstring), paths normalised."""
    if len(data) > MANIFEST_MAX_BYTES:
        raise BundleError(f"{where}: {BUNDLE_FILE} is over {MANIFEST_MAX_BYTES >> 20} MB")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{where}: {BUNDLE_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: {BUNDLE_FILE} is not a JSON object; publish it again")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{where}: bundle format {_shown(manifest.get('format'))} is not {BUNDLE_FORMAT}; "
            "publish it again with this version"
        )
    name = manifest["name"] = manifest.get("name") or "catalogue"
    if path_problem(name) or "/" in name or name.startswith("."):
        raise BundleError(
            f"{where}: the catalogue name {_shown(name)} in {BUNDLE_FILE} is not a plain folder "
            "name (no '/', no leading '.', no control characters, at most 255 bytes)"
        )
    manifest["files"] = _checked_files(manifest.get("files"), where)
    parts = manifest.get("parts", {})
    if not isinstance(parts, dict) or not all(_is_size(v) for v in parts.values()):
        raise BundleError(f"{where}: 'parts' in {BUNDLE_FILE} is not a table of sizes")
    return manifest


def declared_bytes(manifest: dict) -> int:
    """The bytes of every file a (checked) manifest lists."""
    return sum(entry["size"] for entry in manifest["files"])


def _checked_files(files: object, where: str) -> list[dict]:
    if not isinstance(files, list) or not files:
        raise BundleError(
            f"{where}: {BUNDLE_FILE} lists no files ('files' is {type(files).__name__}); every "
            "file of a bundle must be listed, so it is not served: publish it again"
        )
    checked, seen = [], set()
    for number, entry in enumerate(files, start=1):
        if not isinstance(entry, dict):
            raise BundleError(f"{where}: entry {number} of 'files' in {BUNDLE_FILE} is no object")
        path = member_path(entry.get("path"), where=f"{where}: {BUNDLE_FILE} entry {number}")
        if path == BUNDLE_FILE or path in seen:
            raise BundleError(f"{where}: {BUNDLE_FILE} lists {path} twice or lists itself")
        if not _is_size(entry.get("size")) or not isinstance(entry.get("sha256"), str):
            raise BundleError(
                f"{where}: {BUNDLE_FILE} lists {path} without a size in bytes or a SHA-256"
            )
        if not _SHA256.fullmatch(entry["sha256"]):
            raise BundleError(f"{where}: the SHA-256 of {path} in {BUNDLE_FILE} is not 64 digits")
        seen.add(path)
        checked.append({**entry, "path": path})
    clash = sorted(folders_of(seen) & seen)
    if clash:
        raise BundleError(f"{where}: {BUNDLE_FILE} lists {clash[0]} as a file and as a folder")
    return checked


def folders_of(paths) -> set[str]:
    """Every folder that holds one of the relative `paths` (`a/b/c` -> `a`, `a/b`)."""
    return {path.rsplit("/", i)[0] for path in paths for i in range(1, path.count("/") + 1)}


def check_folder(folder: Path, *, full: bool) -> dict:
    """`bundle.json` of `folder` after checking that the folder holds exactly the files it lists,
    with their sizes (and SHA-256 when `full`); raises `BundleError`."""
    folder = Path(folder)
    try:
        with open(folder / BUNDLE_FILE, "rb") as handle:
            data = handle.read(MANIFEST_MAX_BYTES + 1)
    except OSError as exc:
        raise BundleError(
            f"{folder} is not a bundle: {BUNDLE_FILE} is missing or unreadable ({exc})"
        ) from exc
    manifest = parse_manifest(data, where=str(folder))
    on_disk = regular_files(folder)
    listed = {entry["path"]: entry for entry in manifest["files"]}
    unlisted = sorted(set(on_disk) - set(listed) - {BUNDLE_FILE})
    if unlisted:
        more = f" (and {len(unlisted) - 1:,} more)" if len(unlisted) > 1 else ""
        raise BundleError(
            f"{folder}: {unlisted[0]}{more} is not listed in {BUNDLE_FILE}; every file of a "
            "bundle must be listed, so it is not served: publish or download it again"
        )
    for path, entry in listed.items():
        if on_disk.get(path) != entry["size"]:
            raise BundleError(
                f"{folder}: {path} is missing or has the wrong size; the bundle is "
                "incomplete: publish or download it again"
            )
        if full and _sha256_or_none(folder / path) != entry["sha256"]:
            raise BundleError(
                f"{folder}: {path} does not match its SHA-256 in {BUNDLE_FILE}; "
                "the bundle is damaged: publish or download it again"
            )
    return manifest


def regular_files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder`; `BundleError` on anything that is
    neither a regular file nor a folder (a link of any kind, a device, a FIFO, a socket)."""
    found, pending = {}, [Path(folder)]
    try:
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        relative = Path(entry.path).relative_to(folder).as_posix()
                        found[relative] = entry.stat(follow_symlinks=False).st_size
                    else:
                        raise BundleError(
                            f"{entry.path} is a link or a special file; a bundle holds regular "
                            "files and folders only, so it is not served"
                        )
    except OSError as exc:
        raise BundleError(f"{folder}: the bundle cannot be read ({exc})") from exc
    return found


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _is_size(value: object) -> bool:
    return type(value) is int and value >= 0


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..." + text[-12:]

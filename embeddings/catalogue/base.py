"""The catalogue: a table of products (id, image path, title, labels) plus its image folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from embeddings.atomic import write_temporary
from embeddings.errors import CatalogueError
from embeddings.locks import commit_lock

CATALOG_FILE = "catalog.json"
ITEMS_FILE = "items.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Skipped:
    """A row or file left out of a catalogue, and why (shown to the user after a scan)."""

    where: str
    reason: str


@dataclass
class ScanResult:
    """What an adapter found in a source folder."""

    root: Path
    items: pd.DataFrame  # columns: id, path, title, then label fields; all strings
    label_fields: list[str]
    main_label: str | None
    skipped: list[Skipped] = field(default_factory=list)
    recovered: list[Skipped] = field(default_factory=list)  # rows repaired, not dropped


#: Characters that split a line in `str.splitlines` without being control characters (Zl, Zp).
LINE_SEPARATORS = frozenset("\u2028\u2029")


def unstorable_name_reason(text: str, what: str = "file name") -> str | None:
    """Why an id or path cannot be stored in a catalogue's artefacts, or None when it can.

    Ids are stored one per line (`ids.txt`), so a name must not hold a line break or any other
    control character (Unicode category Cc: \\n, \\r, \\t, \\x00-\\x1f, \\x7f-\\x9f, which includes
    NEL \\x85), nor the line and paragraph separators U+2028/U+2029; and it must be encodable
    as UTF-8 (no lone surrogates, which stand for the bytes of a file name that is not UTF-8).
    Format characters (Cf) stay allowed: Persian names use the zero-width non-joiner U+200C and
    emoji the joiner U+200D, and neither breaks a line. `what` names the thing in the reason.
    """
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            return f"{what} is not valid UTF-8; rename it"
        if category == "Cc" or char in LINE_SEPARATORS:
            return f"{what} contains a line break or control character; rename it"
    return None


def safe_relative_path(raw: str, root: Path) -> str:
    """Validate a path from data (a CSV cell) against `root`; return it normalised (posix).

    Refuses absolute paths, drive letters and anything that climbs out of `root` ("../"),
    including through a symlink, with a `CatalogueError` naming the path.
    """
    text = str(raw).strip().replace("\\", "/")
    if not text:
        raise CatalogueError("empty image path")
    pure = PurePosixPath(text)
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise CatalogueError(
            f"image path {raw!r} is absolute; paths must be relative to the catalogue folder"
        )
    if ".." in pure.parts:
        raise CatalogueError(
            f"image path {raw!r} leaves the catalogue folder ('..' is not allowed)"
        )
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise CatalogueError(
            f"image path {raw!r} points outside the catalogue folder (through a link)"
        )
    return pure.as_posix()


def fingerprint_items(items: pd.DataFrame) -> str:
    """A hash of the (id, path) pairs in order: changes when products are added, removed or
    moved."""
    digest = hashlib.sha256()
    for item_id, path in zip(items["id"], items["path"], strict=True):
        digest.update(f"{item_id}\t{path}\n".encode())
    return digest.hexdigest()[:16]


class Catalogue:
    """A saved catalogue: `catalog.json` (where the images are, which labels) + `items.csv`.

    Items are indexed by their string id. The catalogue never holds image pixels; `image_path`
    resolves an item's file under `root`.
    """

    def __init__(self, directory: Path, info: dict, items: pd.DataFrame):
        self.directory = Path(directory)
        self.info = info
        self.items = items.set_index("id", drop=False)
        self.items.index.name = None
        root = Path(info["root"])  # a published bundle records its images folder relatively
        self.root = root if root.is_absolute() else self.directory / root
        self.label_fields: list[str] = list(info.get("label_fields", []))
        self.main_label: str | None = info.get("main_label")
        self.fingerprint: str = info["fingerprint"]

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike, *, lock: bool = True) -> Catalogue:
        """Read a saved catalogue. `lock=False` when the caller already holds its commit lock."""
        directory = Path(directory)
        info_path = directory / CATALOG_FILE
        if not info_path.is_file():
            raise CatalogueError(
                f"{directory} is not a catalogue (no {CATALOG_FILE}); build one with "
                "`python -m embeddings build --source PATH --out DIR`"
            )
        try:
            with commit_lock(directory) if lock else contextlib.nullcontext():  # one build's pair
                info = json.loads(info_path.read_text())
                items = pd.read_csv(directory / ITEMS_FILE, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise CatalogueError(
                f"{directory}: the catalogue files are unreadable ({exc}); rebuild it"
            ) from exc
        return cls(directory, info, items)

    @property
    def name(self) -> str:
        return self.directory.name

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return self.items["id"].tolist()

    def on_disk_fingerprint(self) -> str | None:
        """The fingerprint `catalog.json` holds now (None when unreadable): differs from
        `fingerprint` once a build has changed the catalogue since this object was opened."""
        try:
            return json.loads((self.directory / CATALOG_FILE).read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items.index

    def item(self, item_id: str) -> dict:
        """The item's row as a dict (id, path, title, labels); `KeyError` when unknown."""
        return self.items.loc[item_id].to_dict()

    def image_path(self, item_id: str) -> Path:
        """The item's image file, guaranteed to be inside the catalogue's root folder."""
        relative = self.items.at[item_id, "path"]
        return self.root / safe_relative_path(relative, self.root)

    def label_counts(self, label_field: str) -> pd.Series:
        return self.items[label_field].replace("", pd.NA).dropna().value_counts()

    def save(self) -> None:
        """Write `items.csv` and `catalog.json` so that no reader pairs one with the other's
        previous version: both are written in full first, then renamed into place (renames need
        no disk space, so a full disk fails before anything changes). A build calls it under the
        catalogue's exclusive commit lock, with its indexes.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        items = write_temporary(self.directory / ITEMS_FILE, self.items.to_csv(index=False))
        try:
            info = write_temporary(self.directory / CATALOG_FILE, json.dumps(self.info, indent=2))
        except BaseException:
            items.unlink(missing_ok=True)
            raise
        os.replace(items, self.directory / ITEMS_FILE)
        os.replace(info, self.directory / CATALOG_FILE)

    def model_dir(self, model_id: str) -> Path:
        """Where a model's index artefacts live (swapped whole on every build)."""
        from embeddings.models.naming import folder_name

        return self.directory / "models" / folder_name(model_id)

    def bridge_dir(self, model_id: str) -> Path:
        """Where a model's text bridge lives (outside `model_dir`, which rebuilds replace)."""
        from embeddings.models.naming import folder_name

        return self.directory / "bridges" / folder_name(model_id)

    def ids_matching(self, filters: dict[str, str] | None) -> set[str] | None:
        """Ids of the items whose labels equal every `field: value` in `filters` (None: no
        filter)."""
        if not filters:
            return None
        mask = None
        for field_name, value in filters.items():
            if field_name not in self.items.columns or field_name in ("id", "path"):
                raise CatalogueError(
                    f"no label field {field_name!r} in catalogue {self.name!r}; "
                    f"label fields: {', '.join(self.label_fields) or 'none'}"
                )
            match = self.items[field_name] == str(value)
            mask = match if mask is None else mask & match
        return set(self.items.index[mask])


def save_catalogue(
    directory: Path,
    scan: ScanResult,
    *,
    source: str,
    adapter: str,
    limit: int | None,
    seed: int,
    sidecar: str | None = None,
    write: bool = True,
) -> Catalogue:
    """Make the catalogue of a scan; with `write`, save it too (see `Catalogue.save`)."""
    items = scan.items.reset_index(drop=True)
    info = {
        "source": source,
        "adapter": adapter,
        "root": str(scan.root.resolve()),
        "label_fields": scan.label_fields,
        "main_label": scan.main_label,
        "count": len(items),
        "fingerprint": fingerprint_items(items),
        "limit": limit,
        "seed": seed,
        "sidecar": sidecar,
        "skipped": [{"where": s.where, "reason": s.reason} for s in scan.skipped],
        "recovered": [{"where": s.where, "reason": s.reason} for s in scan.recovered],
    }
    catalogue = Catalogue(Path(directory), info, items)
    if write:
        catalogue.save()
    return catalogue

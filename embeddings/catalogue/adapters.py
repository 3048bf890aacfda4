"""Dataset adapters: each turns a source folder into a `ScanResult`.

- `fashion-small`: Kaggle paramaggarwal/fashion-product-images-small (`images/<id>.jpg` +
  `styles.csv`)
- `digikala`: Kaggle masouduut94/digikala-color-classification (one folder per colour)
- `folder`: any folder of images; the parent folder is a label; an optional CSV sidecar adds
  titles and labels by file name.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pandas as pd

from embeddings.catalogue.base import (
    IMAGE_SUFFIXES,
    ScanResult,
    Skipped,
    safe_relative_path,
    unstorable_name_reason,
)
from embeddings.errors import CatalogueError

FASHION_COLUMNS = [
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
]
FASHION_LABELS = [
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "usage",
]

#: CSV sidecar file names the folder adapter picks up by itself.
SIDECAR_NAMES = ("metadata.csv", "labels.csv", "catalog.csv")


def decode_text(raw: bytes, where: str, recovered: list[Skipped]) -> str:
    """Decode a CSV file line by line: UTF-8 (a BOM allowed at the start of the file), and
    Windows-1252 only for the lines that are not valid UTF-8, each reported in `recovered` as
    `<where> line N` (N counts physical lines from 1).

    The bytes are split on b"\\n" before decoding (that byte occurs inside no multi-byte UTF-8
    character, nor in Windows-1252), then re-joined, so the CSV parser still sees a quoted field
    over several lines whole, and "\\r\\n" endings survive as they were.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    lines = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            recovered.append(
                Skipped(f"{where} line {number}", "not valid UTF-8; read as Windows-1252")
            )
            lines.append(line.decode("cp1252", errors="replace"))
    return "\n".join(lines)


def _find_styles_csv(root: Path) -> Path:
    for candidate in (root / "styles.csv", root / "myntradataset" / "styles.csv"):
        if candidate.is_file():
            return candidate
    raise CatalogueError(
        f"{root}: no styles.csv found "
        f"(looked in {root} and {root / 'myntradataset'}); "
        "is this the fashion-product-images-small dataset?"
    )


def scan_fashion_small(root: Path) -> ScanResult:
    """Read `styles.csv`, recovering titles with unquoted commas, and match `images/<id>.jpg`."""
    styles = _find_styles_csv(root)
    base = styles.parent
    images_dir = base / "images"
    if not images_dir.is_dir():
        raise CatalogueError(f"{base}: no images/ folder beside styles.csv")
    skipped: list[Skipped] = []
    recovered: list[Skipped] = []
    text = decode_text(styles.read_bytes(), styles.name, recovered)
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise CatalogueError(f"{styles}: the file is empty")
    header = [h.strip() for h in header]
    missing = [c for c in ("id", "productDisplayName") if c not in header]
    if missing:
        raise CatalogueError(
            f"{styles}: missing column(s) {', '.join(missing)}; "
            f"expected {','.join(FASHION_COLUMNS)}"
        )
    width = len(header)
    title_at = header.index("productDisplayName")
    labels = [c for c in FASHION_LABELS if c in header]
    available = {p.stem: p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    rows, seen = [], set()
    for line_no, fields in enumerate(reader, start=2):
        where = f"{styles.name} line {line_no}"
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) > width and title_at == width - 1:
            # The real download's titles hold unquoted commas: the extra fields are the title's.
            fields = fields[:title_at] + [",".join(fields[title_at:])]
            recovered.append(Skipped(where, "title had unquoted commas; joined back"))
        elif len(fields) != width:
            skipped.append(Skipped(where, f"{len(fields)} fields where {width} were expected"))
            continue
        record = dict(zip(header, (f.strip() for f in fields), strict=True))
        item_id = record["id"]
        if not item_id:
            skipped.append(Skipped(where, "empty id"))
            continue
        if reason := unstorable_name_reason(item_id, f"id {item_id!r}"):
            skipped.append(Skipped(where, reason))
            continue
        if item_id in seen:
            skipped.append(Skipped(where, f"duplicate id {item_id}; the first row was kept"))
            continue
        image = available.get(item_id)
        if image is None:
            skipped.append(Skipped(where, f"no image images/{item_id}.jpg"))
            continue
        seen.add(item_id)
        rows.append(
            {
                "id": item_id,
                "path": f"images/{image}",
                "title": record["productDisplayName"],
                **{label: record.get(label, "") for label in labels},
            }
        )
    items = pd.DataFrame(rows, columns=["id", "path", "title", *labels])
    return ScanResult(
        base, items, labels, "articleType" if "articleType" in labels else None, skipped, recovered
    )


def _image_files(root: Path) -> list[Path]:
    """Every image file under `root` (not following links out of it), in a stable order."""
    files = []
    for path in sorted(root.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if (
            path.suffix.lower() in IMAGE_SUFFIXES
            and path.is_file()
            and not hidden
            and path.resolve().is_relative_to(root.resolve())
        ):
            files.append(path)
    return files


def scan_folder(
    root: Path,
    *,
    sidecar: Path | None = None,
    label_name: str = "folder",
    main_label: str | None = None,
) -> ScanResult:
    """Any folder of images. id = path relative to `root` without extension (`red/shirt_01`);
    the image's parent folder becomes the label `label_name`; a CSV sidecar adds the rest."""
    skipped: list[Skipped] = []
    recovered: list[Skipped] = []
    rows, seen = [], {}
    for path in _image_files(root):
        relative = PurePosixPath(path.relative_to(root).as_posix())
        if reason := unstorable_name_reason(relative.as_posix()):
            skipped.append(Skipped(repr(relative.as_posix()), reason))  # a newline shows as \n
            continue
        item_id = relative.with_suffix("").as_posix()
        if item_id in seen:
            skipped.append(
                Skipped(relative.as_posix(), f"same id as {seen[item_id]}; the first was kept")
            )
            continue
        seen[item_id] = relative.as_posix()
        parent = relative.parent.name
        rows.append({"id": item_id, "path": relative.as_posix(), "title": "", label_name: parent})
    if not rows:
        raise CatalogueError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    items = pd.DataFrame(rows, columns=["id", "path", "title", label_name])
    labels = [label_name] if items[label_name].ne("").any() else []
    if not labels:
        items = items.drop(columns=[label_name])
    if sidecar is None:
        sidecar = next((root / n for n in SIDECAR_NAMES if (root / n).is_file()), None)
    if sidecar is not None:
        items, extra = _merge_sidecar(items, Path(sidecar), root, skipped, recovered)
        labels += [c for c in extra if c not in labels]
    main = main_label or (labels[0] if labels else None)
    return ScanResult(root, items, labels, main, skipped, recovered)


def _merge_sidecar(
    items: pd.DataFrame, sidecar: Path, root: Path, skipped: list[Skipped], recovered: list[Skipped]
) -> tuple[pd.DataFrame, list[str]]:
    """Join a CSV whose `file` (or `path`, `filename`, `image`, `id`) column names images under
    root; rows naming nothing storable or nothing there are reported in `skipped`."""
    if not sidecar.is_file():
        raise CatalogueError(f"sidecar CSV {sidecar} does not exist")
    text = decode_text(sidecar.read_bytes(), sidecar.name, recovered)
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    key = next((c for c in ("file", "path", "filename", "image", "id") if c in header), None)
    if key is None:
        raise CatalogueError(
            f"{sidecar}: needs a column named file, path, filename, image or id "
            f"(found: {', '.join(header) or 'nothing'})"
        )
    extra = [c for c in header if c not in (key, "title", "id", "path")]
    by_id = {}
    for line_no, fields in enumerate(reader, start=2):
        where = f"{sidecar.name} line {line_no}"
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            skipped.append(
                Skipped(where, f"{len(fields)} fields where {len(header)} were expected")
            )
            continue
        record = dict(zip(header, (f.strip() for f in fields), strict=True))
        if reason := unstorable_name_reason(record[key], f"{key} {record[key]!r}"):
            skipped.append(Skipped(where, reason))
            continue
        try:
            relative = safe_relative_path(record[key], root)
        except CatalogueError as exc:
            skipped.append(Skipped(where, str(exc)))
            continue
        item_id = PurePosixPath(relative).with_suffix("").as_posix() if key != "id" else relative
        if item_id in by_id:
            skipped.append(Skipped(where, f"duplicate entry for {relative}; the first was kept"))
            continue
        by_id[item_id] = record
    unknown = set(by_id) - set(items["id"])
    for item_id in sorted(unknown):
        skipped.append(Skipped(sidecar.name, f"{by_id[item_id][key]}: no such image under {root}"))
    items = items.copy()
    if "title" in header:
        items["title"] = [
            by_id.get(i, {}).get("title", t)
            for i, t in zip(items["id"], items["title"], strict=True)
        ]
    for column in extra:
        items[column] = [by_id.get(i, {}).get(column, "") for i in items["id"]]
    return items, extra


def scan_digikala(root: Path) -> ScanResult:
    """Digikala colour classification: one folder per colour class, so the label is `color`."""
    return scan_folder(root, label_name="color", main_label="color")


ADAPTERS: dict[str, Callable[..., ScanResult]] = {
    "fashion-small": scan_fashion_small,
    "digikala": scan_digikala,
    "folder": scan_folder,
}

#: Kaggle dataset handles and the adapter that reads each.
KAGGLE_HANDLES = {
    "paramaggarwal/fashion-product-images-small": "fashion-small",
    "masouduut94/digikala-color-classification": "digikala",
}


def detect_adapter(root: Path) -> str:
    """`fashion-small` when a styles.csv sits beside images/, else `folder`."""
    try:
        _find_styles_csv(root)
        return "fashion-small"
    except CatalogueError:
        return "folder"

"""Publishing a catalogue: a self-contained, read-only bundle made to be served, not rebuilt.

`publish_bundle(catalogue, models, out)` writes into `out` (a new folder):

- `catalog.json` and `items.csv`: the catalogue's table, unchanged (its fingerprint, hence every
  index manifest, stays valid), with the images' root set to the bundle's own `images/`;
- `images/`: every product's thumbnail at tile size (`THUMB_SIZE`), under the item's own path
  (small web images are copied as they are, others re-encoded as JPEG);
- `models/<model>/`: the index, `ids.txt` and the manifest, and nothing twice: no `vectors.npy`
  (the index holds the vectors); raw pixels as exact bytes (`store_dtype="uint8"`); an index that
  lives in Milvus becomes a FAISS file;
- `bridges/<model>/`: the text bridges of the published models (weights, bias, manifest);
- `encoders/`: what text and upload queries need to run without torch (see `encoder_files`);
- `evaluation/`: the saved evaluation, when it covers the published models (the Compare page);
- `bundle.json`: every file with its size and SHA-256, the size of each part, the models.

With `archive` it also writes one compressed file (`.tar.gz` or `.zip`) of the bundle, for hosting
anywhere. `embeddings.bundle.open` opens, checks and unpacks bundles for the app.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath

from PIL import Image

from embeddings.artefacts import REPORTS_DIR, index_identity, report_path
from embeddings.bundle.limits import BundleLimits
from embeddings.bundle.manifest import (
    BUNDLE_FILE,
    BUNDLE_FORMAT,
    ENCODERS_DIR,
    file_sha256,
    member_path,
)
from embeddings.catalogue import Catalogue
from embeddings.catalogue.base import CATALOG_FILE, ITEMS_FILE
from embeddings.errors import EmbeddingsError, ImageError
from embeddings.images import open_rgb
from embeddings.index.fused import fused_parts
from embeddings.index.store import (
    IDS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    NORMS_FILE,
    commit_staged,
    load_vectors,
    read_manifest,
    stage_model_index,
)
from embeddings.locks import commit_lock
from embeddings.models.naming import folder_name
from embeddings.progress import Progress, ProgressFn, no_progress
from embeddings.quality.evaluate import RESULTS_FILE, load_results

IMAGES_DIR = "images"
#: Longest side of a bundled thumbnail (the app's tiles show about 100-150 CSS pixels).
THUMB_SIZE = 200
#: Web images up to this size that already fit are copied as they are.
PASS_THROUGH_BYTES = 48_000
WEB_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
ARCHIVE_KINDS = ("tar.gz", "zip")


@dataclass
class BundleReport:
    """What `publish_bundle` wrote: the folder, the archive, and the bytes of each part."""

    folder: Path
    parts: dict[str, int] = field(default_factory=dict)
    archive: Path | None = None
    archive_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())


def publish_bundle(
    catalogue: Catalogue,
    models: Sequence[str],
    out: Path,
    *,
    archive: str | None = None,
    bridges: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> BundleReport:
    """Write the bundle of `catalogue` with `models` into the new folder `out` (see the module
    docstring). `archive` ("tar.gz" or "zip") also writes `<out>.<kind>`; `bridges` names the
    models whose text bridges go in (default: every published model's). Raises
    `EmbeddingsError` before writing anything when a model is not built or `out` exists."""
    say = progress or no_progress
    out = Path(out)
    report = BundleReport(out)
    # Under the shared commit lock: a build commits before or after this copy, never during it,
    # so the table, the indexes, the bridges and the maps all come from one build.
    with commit_lock(catalogue.directory):
        catalogue = Catalogue.open(catalogue.directory, lock=False)
        _check_request(catalogue, models, out, archive)
        bridges = list(models) if bridges is None else list(bridges)
        if set(bridges) - set(models):
            raise EmbeddingsError(
                f"--bridges {','.join(sorted(set(bridges) - set(models)))}: only published "
                f"models' bridges can go in (--models {','.join(models)})"
            )
        _stage_bundle(catalogue, models, bridges, report, say)
    report.notes += _size_note(report)
    if archive:
        say(Progress("archive", None, 0, 1, "writing the archive"))
        report.archive = write_archive(out, archive)
        say(Progress("archive", None, 1, 1, "writing the archive"))
        report.archive_bytes = report.archive.stat().st_size
    return report


def _stage_bundle(
    catalogue: Catalogue, models: Sequence[str], bridges: list[str], report, say: ProgressFn
) -> None:
    """Write every part into a staging folder beside `report.folder`, then rename it there."""
    staging = report.folder.with_name(f".{report.folder.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_table(catalogue, staging)
        _write_thumbnails(catalogue, staging, say)
        for model_id in models:
            say(Progress("index", model_id, 0, 1, "copying the index"))
            _write_index(catalogue, model_id, staging / "models" / folder_name(model_id))
            say(Progress("index", model_id, 1, 1, "copying the index"))
            if model_id in bridges:
                _copy_bridge(
                    catalogue, model_id, staging / "bridges" / folder_name(model_id), report
                )
            report.notes += _copy_derived(catalogue, model_id, staging)
        _copy_encoders(catalogue, models, staging, say)
        report.notes += _copy_evaluation(catalogue, models, staging)
        _write_manifest(catalogue, models, staging, report)
        staging.rename(report.folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _size_note(report: BundleReport) -> list[str]:
    """A note when the bundle is larger than servers with this machine's size cap open."""
    try:
        limits = BundleLimits.from_env()
    except EmbeddingsError:
        return []
    if report.total_bytes <= limits.max_bytes:
        return []
    return [
        f"the bundle holds {report.total_bytes / 1e9:,.3g} GB, more than a server opens with "
        f"the size limit {limits.describe()}: raise it where the bundle is served"
    ]


def _check_request(
    catalogue: Catalogue, models: Sequence[str], out: Path, archive: str | None
) -> None:
    if out.exists():
        raise EmbeddingsError(f"--out {out} already exists; publish into a new folder")
    if archive is not None and archive not in ARCHIVE_KINDS:
        raise EmbeddingsError(f"--archive {archive!r}: choose one of {', '.join(ARCHIVE_KINDS)}")
    if not models:
        raise EmbeddingsError("name at least one model to publish, e.g. --models pixels")
    for model_id in models:
        _refuse_local_path(model_id)
        manifest = read_manifest(catalogue.model_dir(model_id))
        if manifest is None or manifest.get("catalogue_fingerprint") != catalogue.fingerprint:
            raise EmbeddingsError(
                f"model {model_id!r} has no up-to-date index in catalogue {catalogue.name!r}; "
                f"build it first: python -m embeddings build --catalog {catalogue.directory} "
                f"--models {model_id}"
            )


def _refuse_local_path(model_id: str) -> None:
    """A bundle records no path of this machine: a model named by its folder is refused."""
    from embeddings.models.family import family_id_of
    from embeddings.models.naming import local_path

    family_id = family_id_of(model_id)
    if family_id is None or local_path(family_id) is None:
        return
    family = family_id.partition(":")[0]
    raise EmbeddingsError(
        f"model {model_id!r} is named by a folder of this machine, which a bundle does not "
        f"record; give it a name and the folder as its weights, build and publish that: "
        f"--models {family}:NAME --weights {family}:NAME=FOLDER (for open_clip and timm, "
        f"{family}:hf-hub:NAME); the bundle then knows it by its content hash and its encoder"
    )


def _write_table(catalogue: Catalogue, folder: Path) -> None:
    (folder / CATALOG_FILE).write_text(json.dumps(portable_info(catalogue.info), indent=2))
    shutil.copyfile(catalogue.directory / ITEMS_FILE, folder / ITEMS_FILE)


def portable_info(info: dict) -> dict:
    """The catalogue's record as a bundle keeps it: no path of the publishing machine (the
    images are the bundle's own; a local source or sidecar keeps only its file name)."""
    kept = {key: value for key, value in info.items() if key != "published_from"}
    kept["root"] = IMAGES_DIR
    for key in ("source", "sidecar"):
        value = kept.get(key)
        if isinstance(value, str) and _is_local_path(value):
            kept[key] = PurePath(value.replace("\\", "/")).name
    return kept


def _is_local_path(value: str) -> bool:
    """An absolute path (POSIX, Windows or `~`), as opposed to a dataset handle."""
    return value.startswith(("/", "~", "\\")) or PureWindowsPath(value).drive != ""


def _write_thumbnails(catalogue: Catalogue, folder: Path, say: ProgressFn) -> None:
    """Every product's image at tile size, under its own relative path in `images/`."""
    ids = catalogue.ids
    for done, item_id in enumerate(ids, start=1):
        target = folder / IMAGES_DIR / catalogue.items.at[item_id, "path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(thumbnail_bytes(catalogue.image_path(item_id)))
        if done % 500 == 0 or done == len(ids):
            say(Progress("thumbnails", None, done, len(ids), "thumbnails"))


def thumbnail_bytes(path: Path) -> bytes:
    """A product image at tile size: small web images as they are, others as a JPEG.

    An unreadable image becomes an empty file (the app shows its placeholder for it), as the
    catalogue's own build skipped it too.
    """
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as probe:
            as_is = (
                probe.format in WEB_FORMATS
                and max(probe.size) <= THUMB_SIZE
                and not probe.getexif().get(0x0112)
                and len(data) <= PASS_THROUGH_BYTES
            )
        if as_is:
            return data
        image = open_rgb(data, name=str(path))
    except (OSError, ImageError, Image.DecompressionBombError):
        return b""
    image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _write_index(catalogue: Catalogue, model_id: str, target: Path) -> None:
    """One copy of the vectors: the FAISS file as built, or rebuilt from the vectors when the
    index is in Milvus or raw pixels are stored as float32 (they become exact bytes)."""
    source = catalogue.model_dir(model_id)
    manifest = read_manifest(source)
    if manifest.get("backend", "faiss") == "faiss" and not _wants_bytes(model_id, manifest):
        target.mkdir(parents=True)
        for name in (INDEX_FILE, IDS_FILE, MANIFEST_FILE, NORMS_FILE):
            if (source / name).is_file():
                shutil.copyfile(source / name, target / name)
        return
    ids, vectors = load_vectors(source)
    keep = {k: v for k, v in manifest.items() if k not in ("milvus", "backend", "index_type")}
    store = (
        "uint8" if _wants_bytes(model_id, manifest) else manifest.get("vectors_dtype", "float32")
    )
    staged = stage_model_index(
        target,
        ids=ids,
        vectors=vectors,
        manifest=keep,
        store_dtype=store,
        hnsw_above=manifest.get("hnsw_above", 100_000),
    )
    commit_staged(staged)
    (target / "vectors.npy").unlink(missing_ok=True)  # the index holds the vectors
    # The manifest keeps its build time, so saved evaluations and bridges still match it.
    written = json.loads((target / MANIFEST_FILE).read_text())
    written["built_at"] = manifest.get("built_at")
    written["published"] = {"store": store, "from_backend": manifest.get("backend", "faiss")}
    (target / MANIFEST_FILE).write_text(json.dumps(written, indent=2))


def _wants_bytes(model_id: str, manifest: dict) -> bool:
    from embeddings.models import get_spec

    try:
        return get_spec(model_id).byte_valued and manifest.get("vectors_dtype") != "uint8"
    except EmbeddingsError:
        return False


def _copy_bridge(catalogue: Catalogue, model_id: str, target: Path, report: BundleReport) -> None:
    source = catalogue.bridge_dir(model_id)
    if not (source / MANIFEST_FILE).is_file():
        return
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):  # every recipe's files (the memory recipe has more)
        if path.is_file() and not path.name.startswith("."):
            shutil.copyfile(path, target / path.name)


def _copy_derived(catalogue: Catalogue, model_id: str, staging: Path) -> list[str]:
    """The model's saved map and near-duplicate pairs (the Map and Duplicates pages), when they
    are current, re-tied to the bundle's copy of the index (same vectors, new manifest)."""
    from embeddings.artefacts import (
        KINDS,
        artefact_dir,
        check_current,
        index_identity,
        read_artefact_manifest,
    )

    notes = []
    bundled_index = index_identity(read_manifest(staging / "models" / folder_name(model_id)))
    for kind in KINDS:
        manifest = read_artefact_manifest(catalogue, kind, model_id)
        if manifest is None:
            command = {"maps": "map --models", "duplicates": "duplicates --model"}[kind]
            notes.append(
                f"{model_id}: no saved {kind} (python -m embeddings {command} {model_id} "
                "--catalog ... makes them, before publishing)"
            )
            continue
        try:
            check_current(catalogue, kind, model_id, manifest, hint="")
        except EmbeddingsError:
            notes.append(f"{model_id}: its saved {kind} are stale and were left out")
            continue
        target = staging / kind / folder_name(model_id)
        shutil.copytree(artefact_dir(catalogue, kind, model_id), target)
        manifest["index"] = bundled_index
        (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return notes


def _copy_encoders(
    catalogue: Catalogue, models: Sequence[str], staging: Path, say: ProgressFn
) -> None:
    """The ONNX exports that text and upload queries need, laid out like `$EMBEDDINGS_MODELS`:
    each published neural model's, and the sentence encoder when a text bridge is published."""
    from embeddings.models import get_spec

    folders = []
    for model_id in models:
        if get_spec(model_id).onnx:
            weights_id = read_manifest(catalogue.model_dir(model_id))["weights_id"]
            folders.append(_model_export(model_id, weights_id))
    if any((staging / "bridges").glob("*/" + MANIFEST_FILE)):
        from embeddings.bridge.sentences import sentence_export

        folders.append(sentence_export().folder)
    for done, folder in enumerate(folders):
        say(Progress("encoders", None, done, len(folders), "query encoders"))
        # <model>/<weights slug>/, as in the cache (lock files live beside it, not inside)
        shutil.copytree(folder, staging / ENCODERS_DIR / folder.parent.name / folder.name)
    say(Progress("encoders", None, len(folders), len(folders), "query encoders"))


def _model_export(model_id: str, weights_id: str) -> Path:
    """The export folder of the weights the index was built with, made now when missing."""
    from embeddings.models import expected_weights_id, load_model
    from embeddings.models.onnx_cache import StaleExport, export_dir, open_export

    try:
        return open_export(export_dir(model_id, weights_id), model_id, weights_id).folder
    except StaleExport as exc:
        if weights_id != expected_weights_id(model_id, {}):
            raise EmbeddingsError(
                f"model {model_id!r} was built with local weights {weights_id} whose ONNX export "
                f"is not in the models cache ({exc}); make it first: python -m embeddings export "
                f"--models {model_id} --weights {model_id}=PATH, then publish again"
            ) from None
    return load_model(model_id, runtime="onnx").export.folder


def _copy_evaluation(catalogue: Catalogue, models: Sequence[str], folder: Path) -> list[str]:
    """The saved evaluation (the Compare page) when it is current, narrowed to the published
    models and re-tied to the bundle's copies of their indexes (as maps are)."""
    result = load_results(catalogue)
    if result is None:
        return ["no current saved evaluation: the Compare page will say how to measure one"]
    data = result.to_json()
    entries = data["manifest"].get("models", {})
    kept = {m for m in entries if all(p in models for p in fused_parts(m))}
    data["manifest"]["models"] = {m: e for m, e in entries.items() if m in kept}
    data["rows"] = [row for row in data["rows"] if row["model"] in kept]
    for key in ("score_samples", "text_score_samples", "neighbours"):
        data[key] = {m: v for m, v in (data.get(key) or {}).items() if m in kept}
    _retie(data["manifest"]["models"], folder)
    target = report_path(folder, RESULTS_FILE)
    target.parent.mkdir()
    target.write_text(json.dumps(data))
    return []


def _retie(entries: dict, folder: Path) -> None:
    """Point each model entry's recorded index identity at the bundle's copy of the index."""
    for model_id, entry in entries.items():
        if "parts" in entry:
            _retie(entry["parts"], folder)
        else:
            entry["index_fingerprint"] = index_identity(read_manifest(folder / "models" / model_id))


def _write_manifest(
    catalogue: Catalogue, models: Sequence[str], folder: Path, report: BundleReport
) -> None:
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        member_path(relative, where=f"publishing {catalogue.name}")  # as opening will check it
        files.append({"path": relative, "size": path.stat().st_size, "sha256": file_sha256(path)})
        part = _part_of(relative)
        report.parts[part] = report.parts.get(part, 0) + path.stat().st_size
    bundle = {
        "format": BUNDLE_FORMAT,
        "name": catalogue.name,
        "catalogue_fingerprint": catalogue.fingerprint,
        "products": len(catalogue),
        "models": list(models),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parts": report.parts,
        "files": files,
    }
    (folder / BUNDLE_FILE).write_text(json.dumps(bundle, indent=1))


def _part_of(relative: str) -> str:
    """The size-table row a bundle file counts in."""
    top, _, rest = relative.partition("/")
    if top in ("models", "bridges"):
        return f"{top[:-1]} {rest.split('/')[0]}"
    if top in ("maps", "duplicates"):
        return top
    return {
        IMAGES_DIR: "thumbnails",
        ENCODERS_DIR: "query encoders",
        "evaluation": REPORTS_DIR,
    }.get(top, "item table")


def write_archive(folder: Path, kind: str) -> Path:
    """One compressed file of a bundle folder (members relative to the folder), beside it:
    `bundle.json` first (so an opener checks every member against it before writing any), then
    the files in order; no folders, no links, no owner names of the publishing machine."""
    target = folder.with_name(f"{folder.name}.{kind}")
    partial = target.with_name(f".{target.name}.part")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / BUNDLE_FILE)
    files.insert(0, folder / BUNDLE_FILE)
    if kind == "zip":
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as packed:
            for path in files:
                packed.write(path, path.relative_to(folder).as_posix())
    else:
        with tarfile.open(partial, "w:gz") as packed:
            for path in files:
                packed.add(
                    path,
                    arcname=path.relative_to(folder).as_posix(),
                    recursive=False,
                    filter=_anonymous,
                )
    partial.rename(target)
    return target


def _anonymous(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mode = 0o644
    return member


def size_table(report: BundleReport) -> list[tuple[str, int]]:
    """(part, bytes) rows, largest first, then the total (and the archive when written)."""
    rows = sorted(report.parts.items(), key=lambda row: -row[1])
    rows.append(("total", report.total_bytes))
    if report.archive is not None:
        rows.append((f"archive {report.archive.name}", report.archive_bytes))
    return rows

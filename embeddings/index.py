"""Per-model index artefacts on disk, and loading them back safely.

A model's folder in a catalogue (`<catalogue>/models/<model id>/`) holds:

- `index.faiss`: inner product over L2-normalised vectors (= cosine); `IndexFlatIP` (exact)
  up to `hnsw_above` vectors, `IndexHNSWFlat` above; with `store_dtype="float16"` the same
  index types hold float16 codes (`IndexScalarQuantizer` / `IndexHNSWSQ`, QT_fp16): half the
  memory, exact scan over the float16-rounded vectors;
- `vectors.npy`: the same vectors, row-aligned (float32, or float16 when asked);
- `ids.txt`: one catalogue id per row, in row order;
- `manifest.json`: what built it (model id, weights id, dim, count, metric, index type, library
  versions, build time, the catalogue's fingerprint) and what was skipped.

The folder is written beside the old one and swapped in, so readers never see half an index.
Loading checks the manifest against the catalogue and the model and says what to rebuild.
With `mmap=True` the index's vectors are memory-mapped (FAISS `IO_FLAG_MMAP_IFC`): opening is
instant and the pages are shared with the page cache instead of copied into the process.

A manifest with `"backend": "milvus"` (built with `--backend milvus`) has no `index.faiss`: its
vectors live in a Milvus collection and `load_model_index` returns a `MilvusIndex`
(`embeddings.milvus_backend`) with the same interface.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.errors import IndexMismatchError, IndexMissingError

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.txt"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

#: Above this many vectors an HNSW graph replaces the exact scan (configurable per build).
DEFAULT_HNSW_ABOVE = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
#: A filtered search on an HNSW index allowing at most this many rows scans them exactly
#: instead of walking the graph (a graph walk can run dry when few nodes pass the filter).
EXACT_FILTER_ROWS = 20_000
STORE_DTYPES = ("float32", "float16")
BACKENDS = ("faiss", "milvus")


def _faiss():
    import faiss  # imported on first use: listing catalogues needs no FAISS

    return faiss


def make_faiss_index(vectors: np.ndarray, *, hnsw_above: int = DEFAULT_HNSW_ABOVE,
                     store_dtype: str = "float32"):
    """An inner-product FAISS index over `vectors` (float32, L2-normalised rows).

    `store_dtype="float16"` keeps float16 codes in the index (half the RAM); scores are then
    those of the float16-rounded vectors (differences around 1e-3).
    """
    faiss = _faiss()
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, not {store_dtype!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    half = store_dtype == "float16"
    if len(vectors) > hnsw_above:
        index = (faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT)
                 if half else faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT))
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif half:
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    return index


def index_kind(index) -> str:
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    # IndexFlat and the float16 IndexScalarQuantizer are both exhaustive scans.
    return "flat" if isinstance(index, faiss.IndexFlatCodes) else type(index).__name__


def library_versions() -> dict[str, str]:
    import faiss

    versions = {"python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    return versions


def write_model_index(model_dir: Path, *, ids: list[str], vectors: np.ndarray, manifest: dict,
                      hnsw_above: int = DEFAULT_HNSW_ABOVE, store_dtype: str = "float32",
                      backend: str = "faiss", labels: dict[str, list[str]] | None = None,
                      milvus_uri: str | None = None, milvus_token: str | None = None) -> dict:
    """Write all four artefacts into a fresh folder, then swap it in for `model_dir`.

    Returns the manifest written. `manifest` must hold model_id, weights_id and
    catalogue_fingerprint; counts, dims, versions and the index type are filled in here.

    `backend="milvus"` pushes the vectors into a new Milvus collection first (`milvus_uri`,
    default: Milvus Lite in `<catalogue>/milvus.db`; `labels` {label field: value per row}
    become its scalar fields), writes the folder without `index.faiss`, then drops the
    collections of earlier builds.
    """
    model_dir = Path(model_dir)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    index = milvus = None
    if backend == "faiss":
        index = make_faiss_index(vectors, hnsw_above=hnsw_above, store_dtype=store_dtype)
        kind = index_kind(index)
    else:
        from embeddings import milvus_backend

        catalogue_dir = model_dir.parent.parent
        milvus_uri = milvus_uri or milvus_backend.default_lite_uri(catalogue_dir)
        kind = "hnsw" if len(vectors) > hnsw_above else "flat"
        milvus = milvus_backend.push_vectors(
            catalogue_dir=catalogue_dir, model_id=manifest["model_id"], uri=milvus_uri, token=milvus_token,
            ids=list(ids), vectors=vectors, labels=labels or {}, hnsw=kind == "hnsw", hnsw_m=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
    manifest = {
        "format": FORMAT_VERSION,
        **manifest,
        "dim": dim,
        "count": len(ids),
        "metric": "cosine (inner product over L2-normalised vectors)",
        "backend": backend,
        "index_type": kind,
        "vectors_dtype": store_dtype,
        "libraries": library_versions(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if milvus is None:
        _write_folder(model_dir, index, ids, vectors, manifest, store_dtype)
        return manifest
    manifest["milvus"] = milvus
    try:
        _write_folder(model_dir, index, ids, vectors, manifest, store_dtype)
    except BaseException:
        milvus_backend.drop_collection_quietly(milvus_uri, milvus_token, milvus["collection"])
        raise
    # Only now that the manifest names the new collection are the older ones unreferenced.
    milvus_backend.drop_stale_collections(catalogue_dir=catalogue_dir, model_id=manifest["model_id"],
                                          uri=milvus_uri, token=milvus_token, keep=milvus["collection"])
    return manifest


def _write_folder(model_dir: Path, index, ids: list[str], vectors: np.ndarray, manifest: dict,
                  store_dtype: str) -> None:
    """Stage the artefacts in a fresh folder, fsync them, swap it in (no index file for Milvus)."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in model_dir.parent.glob(f".{model_dir.name}.new-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}.new-"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; an index is as readable as its catalogue
        names = [VECTORS_FILE, IDS_FILE, MANIFEST_FILE]
        if index is not None:
            _faiss().write_index(index, str(staging / INDEX_FILE))
            names.insert(0, INDEX_FILE)
        np.save(staging / VECTORS_FILE, vectors.astype(store_dtype))
        (staging / IDS_FILE).write_text("".join(f"{i}\n" for i in ids))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        for name in names:
            with open(staging / name, "rb") as handle:
                os.fsync(handle.fileno())
        _swap_in(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by `staging`: rename old aside, rename new in, drop old.

    A crash between the two renames leaves `<target>.old`, which `recover_interrupted_swap`
    puts back on the next load or build.
    """
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_swap(model_dir: Path) -> None:
    old = model_dir.with_name(model_dir.name + ".old")
    if not model_dir.exists() and old.exists():
        os.replace(old, model_dir)


def read_manifest(model_dir: Path) -> dict | None:
    """The manifest of a built index, or None when there is none (or it is unreadable)."""
    recover_interrupted_swap(Path(model_dir))
    try:
        return json.loads((Path(model_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class ModelIndex:
    """A loaded index: search it with `search`, map rows to ids with `ids` / `row_of`.

    Label filters reach it as row numbers (`search(rows=...)`); `MilvusIndex`, which evaluates
    them itself, says so with `native_filters = True`.
    """

    native_filters = False  # class attributes, not dataclass fields
    backend = "faiss"

    model_id: str
    manifest: dict
    index: object  # a faiss.Index
    ids: list[str]
    row_of: dict[str, int]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def weights_id(self) -> str:
        return self.manifest["weights_id"]

    def __len__(self) -> int:
        return len(self.ids)

    def vector(self, item_id: str) -> np.ndarray:
        """The stored vector of an item (reconstructed from the index: no second copy in RAM)."""
        return self.index.reconstruct(self.row_of[item_id])

    def search(self, queries: np.ndarray, k: int, *, rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search: (scores, rows), each (n_queries, min(k, len)); rows of -1 are padding.

        `rows` restricts the search to those row numbers (a label filter), exactly: on an HNSW
        graph, up to `EXACT_FILTER_ROWS` allowed rows are scanned one by one rather than hoping
        the graph walk meets enough of them.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise IndexMismatchError(
                f"query vectors have {queries.shape[1]} dimensions but the {self.model_id!r} index "
                f"has {self.dim}: the query was embedded by another model")
        k = max(0, min(int(k), len(self.ids) if rows is None else len(rows)))
        if k == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if rows is None:
            return self.index.search(queries, k)
        faiss = _faiss()
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        hnsw = isinstance(self.index, faiss.IndexHNSW)
        if hnsw and len(rows) <= EXACT_FILTER_ROWS:
            return self._scan_rows(queries, rows, k)
        selector = faiss.IDSelectorBatch(rows)
        if hnsw:  # widen the walk in proportion to how much of the graph the filter hides
            widened = int(self.index.hnsw.efSearch * len(self.ids) / max(1, len(rows)))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=min(max(HNSW_EF_SEARCH, k, widened), 4096))
        else:
            params = faiss.SearchParameters(sel=selector)
        return self.index.search(queries, k, params=params)

    def _scan_rows(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the given rows only (their vectors decoded from the index)."""
        scores = queries @ self.index.reconstruct_batch(rows).T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < len(rows) else np.tile(np.arange(len(rows)), (len(queries), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return (np.take_along_axis(top_scores, order, axis=1).astype(np.float32),
                rows[np.take_along_axis(top, order, axis=1)])


def load_model_index(model_dir: Path, *, catalogue_fingerprint: str, model_id: str,
                     weights_id: str | None = None, mmap: bool = False,
                     rebuild_hint: str = "") -> ModelIndex:
    """Load a model's index, refusing one that does not belong to this catalogue or model.

    `mmap` maps the stored vectors instead of reading them (FAISS backend). A manifest of a
    Milvus build returns a `MilvusIndex` connected to its collection. Raises `IndexMissingError` when nothing is built, `IndexMismatchError` when the manifest
    names another model, other weights or another version of the catalogue, or when the files
    disagree with it (a truncated or swapped file).
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    hint = rebuild_hint or f"rebuild it: python -m embeddings build ... --models {model_id}"
    if manifest is None:
        raise IndexMissingError(f"no index for model {model_id!r} in {model_dir.parent.parent}; {hint}")
    if manifest.get("model_id") != model_id:
        raise IndexMismatchError(f"{model_dir}: built by model {manifest.get('model_id')!r}, not {model_id!r}; {hint}")
    if weights_id is not None and manifest.get("weights_id") != weights_id:
        raise IndexMismatchError(f"{model_dir}: built with weights {manifest.get('weights_id')!r}, "
                                 f"not {weights_id!r}; {hint}")
    if manifest.get("catalogue_fingerprint") != catalogue_fingerprint:
        raise IndexMismatchError(f"{model_dir}: built for another version of the catalogue (its products "
                                 f"changed since); {hint}")
    if manifest.get("backend", "faiss") == "milvus":
        from embeddings.milvus_backend import load_milvus_index

        return load_milvus_index(model_dir, manifest, rebuild_hint=hint)
    faiss = _faiss()
    try:
        # MMAP_IFC maps flat codes (IndexFlat, IndexScalarQuantizer, HNSW storage); plain
        # IO_FLAG_MMAP only maps inverted lists and would still copy a flat index into RAM.
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(model_dir / INDEX_FILE), flags)
        ids = (model_dir / IDS_FILE).read_text().splitlines()
    except (RuntimeError, OSError) as exc:
        raise IndexMismatchError(f"{model_dir}: the index files are damaged ({str(exc).splitlines()[0][:200]}); {hint}") from exc
    if index.ntotal != manifest["count"] or len(ids) != manifest["count"] or index.d != manifest["dim"]:
        raise IndexMismatchError(
            f"{model_dir}: files disagree with the manifest ({index.ntotal} vectors, {len(ids)} ids, "
            f"dim {index.d}; manifest says {manifest['count']} x {manifest['dim']}); {hint}")
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(index.hnsw.efSearch, HNSW_EF_SEARCH)
    return ModelIndex(model_id, manifest, index, ids, {item_id: row for row, item_id in enumerate(ids)})


def load_vectors(model_dir: Path) -> tuple[list[str], np.ndarray]:
    """The stored ids and vectors (float32) of a built index, without validation (for rebuilds)."""
    model_dir = Path(model_dir)
    ids = (model_dir / IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / VECTORS_FILE, allow_pickle=False).astype(np.float32, copy=False)
    if len(ids) != len(vectors):
        raise ValueError(f"{model_dir}: {len(ids)} ids but {len(vectors)} vectors")
    return ids, vectors

"""Per-model index artefacts on disk, and loading them back safely.

A model's folder in a catalogue (`<catalogue>/models/<model id>/`) holds:

- `index.faiss`: inner product over L2-normalised vectors (= cosine); `IndexFlatIP` (exact)
  up to `hnsw_above` vectors, `IndexHNSWFlat` above; with `store_dtype="float16"` the same
  index types hold float16 codes (`IndexScalarQuantizer` / `IndexHNSWSQ`, QT_fp16): half the
  memory, exact scan over the float16-rounded vectors;
- `vectors.npy`: the same vectors, row-aligned (float32, or float16 when asked);
- `ids.txt`: one catalogue id per row, in row order (ids never hold line breaks: the
  catalogue refuses them);
- `manifest.json`: what built it (model id, weights id, dim, count, metric, index type, library
  versions, build time, the catalogue's fingerprint, the build options) and what was skipped.

Writing is in two steps, so a catalogue build can put several models in place at once:
`stage_model_index` writes a complete folder beside the old one (and fills a new Milvus
collection for the Milvus backend), `commit_staged` swaps it in under the catalogue's commit
lock (and moves the model's Milvus alias to the new collection: `embeddings.index.milvus_aliases`).
`write_model_index` does both for one model. Readers take the commit lock shared, so they
see the old index or the new one, never half of either; they never repair or write anything.

Loading checks the manifest against the catalogue and the model and says what to rebuild.
With `mmap=True` the index's vectors are memory-mapped (FAISS `IO_FLAG_MMAP_IFC`): opening is
instant and the pages are shared with the page cache instead of copied into the process.

A manifest with `"backend": "milvus"` has no `index.faiss`: its vectors live in a Milvus
collection and `load_model_index` returns a `MilvusIndex` (`embeddings.index.milvus`); both
are `embeddings.index.base.ModelIndex`.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embeddings.atomic import fsync_files, staging_dir, swap_in
from embeddings.config import MANIFEST_FILE
from embeddings.errors import IndexMismatchError, IndexMissingError
from embeddings.index.base import ModelIndex
from embeddings.locks import commit_lock

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.txt"
FORMAT_VERSION = 1

#: Above this many vectors an HNSW graph replaces the exact scan (configurable per build).
DEFAULT_HNSW_ABOVE = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
#: A filtered search on an HNSW index allowing at most this many rows scans them exactly
#: instead of walking the graph. Wider filters walk the graph with a widened efSearch:
#: approximate, like any HNSW search (see `FaissIndex.search`).
EXACT_FILTER_ROWS = 20_000
STORE_DTYPES = ("float32", "float16", "uint8")
#: Byte storage (`store_dtype="uint8"`, for models whose vectors are bytes: raw pixels) keeps
#: each row's norm here; the index holds the bytes and `vectors.npy` is not written.
NORMS_FILE = "norms.npy"
#: Queries per FAISS range search over byte rows (each returns a score for every row).
BYTE_QUERY_BATCH = 32
#: Candidates beyond k rescored exactly by `ByteFaissIndex` (FAISS's float32 sums differ ~1e-5).
BYTE_RESCORE_MARGIN = 16
BACKENDS = ("faiss", "milvus")


def _faiss():
    import faiss  # imported on first use: listing catalogues needs no FAISS

    return faiss


def catalogue_dir_of(model_dir: Path) -> Path:
    """The catalogue folder a model folder (`<catalogue>/models/<model>`) belongs to."""
    return Path(model_dir).parent.parent


def rebuild_advice(catalogue_dir: Path, model_id: str) -> str:
    """The command that rebuilds one model of a catalogue with the catalogue's own settings."""
    return f"rebuild it: python -m embeddings build --catalog {catalogue_dir} --models {model_id}"


def make_faiss_index(
    vectors: np.ndarray, *, hnsw_above: int = DEFAULT_HNSW_ABOVE, store_dtype: str = "float32"
):
    """An inner-product FAISS index over `vectors` (float32, L2-normalised rows).

    `store_dtype="float16"` keeps float16 codes in the index (half the RAM); scores are then
    those of the float16-rounded vectors (differences around 1e-3). `store_dtype="uint8"` is
    `make_byte_index` (it also returns the row norms).
    """
    faiss = _faiss()
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, not {store_dtype!r}")
    if store_dtype == "uint8":
        raise ValueError("byte storage needs the row norms too: use make_byte_index")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    half = store_dtype == "float16"
    if len(vectors) > hnsw_above:
        index = (
            faiss.IndexHNSWSQ(
                dim, faiss.ScalarQuantizer.QT_fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT
            )
            if half
            else faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        )
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif half:
        index = faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    return index


def make_byte_index(vectors: np.ndarray):
    """(index, norms) storing the bytes behind unit vectors v = x / ||x|| exactly.

    The index is a FAISS `IndexScalarQuantizer` with QT_8bit_direct codes (the bytes as they
    are: a quarter of float32) and inner product; `ByteFaissIndex` divides by the norms, so it
    ranks exactly by cosine. Always an exhaustive scan (no HNSW over bytes).
    """
    from embeddings.index.byte_vectors import unit_vectors_to_bytes

    faiss = _faiss()
    byte_rows, norms = unit_vectors_to_bytes(vectors)
    index = faiss.IndexScalarQuantizer(
        int(vectors.shape[1]), faiss.ScalarQuantizer.QT_8bit_direct, faiss.METRIC_INNER_PRODUCT
    )
    for start in range(0, len(byte_rows), 4096):  # float32 copies a chunk at a time
        index.add(byte_rows[start : start + 4096].astype(np.float32))
    return index, norms


def index_kind(index) -> str:
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    # IndexFlat and the float16 IndexScalarQuantizer are both exhaustive scans.
    return "flat" if isinstance(index, faiss.IndexFlatCodes) else type(index).__name__


def library_versions() -> dict[str, str]:
    """Versions of what made an index: the inference runtimes only when this process loaded them."""
    import faiss

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
    }
    for runtime in ("torch", "onnxruntime"):
        module = sys.modules.get(runtime)
        if module is not None:
            versions[runtime] = module.__version__
    return versions


# -- writing -----------------------------------------------------------------------------------
@dataclass
class StagedIndex:
    """A complete index folder written beside `model_dir`, not yet swapped in."""

    model_dir: Path
    staging: Path
    manifest: dict
    #: {"uri", "token", "collection", "alias"} of a Milvus build
    milvus: dict = field(default_factory=dict)


def _check_ids(ids: Sequence[str], vectors: np.ndarray) -> None:
    """Every id must round-trip through `ids.txt` (the catalogue already refuses the others)."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    bad = next((i for i in ids if not isinstance(i, str) or not i or "\n" in i or "\r" in i), None)
    if bad is not None:
        raise ValueError(
            f"id {bad!r} cannot be stored in {IDS_FILE} (empty, or holds a line break)"
        )


def stage_model_index(
    model_dir: Path,
    *,
    ids: list[str],
    vectors: np.ndarray,
    manifest: dict,
    hnsw_above: int = DEFAULT_HNSW_ABOVE,
    store_dtype: str = "float32",
    backend: str = "faiss",
    labels: dict[str, list[str]] | None = None,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> StagedIndex:
    """Write every artefact of a model's index into a fresh folder beside `model_dir`.

    `manifest` must hold model_id, weights_id and catalogue_fingerprint; counts, dims, versions,
    the index type and the build options are filled in here. `backend="milvus"` also fills a new
    Milvus collection (`milvus_uri`, default: Milvus Lite in `<catalogue>/milvus.db`; `labels`
    {label field: value per row} become its scalar fields). Nothing readers see changes until
    `commit_staged`; `discard_staged` undoes this.
    """
    model_dir = Path(model_dir)
    _check_ids(ids, vectors)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "milvus" and store_dtype == "uint8":
        raise ValueError("byte storage (uint8) is for the FAISS backend; Milvus keeps float32")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    index, milvus = None, {}
    manifest = {
        "format": FORMAT_VERSION,
        **manifest,
        "dim": dim,
        "count": len(ids),
        "metric": "cosine (inner product over L2-normalised vectors)",
        "backend": backend,
        "vectors_dtype": store_dtype,
        "hnsw_above": int(hnsw_above),
        "libraries": library_versions(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    norms = None
    if backend == "faiss" and store_dtype == "uint8":
        index, norms = make_byte_index(vectors)
        manifest["index_type"] = "flat"
    elif backend == "faiss":
        index = make_faiss_index(vectors, hnsw_above=hnsw_above, store_dtype=store_dtype)
        manifest["index_type"] = index_kind(index)
    else:
        manifest["index_type"] = "hnsw" if len(vectors) > hnsw_above else "flat"
        manifest["milvus"], milvus = _push_to_milvus(
            model_dir, manifest, ids, vectors, labels, milvus_uri, milvus_token
        )
    try:
        staging = staging_dir(model_dir)
        _write_files(
            staging, index, ids, vectors if norms is None else norms, manifest, store_dtype
        )
    except BaseException:
        if milvus:
            _drop_milvus_collection(milvus)
        raise
    return StagedIndex(model_dir, staging, manifest, milvus)


def _push_to_milvus(
    model_dir: Path,
    manifest: dict,
    ids: list[str],
    vectors: np.ndarray,
    labels: dict[str, list[str]] | None,
    uri: str | None,
    token: str | None,
):
    from embeddings.index import milvus as milvus_backend

    catalogue_dir = catalogue_dir_of(model_dir)
    uri = uri or milvus_backend.default_lite_uri(catalogue_dir)
    section = milvus_backend.push_vectors(
        catalogue_dir=catalogue_dir,
        model_id=manifest["model_id"],
        weights_id=manifest["weights_id"],
        uri=uri,
        token=token,
        ids=list(ids),
        vectors=vectors,
        labels=labels or {},
        hnsw=manifest["index_type"] == "hnsw",
        hnsw_m=HNSW_M,
        ef_construction=HNSW_EF_CONSTRUCTION,
        ef_search=HNSW_EF_SEARCH,
    )
    return section, {
        "uri": uri,
        "token": token,
        "collection": section["collection"],
        "alias": section["alias"],
    }


def _drop_milvus_collection(milvus: dict) -> None:
    from embeddings.index import milvus as milvus_backend

    milvus_backend.drop_collection_quietly(milvus["uri"], milvus["token"], milvus["collection"])


def _write_files(
    staging: Path, index, ids: list[str], vectors: np.ndarray, manifest: dict, store_dtype: str
) -> None:
    """Write the folder's files; for byte storage `vectors` are the row norms."""
    try:
        if index is not None:
            _write_faiss_index(index, staging / INDEX_FILE)
        if store_dtype == "uint8":
            np.save(staging / NORMS_FILE, vectors.astype(np.float32))
        else:
            np.save(staging / VECTORS_FILE, vectors.astype(store_dtype))
        with open(staging / IDS_FILE, "w", encoding="utf-8", newline="") as handle:
            handle.write("".join(f"{i}\n" for i in ids))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        fsync_files(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_faiss_index(index, path: Path) -> None:
    """`faiss.write_index`, with its C-level write failures raised as the OSError they are
    (FAISS reports a full disk as a RuntimeError naming strerror)."""
    try:
        _faiss().write_index(index, str(path))
    except RuntimeError as exc:
        for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            if f"({os.strerror(code)})" in str(exc):
                raise OSError(code, os.strerror(code), str(path)) from exc
        raise


def commit_staged(staged: StagedIndex) -> None:
    """Swap a staged folder in (callers hold the catalogue's exclusive commit lock).

    For a Milvus build, the model's alias moves to the new collection first (readers anywhere
    switch in one step), then the folder is swapped in (the alias moves back if that fails),
    then the collections of the builds before the one just replaced are dropped
    (`embeddings.index.milvus_aliases`).
    """
    if not staged.milvus:
        swap_in(staged.staging, staged.model_dir)
        return
    from embeddings.index import milvus_aliases

    milvus = staged.milvus
    replaced = _milvus_collection_of(read_manifest(staged.model_dir))
    before = milvus_aliases.point_alias(
        milvus["uri"], milvus["token"], milvus["alias"], milvus["collection"]
    )
    try:
        swap_in(staged.staging, staged.model_dir)
    except BaseException:
        milvus_aliases.restore_alias(milvus["uri"], milvus["token"], milvus["alias"], before)
        raise
    milvus_aliases.retire_collections(
        catalogue_dir=catalogue_dir_of(staged.model_dir),
        model_id=staged.manifest["model_id"],
        uri=milvus["uri"],
        token=milvus["token"],
        keep={milvus["collection"], *(name for name in (before, replaced) if name)},
    )


def _milvus_collection_of(manifest: dict | None) -> str | None:
    """The collection a (replaced) manifest was built with, if it was a Milvus build (in another
    database, its name matches nothing here: names carry a build stamp)."""
    if manifest is None or manifest.get("backend") != "milvus":
        return None
    return (manifest.get("milvus") or {}).get("collection")


def discard_staged(staged: StagedIndex) -> None:
    """Undo `stage_model_index` (a build that will not commit this model)."""
    shutil.rmtree(staged.staging, ignore_errors=True)
    if staged.milvus:
        _drop_milvus_collection(staged.milvus)


def write_model_index(
    model_dir: Path, *, ids: list[str], vectors: np.ndarray, manifest: dict, **options
) -> dict:
    """Stage and commit one model's index (see `stage_model_index`); returns its manifest."""
    staged = stage_model_index(model_dir, ids=ids, vectors=vectors, manifest=manifest, **options)
    try:
        with commit_lock(catalogue_dir_of(model_dir), exclusive=True):
            commit_staged(staged)
    except BaseException:
        discard_staged(staged)
        raise
    return staged.manifest


# -- reading ----------------------------------------------------------------------------------
def read_manifest(model_dir: Path) -> dict | None:
    """The manifest of a built index, or None when there is none (or it is unreadable).

    Reads only: a folder a crashed build left half swapped is repaired by the next build.
    """
    try:
        manifest = json.loads((Path(model_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


class FaissIndex(ModelIndex):
    """A FAISS index file of the catalogue (memory-mapped when opened by `open_index`)."""

    backend = "faiss"

    def __init__(self, model_id: str, manifest: dict, index, ids: list[str]):
        super().__init__(model_id, manifest, ids)
        self.index = index  # a faiss.Index

    def reconstruct_batch(self, rows: Sequence[int]) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        return self.index.reconstruct_batch(rows)

    def range_search(
        self, queries: np.ndarray, radius: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query positions, rows, scores) of every pair scoring at least `radius` (exact on a
        flat index, approximate on HNSW), for near-duplicates."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        lims, scores, rows = self.index.range_search(queries, float(radius))
        owners = np.repeat(np.arange(len(queries)), np.diff(lims).astype(np.int64))
        return owners, rows.astype(np.int64), scores

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        filters: dict[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search; `rows` restricts it to those row numbers (a label filter).

        Exact on a flat index. On an HNSW graph, up to `EXACT_FILTER_ROWS` allowed rows are
        scanned one by one (exact); wider filters walk the graph with `efSearch` widened in
        proportion to the share of the graph the filter hides: approximate, like HNSW itself.
        """
        if filters:
            raise ValueError("a FAISS index takes label filters as row numbers (rows=...)")
        queries = self.checked_queries(queries)
        k = self.clamped_k(k, rows)
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
        if hnsw:
            widened = int(self.index.hnsw.efSearch * len(self.ids) / max(1, len(rows)))
            params = faiss.SearchParametersHNSW(
                sel=selector, efSearch=min(max(HNSW_EF_SEARCH, k, widened), 4096)
            )
        else:
            params = faiss.SearchParameters(sel=selector)
        return self.index.search(queries, k, params=params)

    def _scan_rows(
        self, queries: np.ndarray, rows: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the given rows only (their vectors decoded from the index)."""
        scores = queries @ self.index.reconstruct_batch(rows).T
        if k < len(rows):
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(len(rows)), (len(queries), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return (
            np.take_along_axis(top_scores, order, axis=1).astype(np.float32),
            rows[np.take_along_axis(top, order, axis=1)],
        )


class ByteFaissIndex(FaissIndex):
    """Rows stored as bytes with their norms (`make_byte_index`): exact cosine ranking.

    FAISS gives <q, x> for every allowed row (a range search with no radius: in faiss-cpu 1.15.1
    a plain `search` on QT_8bit_direct codes with inner product returns zeros when the dimension
    is a multiple of 16); dividing by ||x|| gives the cosine, and the top k are sorted here.
    """

    def __init__(self, model_id: str, manifest: dict, index, ids: list[str], norms: np.ndarray):
        super().__init__(model_id, manifest, index, ids)
        self.norms = norms

    def reconstruct_batch(self, rows: Sequence[int]) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        return super().reconstruct_batch(rows) / self.norms[rows, None]

    def range_search(
        self, queries: np.ndarray, radius: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # FAISS compares <q, bytes> = cosine x ||x|| with the radius: search at the smallest
        # norm times the radius (a cosine >= radius implies it), then keep the true cosines.
        floor = float(radius) * float(self.norms.min()) * (1 - 1e-4) if radius > 0 else -np.inf
        owners, rows, raw = super().range_search(queries, floor)
        scores = (raw / self.norms[rows]).astype(np.float32)
        keep = scores >= radius
        return owners[keep], rows[keep], scores[keep]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        filters: dict[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if filters:
            raise ValueError("a FAISS index takes label filters as row numbers (rows=...)")
        queries = self.checked_queries(queries)
        k = self.clamped_k(k, rows)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        found = np.full((len(queries), k), -1, dtype=np.int64)
        if k == 0:
            return scores, found
        faiss = _faiss()
        params = None
        if rows is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(rows, np.int64)))
        for start in range(0, len(queries), BYTE_QUERY_BATCH):
            batch = queries[start : start + BYTE_QUERY_BATCH]
            lims, products, hits = self.index.range_search(batch, -np.inf, params=params)
            for q, query in enumerate(batch):
                part = slice(lims[q], lims[q + 1])
                rows_found, exact = self._exact_top(query, products[part], hits[part], k)
                scores[start + q, : len(rows_found)] = exact
                found[start + q, : len(rows_found)] = rows_found
        return scores, found

    def _exact_top(self, query: np.ndarray, products: np.ndarray, hits: np.ndarray, k: int):
        """The top k rows by cosine, their scores recomputed in float64 from the bytes.

        FAISS sums 8-bit codes in float32 (errors up to ~1e-5 over 14,400 dimensions); the
        candidates (a margin beyond k) are rescored exactly, so the scores are those of float64.
        """
        candidates = _top_k(products / self.norms[hits], k + BYTE_RESCORE_MARGIN)
        rows = hits[candidates]
        byte_rows = super().reconstruct_batch(rows).astype(np.float64)
        exact = byte_rows @ query.astype(np.float64) / self.norms[rows]
        best = np.lexsort((rows, -exact))[:k]  # equal scores (identical images): lower row first
        return rows[best], exact[best].astype(np.float32)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, largest first (ties in position order)."""
    everything = k >= len(values)
    candidates = np.arange(len(values)) if everything else np.argpartition(-values, k - 1)[:k]
    return candidates[np.lexsort((candidates, -values[candidates]))]


def load_model_index(
    model_dir: Path,
    *,
    catalogue_fingerprint: str,
    model_id: str,
    weights_id: str | None = None,
    mmap: bool = False,
    rebuild_hint: str = "",
    lock: bool = True,
) -> ModelIndex:
    """Load a model's index, refusing one that does not belong to this catalogue or model.

    `mmap` maps the stored vectors instead of reading them (FAISS backend). A manifest of a
    Milvus build returns a `MilvusIndex` connected to its collection. Raises
    `IndexMissingError` when nothing is built, `IndexMismatchError` when the manifest names
    another model, no weights or other weights, or another version of the catalogue, or when the
    files disagree with it (a truncated or swapped file). `lock=False` when the caller already
    holds the catalogue's commit lock.
    """
    model_dir = Path(model_dir)
    hint = rebuild_hint or rebuild_advice(catalogue_dir_of(model_dir), model_id)
    if not lock:
        return _load(model_dir, catalogue_fingerprint, model_id, weights_id, mmap, hint)
    with commit_lock(catalogue_dir_of(model_dir)):
        return _load(model_dir, catalogue_fingerprint, model_id, weights_id, mmap, hint)


def _load(
    model_dir: Path, fingerprint: str, model_id: str, weights_id: str | None, mmap: bool, hint: str
) -> ModelIndex:
    manifest = read_manifest(model_dir)
    if manifest is None:
        raise IndexMissingError(
            f"no index for model {model_id!r} in {catalogue_dir_of(model_dir)}; {hint}"
        )
    check_manifest(
        manifest,
        model_dir,
        fingerprint=fingerprint,
        model_id=model_id,
        weights_id=weights_id,
        hint=hint,
    )
    if manifest.get("backend", "faiss") == "milvus":
        return _load_milvus(model_dir, manifest, hint)
    faiss = _faiss()
    try:
        # MMAP_IFC maps flat codes (IndexFlat, IndexScalarQuantizer, HNSW storage); plain
        # IO_FLAG_MMAP only maps inverted lists and would still copy a flat index into RAM.
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(model_dir / INDEX_FILE), flags)
        ids = read_ids(model_dir)
    except (RuntimeError, OSError) as exc:
        raise IndexMismatchError(
            f"{model_dir}: the index files are damaged ({str(exc).splitlines()[0][:200]}); {hint}"
        ) from exc
    if (
        index.ntotal != manifest["count"]
        or len(ids) != manifest["count"]
        or index.d != manifest["dim"]
    ):
        raise IndexMismatchError(
            f"{model_dir}: files disagree with the manifest ({index.ntotal} vectors, {len(ids)} "
            f"ids, dim {index.d}; manifest says {manifest['count']} x {manifest['dim']}); {hint}"
        )
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(index.hnsw.efSearch, HNSW_EF_SEARCH)
    if manifest.get("vectors_dtype") == "uint8":
        return ByteFaissIndex(
            model_id, manifest, index, ids, _read_norms(model_dir, manifest, hint)
        )
    return FaissIndex(model_id, manifest, index, ids)


def _read_norms(model_dir: Path, manifest: dict, hint: str) -> np.ndarray:
    try:
        norms = np.load(model_dir / NORMS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexMismatchError(
            f"{model_dir}: {NORMS_FILE} is unreadable ({exc}); {hint}"
        ) from exc
    if norms.shape != (manifest["count"],):
        raise IndexMismatchError(
            f"{model_dir}: {NORMS_FILE} holds {norms.shape} norms for {manifest['count']} rows; "
            f"{hint}"
        )
    return norms.astype(np.float32, copy=False)


def _load_milvus(model_dir: Path, manifest: dict, hint: str) -> ModelIndex:
    from embeddings.index.milvus import load_milvus_index

    try:
        ids = read_ids(model_dir)
    except OSError as exc:
        raise IndexMismatchError(f"{model_dir}: {IDS_FILE} is unreadable ({exc}); {hint}") from exc
    if len(ids) != manifest["count"]:
        raise IndexMismatchError(
            f"{model_dir}: {len(ids)} ids but the manifest says {manifest['count']}; {hint}"
        )
    return load_milvus_index(model_dir, manifest, ids, rebuild_hint=hint)


def check_manifest(
    manifest: dict,
    model_dir: Path,
    *,
    fingerprint: str,
    model_id: str,
    weights_id: str | None,
    hint: str,
) -> None:
    """Refuse a manifest of another model, without weights, of other weights or catalogue
    version."""
    if manifest.get("model_id") != model_id:
        raise IndexMismatchError(
            f"{model_dir}: built by model {manifest.get('model_id')!r}, not {model_id!r}; {hint}"
        )
    if not manifest.get("weights_id"):
        raise IndexMismatchError(
            f"{model_dir}: the manifest does not name the weights that built it; {hint}"
        )
    if weights_id is not None and manifest["weights_id"] != weights_id:
        raise IndexMismatchError(
            f"{model_dir}: built with weights {manifest['weights_id']!r}, "
            f"not {weights_id!r}; {hint}"
        )
    if manifest.get("catalogue_fingerprint") != fingerprint:
        raise IndexMismatchError(
            f"{model_dir}: built for another version of the catalogue (its products "
            f"changed since); {hint}"
        )


def read_ids(model_dir: Path) -> list[str]:
    """The row-aligned catalogue ids of an index folder."""
    with open(Path(model_dir) / IDS_FILE, encoding="utf-8", newline="") as handle:
        return handle.read().split("\n")[:-1]


def load_vectors(model_dir: Path) -> tuple[list[str], np.ndarray]:
    """The stored ids and vectors (float32) of a built index, without validation (for rebuilds).

    Read from `vectors.npy`; an index stored as bytes has none, so its vectors are decoded from
    the index itself (bytes over norms).
    """
    model_dir = Path(model_dir)
    ids = read_ids(model_dir)
    if (model_dir / VECTORS_FILE).is_file():
        vectors = np.load(model_dir / VECTORS_FILE, allow_pickle=False).astype(
            np.float32, copy=False
        )
    else:
        index = _faiss().read_index(str(model_dir / INDEX_FILE))
        norms = np.load(model_dir / NORMS_FILE, allow_pickle=False)
        vectors = index.reconstruct_n(0, index.ntotal) / norms[:, None]
    if len(ids) != len(vectors):
        raise ValueError(f"{model_dir}: {len(ids)} ids but {len(vectors)} vectors")
    return ids, vectors

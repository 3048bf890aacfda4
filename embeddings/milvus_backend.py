"""The Milvus backend: a model's index as a Milvus collection, behind the `ModelIndex` interface.

`python -m embeddings build --backend milvus` embeds exactly as for FAISS, keeps the same local
model folder (`manifest.json`, `ids.txt`, `vectors.npy`: the manifest records the backend, so
`open_index` and the app pick it up unchanged) and pushes the vectors into a Milvus collection:

- Milvus Lite by default: an embedded database in `<catalogue>/milvus.db` (the `milvus-lite`
  package; no server). Only one process may open a Lite database at a time;
- any Milvus server or Zilliz Cloud with `--milvus-uri http://host:19530` (token from
  `--milvus-token` or the `MILVUS_TOKEN` environment variable; it is never written to disk).

One collection per (catalogue, model, build): primary key `row` (the row number in `ids.txt`),
the catalogue id, every label field as a VARCHAR scalar field, and the vector (inner product
over L2-normalised vectors = cosine). Label filters run inside Milvus, in the same query. A new
build fills a new collection, then swaps the manifest, then drops the old collection: readers
never see half an index. At load time `EMBEDDINGS_MILVUS_URI` redirects to another address of
the same data (e.g. the cluster's in-cluster name).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from embeddings.errors import EmbeddingsError, IndexMismatchError, IndexMissingError
from embeddings.vector_index import ModelIndex

ENV_URI = "EMBEDDINGS_MILVUS_URI"
ENV_TOKEN = "MILVUS_TOKEN"
#: Milvus Lite database of a catalogue when no URI is given (a folder, despite the suffix).
LITE_FILE = "milvus.db"
ROW_FIELD = "row"
ID_FIELD = "item_id"
VECTOR_FIELD = "vector"
#: Insert batches are cut to about this many bytes of vectors (gRPC messages are capped at 64 MiB).
INSERT_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 15.0
#: Milvus caps `limit` (top-k) per search.
MAX_LIMIT = 16_384


def _pymilvus():
    try:
        import pymilvus
    except ImportError as exc:
        raise EmbeddingsError(
            "the Milvus backend needs pymilvus (and milvus-lite for local "
            "databases): pip install -r requirements.txt"
        ) from exc
    return pymilvus


# -- where the database is -----------------------------------------------------------------


def is_server_uri(uri: str) -> bool:
    """True for a Milvus server / Zilliz Cloud address, False for a Milvus Lite path."""
    return bool(re.match(r"^(https?|tcp|grpc|unix)://", uri.strip(), re.IGNORECASE))


def default_lite_uri(catalogue_dir: Path) -> str:
    return str(Path(catalogue_dir) / LITE_FILE)


def recorded_uri(uri: str, catalogue_dir: Path) -> str:
    """How the manifest records `uri`: a Lite path inside the catalogue stays relative to it,
    so the catalogue folder can be moved; anything else is kept as given."""
    if is_server_uri(uri):
        return uri
    path = Path(uri).expanduser().resolve()
    try:
        return path.relative_to(Path(catalogue_dir).resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve_uri(recorded: str, catalogue_dir: Path) -> str:
    """The address to connect to: `$EMBEDDINGS_MILVUS_URI` if set, else the recorded one
    (a relative Lite path is taken inside the catalogue folder)."""
    override = os.environ.get(ENV_URI, "").strip()
    if override:
        return override
    if is_server_uri(recorded):
        return recorded
    path = Path(recorded).expanduser()
    return str(path if path.is_absolute() else Path(catalogue_dir) / path)


def check_uri(uri: str) -> str:
    """Validate a `--milvus-uri` before any work, with a message saying what is accepted."""
    uri = (uri or "").strip()
    if not uri:
        raise EmbeddingsError(
            "--milvus-uri is empty; give http://host:19530 for a server or a "
            "local path ending in .db for Milvus Lite"
        )
    if not is_server_uri(uri) and not uri.endswith(".db"):
        raise EmbeddingsError(
            f"--milvus-uri {uri!r}: a Milvus Lite database path must end in .db "
            "(e.g. ./milvus.db); a server address starts with http:// or https://"
        )
    return uri


_clients: dict[tuple[str, str], object] = {}
_clients_lock = threading.Lock()


def connect(uri: str, token: str | None = None):
    """A `MilvusClient` for `uri`, shared per process (one Lite server per database path)."""
    token = token if token is not None else os.environ.get(ENV_TOKEN, "")
    key = (uri if is_server_uri(uri) else str(Path(uri).resolve()), token)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        pymilvus = _pymilvus()
        if not is_server_uri(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = pymilvus.MilvusClient(uri=uri, token=token, timeout=CONNECT_TIMEOUT_S)
        except pymilvus.MilvusException as exc:
            raise EmbeddingsError(_connect_advice(uri, exc)) from exc
        _clients[key] = client
        return client


def _connect_advice(uri: str, exc: Exception) -> str:
    if is_server_uri(uri):
        return (
            f"cannot reach Milvus at {uri} ({_short(exc)}); start the server, check the address "
            f"(or set {ENV_URI}) and the token ({ENV_TOKEN})"
        )
    return (
        f"cannot open the Milvus Lite database {uri} ({_short(exc)}). Milvus Lite allows one "
        "process at a time: stop the other one (the app, or another build), or serve the database "
        f"for several processes with `milvus-lite server --data-dir {uri}` and use --milvus-uri "
        "http://127.0.0.1:19530"
    )


def _short(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


# -- names ---------------------------------------------------------------------------------


def _slug(text: str, limit: int) -> str:
    return (re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "x")[:limit]


def collection_prefix(catalogue_dir: Path, model_id: str) -> str:
    """Collections of one catalogue folder and model share this prefix (each build adds a stamp).

    The hash of the folder's absolute path keeps two catalogues with the same name apart on a
    shared server.
    """
    directory = Path(catalogue_dir).resolve()
    folder_hash = hashlib.sha256(str(directory).encode()).hexdigest()[:8]
    return f"emb_{_slug(directory.name, 60)}_{folder_hash}_{_slug(model_id, 40)}_"


def label_field_names(label_fields: list[str]) -> dict[str, str]:
    """Catalogue label -> Milvus scalar field name (letters, digits, underscores; unique)."""
    names: dict[str, str] = {}
    for label in label_fields:
        base = f"label_{_slug(label, 200)}"
        name, n = base, 2
        while name in names.values():
            name, n = f"{base}_{n}", n + 1
        names[label] = name
    return names


def quote(value: str) -> str:
    """A Milvus string literal: backslashes and double quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_expression(filters: dict[str, str] | None, fields: dict[str, str]) -> str:
    """`label_gender == "Men" and ...` for {label: value}; unknown labels are refused by name."""
    parts = []
    for label, value in (filters or {}).items():
        if label not in fields:
            raise EmbeddingsError(
                f"no label field {label!r} in this Milvus index; label fields: "
                f"{', '.join(fields) or 'none'}"
            )
        parts.append(f"{fields[label]} == {quote(value)}")
    return " and ".join(parts)


# -- building ------------------------------------------------------------------------------


def _varchar_length(values) -> int:
    longest = max((len(str(v).encode()) for v in values), default=0)
    return int(min(65_535, max(16, longest * 2)))


def create_collection(
    client,
    name: str,
    *,
    dim: int,
    labels: dict[str, list[str]],
    fields: dict[str, str],
    ids: list[str],
    hnsw: bool,
    hnsw_m: int,
    ef_construction: int,
) -> None:
    """An empty collection with the row key, the catalogue id, label fields and the vector."""
    DataType = _pymilvus().DataType
    schema = client.create_schema(
        auto_id=False,
        enable_dynamic_field=False,
        description="embeddings: one row per catalogue product",
    )
    schema.add_field(ROW_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(ID_FIELD, DataType.VARCHAR, max_length=_varchar_length(ids))
    for label, field_name in fields.items():
        schema.add_field(field_name, DataType.VARCHAR, max_length=_varchar_length(labels[label]))
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    index_params = client.prepare_index_params()
    if hnsw:
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_type="HNSW",
            metric_type="IP",
            params={"M": hnsw_m, "efConstruction": ef_construction},
        )
    else:
        index_params.add_index(field_name=VECTOR_FIELD, index_type="FLAT", metric_type="IP")
    # Bounded staleness: searches do not wait for the newest writes (Strong costs ~20 ms a query
    # on Milvus Lite); the build itself waits until every row is visible (`_wait_visible`).
    client.create_collection(
        name, schema=schema, index_params=index_params, consistency_level="Bounded"
    )


def insert_rows(
    client,
    name: str,
    *,
    ids: list[str],
    vectors: np.ndarray,
    labels: dict[str, list[str]],
    fields: dict[str, str],
    progress=None,
) -> None:
    rows_per_batch = max(1, INSERT_BYTES // max(1, vectors.shape[1] * 4))
    for start in range(0, len(ids), rows_per_batch):
        stop = min(len(ids), start + rows_per_batch)
        batch = []
        for row in range(start, stop):
            record = {ROW_FIELD: row, ID_FIELD: ids[row], VECTOR_FIELD: vectors[row]}
            for label, field_name in fields.items():
                record[field_name] = labels[label][row]
            batch.append(record)
        client.insert(name, batch)
        if progress:
            progress(stop, len(ids))


def _wait_visible(client, name: str, count: int, timeout_s: float = 120.0) -> None:
    """Block until a strong-consistency count sees every inserted row (or fail loudly)."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        result = client.query(
            name, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        seen = int(result[0]["count(*)"]) if result else 0
        if seen == count:
            return
        time.sleep(0.2)
    raise EmbeddingsError(
        f"Milvus collection {name} shows {seen} of {count} rows after {timeout_s:.0f} s"
    )


def push_vectors(
    *,
    catalogue_dir: Path,
    model_id: str,
    uri: str,
    token: str | None,
    ids: list[str],
    vectors: np.ndarray,
    labels: dict[str, list[str]],
    hnsw: bool,
    hnsw_m: int,
    ef_construction: int,
    ef_search: int,
) -> dict:
    """Fill a fresh collection with `vectors` and return the manifest's `milvus` section.

    The collection is complete and loaded when this returns; on any failure it is dropped.
    """
    uri = check_uri(uri)
    client = connect(uri, token)
    fields = label_field_names(list(labels))
    name = f"{collection_prefix(catalogue_dir, model_id)}{time.time_ns() // 1000:x}"
    pymilvus = _pymilvus()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        create_collection(
            client,
            name,
            dim=int(vectors.shape[1]),
            labels=labels,
            fields=fields,
            ids=ids,
            hnsw=hnsw,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
        )
        insert_rows(client, name, ids=ids, vectors=vectors, labels=labels, fields=fields)
        client.flush(name)
        client.load_collection(name)
        _wait_visible(client, name, len(ids))
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the original error matters more than the clean-up
            client.drop_collection(name)
        if isinstance(exc, pymilvus.MilvusException):
            raise EmbeddingsError(
                f"Milvus at {uri} refused the index of {model_id!r}: {_short(exc)}"
            ) from exc
        raise
    return {
        "uri": recorded_uri(uri, catalogue_dir),
        "collection": name,
        "label_fields": fields,
        "index": "HNSW" if hnsw else "FLAT",
        "hnsw_m": hnsw_m if hnsw else None,
        "ef_construction": ef_construction if hnsw else None,
        "ef_search": ef_search if hnsw else None,
        "pymilvus": pymilvus.__version__,
    }


def drop_collection_quietly(uri: str, token: str | None, name: str) -> None:
    """Drop one collection, ignoring failures (used while another error is being raised)."""
    with contextlib.suppress(Exception):  # the caller's error is the one to report
        connect(uri, token).drop_collection(name)


def drop_stale_collections(
    *, catalogue_dir: Path, model_id: str, uri: str, token: str | None, keep: str
) -> list[str]:
    """Drop this catalogue+model's collections other than `keep` (older builds, killed builds)."""
    client = connect(uri, token)
    prefix = collection_prefix(catalogue_dir, model_id)
    dropped = []
    for name in client.list_collections():
        if name.startswith(prefix) and name != keep:
            with contextlib.suppress(
                Exception
            ):  # another build may be dropping it; the next retries
                client.drop_collection(name)
                dropped.append(name)
    return dropped


# -- searching -----------------------------------------------------------------------------


class MilvusIndex(ModelIndex):
    """A built model's index held in Milvus (`ModelIndex`), with label filters evaluated by
    Milvus itself (`native_filters`)."""

    native_filters = True
    backend = "milvus"

    def __init__(
        self,
        model_id: str,
        manifest: dict,
        client,
        collection: str,
        ids: list[str],
        label_fields: dict[str, str],
        uri: str,
    ):
        super().__init__(model_id, manifest, ids)
        self.client = client
        self.collection = collection
        self.label_fields = label_fields
        self.uri = uri
        ef = (manifest.get("milvus") or {}).get("ef_search")
        self._params: dict = {"metric_type": "IP"}
        if ef:
            self._params["params"] = {"ef": int(ef)}

    def reconstruct_batch(self, rows) -> np.ndarray:
        """Stored vectors of these row numbers, in order (fetched from Milvus in batches)."""
        rows = [int(r) for r in rows]
        found: dict[int, np.ndarray] = {}
        batch = max(1, INSERT_BYTES // max(1, self.dim * 4))
        for start in range(0, len(rows), batch):
            for record in self._call(
                self.client.get,
                self.collection,
                ids=rows[start : start + batch],
                output_fields=[VECTOR_FIELD],
            ):
                found[int(record[ROW_FIELD])] = np.asarray(record[VECTOR_FIELD], dtype=np.float32)
        missing = [r for r in rows if r not in found]
        if missing:
            raise IndexMismatchError(
                f"Milvus collection {self.collection} has no row {missing[0]} "
                f"({self.ids[missing[0]]!r}); rebuild the {self.model_id!r} index"
            )
        return np.stack([found[r] for r in rows]) if rows else np.zeros((0, self.dim), np.float32)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        filters: dict[str, str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`ModelIndex.search`; `filters` ({label: value}) and `rows` restrict it inside Milvus."""
        queries = self.checked_queries(queries)
        k = self.clamped_k(k, rows, cap=MAX_LIMIT)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        found = np.full((len(queries), k), -1, dtype=np.int64)
        if k == 0:
            return scores, found
        expression = filter_expression(filters, self.label_fields)
        if rows is not None:
            listed = f"{ROW_FIELD} in [{','.join(str(int(r)) for r in rows)}]"
            expression = f"({expression}) and {listed}" if expression else listed
        params = dict(self._params)
        if "params" in params:  # HNSW needs ef >= k
            params["params"] = {"ef": max(int(params["params"]["ef"]), k)}
        results = self._call(
            self.client.search,
            self.collection,
            data=list(queries),
            limit=k,
            filter=expression,
            anns_field=VECTOR_FIELD,
            search_params=params,
            output_fields=[],
        )
        for q, hits in enumerate(results):
            for j, hit in enumerate(hits[:k]):
                found[q, j] = int(hit.get(ROW_FIELD, hit.get("id")))
                scores[q, j] = float(hit["distance"])
        return scores, found

    def _call(self, method, *args, **kwargs):
        pymilvus = _pymilvus()
        try:
            return method(*args, **kwargs)
        except pymilvus.MilvusException as exc:
            raise EmbeddingsError(
                f"Milvus ({self.uri}, collection {self.collection}) failed: {_short(exc)}"
            ) from exc


def load_milvus_index(
    model_dir: Path, manifest: dict, ids: list[str], *, rebuild_hint: str
) -> MilvusIndex:
    """Open the collection a Milvus build recorded, after checking it matches the manifest."""
    model_dir = Path(model_dir)
    catalogue_dir = model_dir.parent.parent
    section = manifest.get("milvus") or {}
    if not section.get("collection") or not section.get("uri"):
        raise IndexMismatchError(
            f"{model_dir}: the manifest names no Milvus collection; {rebuild_hint}"
        )
    uri = resolve_uri(section["uri"], catalogue_dir)
    client = connect(uri)
    collection = section["collection"]
    pymilvus = _pymilvus()
    try:
        if not client.has_collection(collection):
            raise IndexMissingError(
                f"the Milvus collection {collection} of model {manifest['model_id']!r} "
                f"is not in {uri} (dropped, or another database); {rebuild_hint}"
            )
        described = client.describe_collection(collection)
        dims = [
            int(f.get("params", {}).get("dim", 0))
            for f in described.get("fields", [])
            if f.get("name") == VECTOR_FIELD
        ]
        count = int(client.get_collection_stats(collection).get("row_count", -1))
        client.load_collection(collection)
    except pymilvus.MilvusException as exc:
        raise EmbeddingsError(
            f"Milvus at {uri} failed to open collection {collection}: {_short(exc)}"
        ) from exc
    if dims != [manifest["dim"]] or count != manifest["count"]:
        raise IndexMismatchError(
            f"Milvus collection {collection} holds {count} vectors of dim {dims} but the "
            f"manifest says {manifest['count']} x {manifest['dim']}; {rebuild_hint}"
        )
    return MilvusIndex(
        manifest["model_id"],
        manifest,
        client,
        collection,
        ids,
        dict(section.get("label_fields") or {}),
        uri,
    )

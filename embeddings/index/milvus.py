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
over L2-normalised vectors = cosine). Label filters run inside Milvus, in the same query.

Readers query an alias, not a collection (`embeddings.index.milvus_aliases`): a build fills a new
collection, waits until every row is indexed and visible, and only then, at commit time, moves
the alias to it in one step. A reader holding an older manifest keeps working: hits come back
with their catalogue ids and are mapped to its own rows, so a newer build with other rows is
still read right. At load time `EMBEDDINGS_MILVUS_URI` redirects to another address of the
same data (e.g. the cluster's in-cluster name).
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
from embeddings.index.base import ModelIndex

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
#: Opening an index waits at most this long for its collection to be loaded.
LOAD_TIMEOUT_S = 60.0
#: Milvus caps `limit` (top-k) per search.
MAX_LIMIT = 16_384
#: The most query bytes one range search sends (gRPC caps a message's size).
QUERY_BYTES = 16 * 1024 * 1024
#: A filtered HNSW search widens `ef` in proportion to the share of rows the filter hides (as
#: the FAISS path widens efSearch), up to this.
MAX_FILTER_EF = 4096
#: Labels with at most this many distinct values have their value counts in the manifest (to
#: size that widening); a filter on a rarer value hides >93% of the rows, where Milvus scans the
#: allowed rows exactly instead of walking the graph.
MAX_COUNTED_VALUES = 1000
#: Between a collection prefix and the weights hash in an alias name (collections end in a hex
#: stamp instead, so the two never collide: Milvus refuses an alias named like a collection).
ALIAS_MARK = "live_"


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
    from embeddings.models.naming import folder_name

    directory = Path(catalogue_dir).resolve()
    folder_hash = hashlib.sha256(str(directory).encode()).hexdigest()[:8]
    model = _slug(model_id, 40)
    if folder_name(model_id) != model_id:  # a family id: long, so its hash keeps it apart
        model = f"{_slug(model_id, 29)}_{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"
    return f"emb_{_slug(directory.name, 60)}_{folder_hash}_{model}_"


def alias_name(catalogue_dir: Path, model_id: str, weights_id: str) -> str:
    """The alias readers of this catalogue folder and model query, for vectors of these weights.

    A rebuild with the same weights moves this alias; one with other weights gets its own, so a
    reader still holding the older manifest (whose encoder makes vectors of the older weights)
    keeps searching vectors of those weights until the older collection is dropped.
    """
    weights_hash = hashlib.sha256(str(weights_id).encode()).hexdigest()[:8]
    return f"{collection_prefix(catalogue_dir, model_id)}{ALIAS_MARK}{weights_hash}"


def is_collection_of(prefix: str, name: str) -> bool:
    """`name` is a build's collection of this prefix (prefix + hex stamp; not another model whose
    id merely starts the same way, nor an alias)."""
    return re.fullmatch(re.escape(prefix) + r"[0-9a-f]+", name) is not None


def is_alias_of(prefix: str, name: str) -> bool:
    """`name` is an alias of this prefix (prefix + `live_` + weights hash)."""
    return re.fullmatch(re.escape(prefix) + ALIAS_MARK + r"[0-9a-f]{8}", name) is not None


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
    """An empty collection (not loaded) with the row key, the catalogue id, label fields and the
    vector, and the vector index to build."""
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
    # on Milvus Lite); the build itself waits until every row is visible (`wait_visible`).
    # Created without loading it: loaded only once its rows are flushed and indexed
    # (`push_vectors`). Rows inserted into a loaded collection are served from growing segments
    # and handed over to the indexed ones seconds later; on a Milvus 2.3 server filtered
    # searches during that hand-over miss rows (10% filter: recall@10 0.53, measured).
    client.create_collection(name, schema=schema, consistency_level="Bounded")
    client.create_index(name, index_params)


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


def wait_visible(client, name: str, count: int, timeout_s: float = 120.0) -> None:
    """Block until a strong-consistency count sees every inserted row (or fail loudly).

    Searches use the collection's Bounded consistency; once a Strong read has seen every row,
    so does any later read, from any client (tests/test_milvus.py checks it on both engines).
    """
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


def wait_indexed(client, name: str, count: int, timeout_s: float | None = None) -> None:
    """Block until the vector index covers every row.

    A Milvus server builds the index of flushed segments in the background; until it is done,
    the rows are searched without it (right answers, slower). Publishing waits, so the first
    reader of a new build gets the index's speed. The default timeout grows with the collection
    (a 1M x 512 HNSW graph takes many minutes on a small machine).
    """
    timeout_s = timeout_s or 600.0 + count * 0.003
    deadline = time.monotonic() + timeout_s
    described: dict = {}
    while time.monotonic() < deadline:
        described = client.describe_index(name, VECTOR_FIELD) or {}
        if (
            int(described.get("pending_index_rows", 0)) == 0
            and int(described.get("indexed_rows", count)) >= count
        ):
            return
        time.sleep(0.5)
    raise EmbeddingsError(
        f"Milvus has indexed {described.get('indexed_rows')} of {count} rows of collection "
        f"{name} after {timeout_s:.0f} s; the server may be overloaded: try the build again"
    )


def push_vectors(
    *,
    catalogue_dir: Path,
    model_id: str,
    weights_id: str,
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

    The collection is complete, indexed and loaded when this returns; on any failure it is
    dropped. Readers do not see it until `embeddings.index.milvus_aliases.point_alias` moves the
    model's alias (recorded in the section) to it.
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
        wait_indexed(client, name, len(ids))
        client.load_collection(name)
        wait_visible(client, name, len(ids))
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
        "alias": alias_name(catalogue_dir, model_id, weights_id),
        "collection": name,
        "label_fields": fields,
        "label_counts": label_value_counts(labels),
        "index": "HNSW" if hnsw else "FLAT",
        "hnsw_m": hnsw_m if hnsw else None,
        "ef_construction": ef_construction if hnsw else None,
        "ef_search": ef_search if hnsw else None,
        "pymilvus": pymilvus.__version__,
    }


def label_value_counts(labels: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """{label: {value: rows}} for the labels with at most `MAX_COUNTED_VALUES` values."""
    counts = {}
    for label, values in labels.items():
        tally: dict[str, int] = {}
        for value in values:
            tally[str(value)] = tally.get(str(value), 0) + 1
            if len(tally) > MAX_COUNTED_VALUES:
                break
        else:
            counts[label] = tally
    return counts


def drop_collection_quietly(uri: str, token: str | None, name: str) -> None:
    """Drop one collection, ignoring failures (used while another error is being raised)."""
    with contextlib.suppress(Exception):  # the caller's error is the one to report
        connect(uri, token).drop_collection(name)


# -- searching -----------------------------------------------------------------------------


class MilvusIndex(ModelIndex):
    """A built model's index held in Milvus (`ModelIndex`), with label filters evaluated by
    Milvus itself (`native_filters`).

    Every query names `target`: the model's alias, which each rebuild moves to its new
    collection (for a manifest written before aliases existed, the collection itself). Row
    numbers are this reader's own (its `ids.txt`): hits and fetched vectors come back with their
    catalogue ids and are mapped through `row_of`, so when a newer build with other products is
    already behind the alias, its answers are still read right (a product this reader does not
    know yet is left out of its results).
    """

    native_filters = True
    backend = "milvus"

    def __init__(
        self,
        model_id: str,
        manifest: dict,
        client,
        target: str,
        ids: list[str],
        label_fields: dict[str, str],
        uri: str,
    ):
        super().__init__(model_id, manifest, ids)
        section = manifest.get("milvus") or {}
        self.client = client
        self.target = target
        #: The collection behind the alias when this manifest was built (for diagnostics).
        self.collection = section.get("collection")
        self.label_fields = label_fields
        self.uri = uri
        self.ef_search = int(section["ef_search"]) if section.get("ef_search") else None
        self.label_counts = section.get("label_counts") or {}

    def reconstruct_batch(self, rows) -> np.ndarray:
        """Stored vectors of these row numbers, in order (fetched from Milvus in batches)."""
        rows = [int(r) for r in rows]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        found: dict[int, np.ndarray] = {}
        for record in self._fetch(ROW_FIELD, sorted(set(rows))):
            row = int(record[ROW_FIELD])
            if row < len(self.ids) and record[ID_FIELD] == self.ids[row]:
                found[row] = np.asarray(record[VECTOR_FIELD], dtype=np.float32)
        stray = sorted({r for r in rows if r not in found})
        if stray:  # a newer build behind the alias numbers its rows otherwise: ask by catalogue id
            for record in self._fetch(ID_FIELD, [self.ids[r] for r in stray]):
                row = self.row_of.get(record[ID_FIELD])
                if row is not None:
                    found[row] = np.asarray(record[VECTOR_FIELD], dtype=np.float32)
        missing = [r for r in rows if r not in found]
        if missing:
            raise IndexMismatchError(
                f"Milvus index {self.target} has no vector for {self.ids[missing[0]]!r} (a newer "
                f"build of {self.model_id!r} no longer holds it); reload the catalogue, or "
                f"rebuild the {self.model_id!r} index"
            )
        return np.stack([found[r] for r in rows])

    def _fetch(self, field_name: str, keys: list) -> list[dict]:
        """Rows whose `field_name` is one of `keys`, with their catalogue id and vector."""
        batch = max(1, min(1000, INSERT_BYTES // max(1, self.dim * 4)))
        records: list[dict] = []
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            if field_name == ROW_FIELD:
                found = self._call(
                    self.client.get, self.target, ids=chunk, output_fields=[VECTOR_FIELD, ID_FIELD]
                )
            else:
                found = self._call(
                    self.client.query,
                    self.target,
                    filter=f"{ID_FIELD} in [{','.join(quote(k) for k in chunk)}]",
                    output_fields=[ROW_FIELD, VECTOR_FIELD, ID_FIELD],
                )
            records.extend(found)
        return records

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
        if rows is not None:  # by catalogue id: a newer build may number its rows otherwise
            listed = f"{ID_FIELD} in [{','.join(quote(self.ids[int(r)]) for r in rows)}]"
            expression = f"({expression}) and {listed}" if expression else listed
        share = self.allowed_share(filters, rows)
        limit = k
        while True:
            hits = self._ranked(queries, limit, expression, self.ef_for(limit, share))
            for q, ranked in enumerate(hits):
                known = [(row, score) for row, score in ranked if row is not None][:k]
                found[q, : len(known)] = [row for row, _ in known]
                scores[q, : len(known)] = [score for _, score in known]
            # A newer build than this reader's manifest may rank products it does not know (they
            # are left out); ask for more until k known ones come back or Milvus has no more.
            short = any(
                len(ranked) == limit and (found[q] < 0).any() for q, ranked in enumerate(hits)
            )
            if not short or limit >= MAX_LIMIT:
                return scores, found
            limit = min(MAX_LIMIT, 2 * limit + 10)

    def allowed_share(self, filters: dict[str, str] | None, rows) -> float:
        """The share of rows a search may return: the label filters' (from the value counts the
        build recorded; a label without counts is taken as unfiltered) times the rows'."""
        share = 1.0 if rows is None else len(rows) / max(1, len(self.ids))
        for label, value in (filters or {}).items():
            counts = self.label_counts.get(label)
            if counts:
                share *= counts.get(str(value), 0) / max(1, sum(counts.values()))
        return share

    def ef_for(self, limit: int, share: float) -> int | None:
        """HNSW `ef` for a search of `limit` hits among `share` of the rows (None: FLAT).

        A Milvus 2.3 server walking the graph with a filter finds fewer of the allowed best rows
        at the same `ef` (10% allowed, 20,000 x 512 clustered vectors: recall@10 0.89 at ef 128,
        0.998 at ef 1,024, measured), so `ef` grows as the filter narrows, as on the FAISS path.
        """
        if self.ef_search is None:
            return None
        widened = int(self.ef_search / share) if share > 0 else self.ef_search
        return max(limit, min(max(self.ef_search, widened), MAX_FILTER_EF))

    def _ranked(
        self, queries: np.ndarray, limit: int, expression: str, ef: int | None
    ) -> list[list[tuple]]:
        """Per query, its hits as (row of this reader or None, score), best first."""
        params: dict = {"metric_type": "IP"}
        if ef is not None:
            params["params"] = {"ef": ef}
        results = self._call(
            self.client.search,
            self.target,
            data=list(queries),
            limit=limit,
            filter=expression,
            anns_field=VECTOR_FIELD,
            search_params=params,
            output_fields=[ID_FIELD],
        )
        return [
            [
                (self.row_of.get((hit.get("entity") or {}).get(ID_FIELD)), float(hit["distance"]))
                for hit in hits[:limit]
            ]
            for hits in results
        ]

    range_limit = MAX_LIMIT

    def range_search(
        self, queries: np.ndarray, radius: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Milvus range search (`radius` / `range_filter`), at most `MAX_LIMIT` hits per query,
        in the rows of the collection this reader opened."""
        params = {"metric_type": "IP", "params": {"radius": radius, "range_filter": 1.0 + 1e-3}}
        results = self._call(
            self.client.search,
            self.collection,
            data=list(self.checked_queries(queries)),
            limit=MAX_LIMIT,
            anns_field=VECTOR_FIELD,
            search_params=params,
            output_fields=[],
        )
        owners, found, scores = [], [], []
        for query, hits in enumerate(results):
            for hit in hits:
                owners.append(query)
                found.append(int(hit.get(ROW_FIELD, hit.get("id"))))
                scores.append(float(hit["distance"]))
        return np.asarray(owners, np.int64), np.asarray(found, np.int64), np.asarray(scores)

    def range_batch(self, wanted: int) -> int:
        # gRPC messages are capped: send at most QUERY_BYTES of float32 queries per call.
        return max(1, min(wanted, QUERY_BYTES // (4 * max(1, self.dim))))

    def _call(self, method, *args, **kwargs):
        pymilvus = _pymilvus()
        try:
            return method(*args, **kwargs)
        except pymilvus.MilvusException as exc:
            raise EmbeddingsError(
                f"Milvus ({self.uri}, {self.target}) failed: {_short(exc)}"
            ) from exc


def load_milvus_index(
    model_dir: Path, manifest: dict, ids: list[str], *, rebuild_hint: str
) -> MilvusIndex:
    """Open the alias (or, for an older manifest, the collection) a Milvus build recorded, after
    checking it matches the manifest.

    The dimension is always checked; the row count only while the alias still points at the
    collection this manifest was built with (a newer build behind it may hold other products).
    """
    model_dir = Path(model_dir)
    catalogue_dir = model_dir.parent.parent
    section = manifest.get("milvus") or {}
    target = section.get("alias") or section.get("collection")
    if not target or not section.get("uri"):
        raise IndexMismatchError(
            f"{model_dir}: the manifest names no Milvus collection; {rebuild_hint}"
        )
    uri = resolve_uri(section["uri"], catalogue_dir)
    client = connect(uri)
    what = f"alias {target}" if section.get("alias") else f"collection {target}"
    pymilvus = _pymilvus()
    try:
        if not client.has_collection(target):
            raise IndexMissingError(
                f"the Milvus {what} of model {manifest['model_id']!r} is not in {uri} "
                f"(dropped, or another database); {rebuild_hint}"
            )
        described = client.describe_collection(target)
        dims = [
            int(f.get("params", {}).get("dim", 0))
            for f in described.get("fields", [])
            if f.get("name") == VECTOR_FIELD
        ]
        behind = described.get("collection_name", target)
        count = int(client.get_collection_stats(target).get("row_count", -1))
        client.load_collection(target, timeout=LOAD_TIMEOUT_S)  # loaded by its build: a no-op
    except pymilvus.MilvusException as exc:
        raise EmbeddingsError(f"Milvus at {uri} failed to open {what}: {_short(exc)}") from exc
    same_build = behind == section.get("collection")
    if dims != [manifest["dim"]] or (same_build and count != manifest["count"]):
        raise IndexMismatchError(
            f"Milvus {what} holds {count} vectors of dim {dims} but the manifest says "
            f"{manifest['count']} x {manifest['dim']}; {rebuild_hint}"
        )
    return MilvusIndex(
        manifest["model_id"],
        manifest,
        client,
        target,
        ids,
        dict(section.get("label_fields") or {}),
        uri,
    )

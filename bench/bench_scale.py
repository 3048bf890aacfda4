"""Scale: synthetic clustered vectors (100K and 1M x 512), exact vs HNSW: FAISS, Milvus Lite and
a real Milvus server.

Per engine and size: build (or insert + index) time, memory (growth of the process's
anonymous resident memory while building; Milvus Lite runs inside the process; a Milvus
server's is the RSS of its own processes), single-thread query latency p50/p95 over held-out
queries, and recall@10 against the exact answer, for a sweep of efSearch. Every engine runs in
a fresh process so memory figures do not mix.

The real server (`server-flat`, `server-hnsw`: the `milvus` package's standalone server, started by
tests/harness/milvus_server.py in its own folder under --work) is driven through the app's own code:
`milvus_backend.create_collection` / `insert_rows` with two label fields, flush, the wait for the
index, load, the alias, and queries through `MilvusIndex.search` (gRPC, hits mapped by catalogue
id), unfiltered and with a label filter allowing 10% or 1% of the rows.

The data: 1,000 clusters; each point is its cluster's centre (512-d Gaussian) plus a Gaussian
spread in a 16-d subspace of its own (spread 0.5) plus isotropic noise (0.02), L2-normalised.
Queries are fresh draws from the same clusters. Seeded: every run sees the same vectors.

    python -m bench.bench_scale --sizes 100000,1000000 --engines faiss-flat,faiss-hnsw,milvus-hnsw
    python -m bench.bench_scale --sizes 1000000 --engines server-hnsw --work /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import emit, log, machine, percentiles, rss_mib, single_thread

single_thread()

import numpy as np  # noqa: E402

from embeddings.index.store import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M  # noqa: E402

K = 10
DIM = 512
CLUSTERS = 1000
LATENT = 16
ENGINES = ("faiss-flat", "faiss-hnsw", "milvus-flat", "milvus-hnsw", "server-flat", "server-hnsw")
#: Label filters measured on the server: each allows one value of a label with 10 or 100 values
#: spread over the rows (independent of the clusters), i.e. 10% or 1% of the rows.
SERVER_FILTERS = {"tenth": ("t3", 10), "hundredth": ("h42", 100)}


def synthetic(n: int, *, seed: int, dim: int = DIM) -> np.ndarray:
    """n clustered unit vectors (the cluster layout is fixed; `seed` draws the points)."""
    layout = np.random.default_rng(12345)
    centres = layout.standard_normal((CLUSTERS, dim), dtype=np.float32)
    bases = layout.standard_normal((CLUSTERS, LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        cluster = rng.integers(0, CLUSTERS, m)
        spread = 0.5 * rng.standard_normal((m, LATENT), dtype=np.float32)
        points = centres[cluster] + np.einsum("ml,mld->md", spread, bases[cluster])
        points += 0.02 * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = points / np.linalg.norm(points, axis=1, keepdims=True)
    return out


def dataset(work: Path, n: int, queries: int) -> tuple[Path, Path, Path]:
    """Vectors, queries and exact top-10 on disk (made once per size, reused by every engine)."""
    import faiss

    work.mkdir(parents=True, exist_ok=True)
    base, query_file, truth_file = (
        work / f"base-{n}.npy",
        work / f"queries-{queries}.npy",
        work / f"truth-{n}-{queries}.npy",
    )
    if not base.is_file():
        log(f"generating {n:,} x {DIM} clustered vectors")
        np.save(base, synthetic(n, seed=1))
    if not query_file.is_file():
        np.save(query_file, synthetic(queries, seed=2))
    if not truth_file.is_file():
        log(f"exact top-{K} for {queries} queries over {n:,} vectors")
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        exact = faiss.IndexFlatIP(DIM)
        exact.add(np.load(base, mmap_mode="r")[:])
        np.save(truth_file, exact.search(np.load(query_file), K)[1])
        faiss.omp_set_num_threads(1)
    return base, query_file, truth_file


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth, strict=True)])
    )


def timed_queries(search, queries: np.ndarray, warmup: int = 3) -> tuple[dict, np.ndarray]:
    """One query at a time: latency percentiles and the (n, K) rows found."""
    for q in queries[:warmup]:
        search(q)
    durations, cpu, found = [], [], []
    for q in queries:
        started, started_cpu = time.perf_counter(), time.thread_time()
        rows = search(q)
        durations.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        found.append(
            np.pad(
                np.asarray(rows[:K], dtype=np.int64), (0, K - min(K, len(rows))), constant_values=-1
            )
        )
    return percentiles(durations, cpu), np.stack(found)


def run_faiss(
    engine: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    hnsw_m: int,
    ef_construction: int,
    ef_values: list[int],
    work: Path,
) -> dict:
    """FAISS flat or HNSW. An HNSW graph is kept in `work` once built (building 1M vectors takes
    many minutes on 2 cores): later runs load it and report the figures of the build that made
    it."""
    import faiss

    cached = work / f"hnsw-{len(vectors)}-M{hnsw_m}-efc{ef_construction}.faiss"
    cached_figures = cached.with_suffix(".json")
    before = rss_mib().get("RssAnon", 0.0)
    if engine == "faiss-hnsw" and cached.is_file() and cached_figures.is_file():
        log(f"loading the HNSW graph built earlier: {cached}")
        index = faiss.read_index(str(cached))
        out = {**json.loads(cached_figures.read_text()), "cached_graph": str(cached)}
    else:
        started = time.perf_counter()
        faiss.omp_set_num_threads(
            os.cpu_count() or 1
        )  # building may use every core; queries use one
        if engine == "faiss-flat":
            index = faiss.IndexFlatIP(DIM)
        else:
            index = faiss.IndexHNSWFlat(DIM, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        build_s = time.perf_counter() - started
        out = {
            "build_s": build_s,
            "build_threads": os.cpu_count(),
            "memory_mib": rss_mib().get("RssAnon", 0.0) - before,
            "vectors_mib": vectors.nbytes / 2**20,
            "built_at": time.strftime("%Y-%m-%d %H:%M"),
        }
        if engine == "faiss-hnsw":
            faiss.write_index(index, str(cached))
            cached_figures.write_text(json.dumps(out))
    faiss.omp_set_num_threads(1)
    if engine == "faiss-flat":
        latency, found = timed_queries(lambda q: index.search(q[None], K)[1][0], queries)
        out.update(latency=latency, recall_at_10=recall(found, truth))
        return out
    out.update(M=hnsw_m, efConstruction=ef_construction, by_ef={})
    for ef in ef_values:
        index.hnsw.efSearch = ef
        latency, found = timed_queries(lambda q: index.search(q[None], K)[1][0], queries)
        out["by_ef"][str(ef)] = {"latency": latency, "recall_at_10": recall(found, truth)}
        log(
            f"{engine} ef={ef}: recall {out['by_ef'][str(ef)]['recall_at_10']:.4f} p95 "
            f"{latency['p95_ms']:.3f} ms"
        )
    return out


def run_milvus(
    engine: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    work: Path,
    hnsw_m: int,
    ef_construction: int,
    ef_values: list[int],
) -> dict:
    """Milvus Lite through pymilvus, as the app uses it (gRPC to the in-process Lite server)."""
    import shutil

    from pymilvus import DataType, MilvusClient

    db = work / f"milvus-{engine}-{len(vectors)}.db"
    shutil.rmtree(db, ignore_errors=True)
    before = rss_mib().get("RssAnon", 0.0)
    client = MilvusClient(str(db))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    params = client.prepare_index_params()
    if engine == "milvus-flat":
        params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    else:
        params.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type="IP",
            params={"M": hnsw_m, "efConstruction": ef_construction},
        )
    client.create_collection(
        "bench", schema=schema, index_params=params, consistency_level="Bounded"
    )
    started = time.perf_counter()
    batch = 8192
    for start in range(0, len(vectors), batch):
        stop = min(len(vectors), start + batch)
        client.insert("bench", [{"row": r, "vector": vectors[r]} for r in range(start, stop)])
    insert_s = time.perf_counter() - started
    client.flush("bench")
    client.load_collection("bench")
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:  # the index is built in the background after flush
        described = client.describe_index("bench", "vector")
        if described.get("indexed_rows", 0) >= len(vectors) or described.get("state") == "Finished":
            break
        time.sleep(0.5)
    build_s = time.perf_counter() - started
    memory = rss_mib().get("RssAnon", 0.0) - before
    time.sleep(5)  # let Lite's background flush/compaction threads finish before timing queries
    out = {
        "insert_s": insert_s,
        "build_s": build_s,
        "memory_mib": memory,
        "index_state": described,
        "note": "Milvus Lite runs in this process (a gRPC server on a thread); memory "
        "includes its copies",
    }

    def search(q, ef=None):
        params = {"metric_type": "IP", **({"params": {"ef": ef}} if ef else {})}
        hits = client.search("bench", data=[q], limit=K, search_params=params, output_fields=[])[0]
        return [hit["row"] if "row" in hit else hit["id"] for hit in hits]

    if engine == "milvus-flat":
        latency, found = timed_queries(search, queries, warmup=20)
        out.update(latency=latency, recall_at_10=recall(found, truth))
    else:
        out.update(M=hnsw_m, efConstruction=ef_construction, by_ef={})
        for ef in ef_values:
            latency, found = timed_queries(lambda q, ef=ef: search(q, ef), queries, warmup=20)
            out["by_ef"][str(ef)] = {"latency": latency, "recall_at_10": recall(found, truth)}
            log(
                f"{engine} ef={ef}: recall {out['by_ef'][str(ef)]['recall_at_10']:.4f} p95 "
                f"{latency['p95_ms']:.3f} ms"
            )
    client.close()
    from milvus_lite import server_manager_instance

    server_manager_instance.release_server(
        str(db)
    )  # stop the in-process server before deleting its files
    shutil.rmtree(db, ignore_errors=True)
    return out


def server_labels(n: int) -> dict[str, list[str]]:
    return {
        field: [f"{value[0]}{row % share}" for row in range(n)]
        for field, (value, share) in SERVER_FILTERS.items()
    }


def filtered_truth(vectors: np.ndarray, queries: np.ndarray, field: str) -> np.ndarray:
    """Exact top-K rows among those the filter on `field` allows."""
    value, share = SERVER_FILTERS[field]
    allowed = np.flatnonzero(np.arange(len(vectors)) % share == int(value[1:]))
    scores = vectors[allowed] @ queries.T
    top = np.argsort(-scores, axis=0, kind="stable")[:K].T
    return allowed[top]


class RssSampler:
    """The peak RSS of a server's processes, sampled twice a second on a thread."""

    def __init__(self, server):
        import threading

        self.server, self.peak = server, server.rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.server.rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.server.rss_mib())


def server_cpu_s(server) -> float:
    """CPU seconds (user + system) the server's processes have used so far."""
    import psutil

    root = psutil.Process(server.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def server_build(server, engine: str, vectors: np.ndarray, *, hnsw_m: int, ef_construction: int):
    """Fill a collection the way a build does: (client, collection, ids, label fields, timings)."""
    from embeddings.index import milvus as milvus_backend

    n, hnsw = len(vectors), engine == "server-hnsw"
    client = milvus_backend.connect(server.uri)
    ids, labels = [f"p{r}" for r in range(n)], server_labels(n)
    fields = milvus_backend.label_field_names(list(labels))
    name = f"bench_{engine.replace('-', '_')}_{n}"
    marks = [time.perf_counter()]
    milvus_backend.create_collection(
        client,
        name,
        dim=DIM,
        labels=labels,
        fields=fields,
        ids=ids,
        hnsw=hnsw,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
    )
    marks.append(time.perf_counter())
    milvus_backend.insert_rows(client, name, ids=ids, vectors=vectors, labels=labels, fields=fields)
    marks.append(time.perf_counter())
    client.flush(name)
    marks.append(time.perf_counter())
    milvus_backend.wait_indexed(client, name, n, timeout_s=4 * 3600)
    marks.append(time.perf_counter())
    client.load_collection(name)
    milvus_backend.wait_visible(client, name, n, timeout_s=600)
    marks.append(time.perf_counter())
    steps = ("create", "insert", "flush", "index", "load")
    timings = {f"{step}_s": b - a for step, a, b in zip(steps, marks, marks[1:], strict=False)}
    timings["build_s"] = marks[-1] - marks[0]
    return client, name, ids, fields, timings


class ServerIndexes:
    """`MilvusIndex` views of one bench collection, as the app would open them."""

    def __init__(self, server, client, name: str, ids: list[str], fields: dict[str, str]):
        from embeddings.index import milvus as milvus_backend
        from embeddings.index import milvus_aliases

        self.server, self.client, self.name, self.ids, self.fields = (
            server,
            client,
            name,
            ids,
            fields,
        )
        self.alias = f"{name}_live"
        milvus_aliases.point_alias(server.uri, None, self.alias, name)
        self.counts = milvus_backend.label_value_counts(server_labels(len(ids)))

    def index(self, ef: int | None, *, widen: bool = True):
        from embeddings.index.milvus import MilvusIndex

        section = {
            "collection": self.name,
            "alias": self.alias,
            "ef_search": ef,
            "label_fields": self.fields,
            "label_counts": self.counts if widen else {},  # no counts: no widening
        }
        manifest = {"model_id": "bench", "dim": DIM, "count": len(self.ids), "milvus": section}
        uri = self.server.uri
        return MilvusIndex("bench", manifest, self.client, self.alias, self.ids, self.fields, uri)

    def measure(self, index, queries: np.ndarray, truth: np.ndarray, filters=None) -> dict:
        """One query at a time: latency, recall@10, and the server's CPU time per query."""
        cpu_before = server_cpu_s(self.server)
        latency, found = timed_queries(
            lambda q: index.search(q, K, filters=filters)[1][0], queries, warmup=20
        )
        server_cpu = (server_cpu_s(self.server) - cpu_before) / (len(queries) + 20)
        return {
            "latency": latency,
            "recall_at_10": recall(found, truth),
            "server_cpu_ms_per_query": server_cpu * 1000,
        }


def server_queries(
    views: ServerIndexes, engine: str, vectors, queries, truth, ef_values: list[int]
) -> dict:
    """Unfiltered queries per ef, then each label filter: the app's search (ef widened by the
    share the filter hides) and, on HNSW, the same at the unwidened ef."""
    hnsw = engine == "server-hnsw"
    efs = ef_values if hnsw else [None]
    out: dict = {"by_ef": {}, "filtered": {}}
    for ef in efs:
        figures = out["by_ef"][str(ef)] = views.measure(views.index(ef), queries, truth)
        log(
            f"{engine} ef={ef}: recall {figures['recall_at_10']:.4f} p95 "
            f"{figures['latency']['p95_ms']:.3f} ms"
        )
    base_ef = HNSW_EF_SEARCH if hnsw else None
    for field, (value, share) in SERVER_FILTERS.items():
        want = filtered_truth(vectors, queries, field)
        variants = {"app": views.index(base_ef)}
        if hnsw:
            variants["fixed ef"] = views.index(base_ef, widen=False)
        for variant, index in variants.items():
            ef = index.ef_for(K, index.allowed_share({field: value}, None))
            out["filtered"][f"{field} == {value} ({100 // share}%), {variant}"] = {
                "ef": ef,
                **views.measure(index, queries, want, {field: value}),
            }
    return out


def run_milvus_server(
    engine: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    work: Path,
    hnsw_m: int,
    ef_construction: int,
    ef_values: list[int],
) -> dict:
    """A real Milvus standalone server on this machine, queried through `MilvusIndex`."""
    import shutil

    from tests.harness.milvus_server import start_server

    folder = work / f"server-{engine}-{len(vectors)}"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    server = start_server(folder)
    out: dict = {"start_s": time.perf_counter() - started, "idle_rss_mib": server.rss_mib()}
    try:
        sampler = RssSampler(server)
        client, name, ids, fields, timings = server_build(
            server, engine, vectors, hnsw_m=hnsw_m, ef_construction=ef_construction
        )
        out.update(timings, build_peak_rss_mib=sampler.stop(), built_rss_mib=server.rss_mib())
        out["index_state"] = client.describe_index(name, "vector")
        views = ServerIndexes(server, client, name, ids, fields)
        out.update(server_queries(views, engine, vectors, queries, truth, ef_values))
        out.update(
            serving_rss_mib=server.rss_mib(),
            M=hnsw_m if engine == "server-hnsw" else None,
            efConstruction=ef_construction if engine == "server-hnsw" else None,
            vectors_mib=vectors.nbytes / 2**20,
            milvus_server="2.3.5 standalone (PyPI milvus)",
        )
    finally:
        server.stop()
    return out


def run_engine(args) -> dict:
    work = Path(args.work)
    base, query_file, truth_file = dataset(work, args.size, args.queries)
    vectors = np.ascontiguousarray(np.load(base))
    queries, truth = np.load(query_file), np.load(truth_file)
    ef_list = {"milvus": args.milvus_ef, "server": args.server_ef}.get(
        args.engine.split("-")[0], args.ef
    )
    ef_values = [int(e) for e in ef_list.split(",")]
    log(f"{args.engine} at {args.size:,}")
    if args.engine.startswith("faiss"):
        result = run_faiss(
            args.engine,
            vectors,
            queries,
            truth,
            hnsw_m=args.hnsw_m,
            ef_construction=args.ef_construction,
            ef_values=ef_values,
            work=work,
        )
    elif args.engine.startswith("server"):
        result = run_milvus_server(
            args.engine,
            vectors,
            queries,
            truth,
            work=work,
            hnsw_m=args.hnsw_m,
            ef_construction=args.ef_construction,
            ef_values=ef_values,
        )
    else:
        result = run_milvus(
            args.engine,
            vectors,
            queries,
            truth,
            work=work,
            hnsw_m=args.hnsw_m,
            ef_construction=args.ef_construction,
            ef_values=ef_values,
        )
    result["peak_rss_mib"] = rss_mib().get("VmHWM")
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument(
        "--engines-for",
        action="append",
        default=[],
        metavar="SIZE=ENGINES",
        help="other engines at one size, e.g. 1000000=faiss-flat,faiss-hnsw",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--hnsw-m", type=int, default=HNSW_M, help=f"default: the library's ({HNSW_M})"
    )
    parser.add_argument(
        "--ef-construction",
        type=int,
        default=HNSW_EF_CONSTRUCTION,
        help=f"default: the library's build setting ({HNSW_EF_CONSTRUCTION})",
    )
    parser.add_argument("--ef", default="16,32,64,128,256")
    parser.add_argument(
        "--milvus-ef",
        default="64,128",
        help="efSearch values on Milvus Lite (its queries cost O(n) Python work each)",
    )
    parser.add_argument(
        "--server-ef", default="16,32,64,128", help="efSearch values on the Milvus server"
    )
    parser.add_argument("--work", default="/tmp/embeddings-bench-scale")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        dataset(Path(args.work), args.size, args.queries)
        return 0
    if args.engine:
        emit(run_engine(args))
        return 0

    per_size = {
        int(size): engines for size, engines in (pair.split("=", 1) for pair in args.engines_for)
    }
    result = {
        "command": " ".join(["python", "-m", "bench.bench_scale", *(argv or sys.argv[1:])]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "dim": DIM,
        "clusters": CLUSTERS,
        "latent": LATENT,
        "queries": args.queries,
        "k": K,
        "threads": 1,
        "sizes": {},
    }
    for size in (int(s) for s in args.sizes.split(",") if s):
        # In a child process too: the exact ground truth needs the vectors in RAM, this process
        # must not.
        subprocess.run(
            [
                sys.executable,
                "-m",
                __spec__.name,
                "--prepare",
                "--size",
                str(size),
                "--queries",
                str(args.queries),
                "--work",
                args.work,
            ],
            check=True,
        )
        result["sizes"][str(size)] = {}
        for engine in per_size.get(size, args.engines).split(","):
            if engine not in ENGINES:
                raise SystemExit(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
            command = [
                sys.executable,
                "-m",
                __spec__.name,
                "--engine",
                engine,
                "--size",
                str(size),
                "--queries",
                str(args.queries),
                "--hnsw-m",
                str(args.hnsw_m),
                "--ef-construction",
                str(args.ef_construction),
                "--ef",
                args.ef,
                "--milvus-ef",
                args.milvus_ef,
                "--server-ef",
                args.server_ef,
                "--work",
                args.work,
            ]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            sys.stderr.write(done.stderr[-4000:])
            if done.returncode != 0:
                result["sizes"][str(size)][engine] = {
                    "error": done.stderr.strip().splitlines()[-1:]
                }
                continue
            entry = json.loads(done.stdout.strip().splitlines()[-1])
            entry["wall_s"] = time.perf_counter() - started
            result["sizes"][str(size)][engine] = entry
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

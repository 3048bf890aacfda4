"""Shared helpers for the benchmark scripts: timing, percentiles, memory, machine facts, JSON.

Every `bench_*.py` script runs on its own, as a module from the repository root (`python -m
bench.bench_query --help`), and prints one JSON document on stdout; `python -m bench.run` runs them
in fresh processes and writes BENCHMARKS.md. Figures are measurements of this machine at that
moment, never constants.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Where the shared fashion dataset lives relative to the repository.
SHARED_FASHION = REPO.parent / "shared" / "datasets" / "fashion-product-images-small"


def single_thread() -> None:
    """Pin BLAS, OpenMP and FAISS to one thread (call before importing numpy for BLAS to obey)."""
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):
        os.environ[name] = "1"
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


def percentiles(seconds: list[float], cpu_seconds: list[float] | None = None) -> dict:
    """p50 / p95 / mean in milliseconds of wall-clock durations (seconds), plus the same for the
    calling thread's CPU time when given: on a shared machine the wall clock also counts the
    time other processes held the core, the thread's CPU time does not."""
    import numpy as np

    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    out = {
        "n": int(len(ms)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
    }
    if cpu_seconds is not None:
        cpu = np.asarray(cpu_seconds, dtype=np.float64) * 1000.0
        out.update(
            cpu_p50_ms=float(np.percentile(cpu, 50)), cpu_p95_ms=float(np.percentile(cpu, 95))
        )
    return out


def time_each(fn: Callable[[int], object], n: int, *, warmup: int = 3) -> dict:
    """Call fn(0..n-1) one at a time; percentiles of the wall time of each call."""
    for i in range(min(warmup, n)):
        fn(i)
    durations, cpu = [], []
    for i in range(n):
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn(i)
        durations.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    return percentiles(durations, cpu)


def time_interleaved(
    methods: dict[str, Callable[[int], object]], n: int, *, warmup: int = 3
) -> dict[str, dict]:
    """Time several ways of answering the same n queries, round-robin, so a burst of load from
    other processes hits every method alike (fairer ratios on a shared machine).

    At each step the methods answer *different* queries (method j takes query i + j*n/m), so
    no method runs on caches its predecessor just warmed with the same query (that would flatter
    the second one on HNSW, whose working set fits in cache); each method still answers all n.
    """
    offset = max(1, n // max(1, len(methods)))
    for i in range(min(warmup, n)):
        for fn in methods.values():
            fn(i)
    durations: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(n):
        for j, (name, fn) in enumerate(methods.items()):
            query = (i + j * offset) % n
            started, started_cpu = time.perf_counter(), time.thread_time()
            fn(query)
            durations[name].append(time.perf_counter() - started)
            cpu[name].append(time.thread_time() - started_cpu)
    return {name: percentiles(durations[name], cpu[name]) for name in methods}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> dict:
    """Current resident memory split into anonymous (private copies) and file-backed (mmap)."""
    fields = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return fields


def page_cache_share(path: str | Path) -> float | None:
    """The share of a file's pages in the page cache right now (util-linux `fincore`), or None.

    A cold start or a first query on a memory-mapped index reads from disk whatever is not
    cached, so the figures mean little without this.
    """
    import shutil
    import subprocess

    path = Path(path)
    if not path.is_file() or not shutil.which("fincore") or path.stat().st_size == 0:
        return None
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
    )
    try:
        return min(1.0, int(done.stdout.split()[0]) / path.stat().st_size)  # RES counts whole pages
    except (IndexError, ValueError):
        return None


def evict_from_page_cache(path: str | Path) -> None:
    """Drop one file's clean pages from the page cache (posix_fadvise DONTNEED): the next reader
    reads it from disk, as after a reboot. Affects only this file; nothing is lost."""
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


SIMD_FLAGS = {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile"}


def machine() -> dict:
    """CPU, cores, memory, load and library versions: the context every figure needs."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                # ONNX Runtime's and torch's CPU kernels differ most by these (AVX2 or not).
                flags = set(line.split(":", 1)[1].split())
                info["simd"] = sorted(flags & SIMD_FLAGS)
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gib"] = round(int(mem) / 1024 / 1024, 1)
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    versions = {}
    for module in (
        "numpy",
        "faiss",
        "torch",
        "pandas",
        "sklearn",
        "pymilvus",
        "milvus_lite",
        "streamlit",
    ):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a missing optional library is reported as absent
            versions[module] = "absent"
    info["versions"] = versions
    return info


def emit(result: dict) -> None:
    """Print the script's result as JSON (the runner parses the last line of stdout)."""
    print(json.dumps(result, default=float))


def log(message: str) -> None:
    """Progress for people, on stderr (stdout carries the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

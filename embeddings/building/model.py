"""Embedding a catalogue with one model: batched, overlapped, resumable and incremental.

`embed_catalogue` embeds the catalogue items a model has no vector for yet, in fixed chunks
of `chunk_size` items. Each finished chunk is saved (temp file + `os.replace`) into a work
folder keyed by the plan (model, weights, the ids to embed, chunk and batch size), so after
Ctrl-C or `kill -9` the same command skips the finished chunks and embeds the same remaining
chunks with the same batch boundaries: the final index is identical to an uninterrupted
build's. When products are added, only the new ones are embedded; vectors already built for
the same model and weights are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embeddings.atomic import write_atomic
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError, ImageError
from embeddings.images import open_rgb
from embeddings.index.store import (
    DEFAULT_HNSW_ABOVE,
    load_vectors,
    read_manifest,
    write_model_index,
)
from embeddings.models import Embedder
from embeddings.progress import Progress, ProgressFn, no_progress

DEFAULT_BATCH_SIZE = 64
DEFAULT_CHUNK_BATCHES = 2


@dataclass
class BuildReport:
    model_id: str
    count: int = 0  # vectors in the final index
    embedded: int = 0  # embedded in this run
    reused: int = 0  # taken from the previous index or from finished chunks of an interrupted run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    seconds: float = 0.0  # embedding time of this run
    total_seconds: float = 0.0  # with reading earlier vectors and chunks
    manifest: dict | None = None

    @property
    def items_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def _plan_key(
    model_id: str, weights_id: str, todo: Sequence[str], chunk_size: int, batch_size: int
) -> str:
    digest = hashlib.sha256(f"{model_id}\n{weights_id}\n{chunk_size}\n{batch_size}\n".encode())
    for item_id in todo:
        digest.update(item_id.encode() + b"\n")
    return digest.hexdigest()[:16]


def _previous_vectors(model_dir: Path, model_id: str, weights_id: str) -> dict[str, np.ndarray]:
    """Vectors of the index already built for this model and weights (for incremental builds)."""
    manifest = read_manifest(model_dir)
    if (
        not manifest
        or manifest.get("model_id") != model_id
        or manifest.get("weights_id") != weights_id
    ):
        return {}
    try:
        ids, vectors = load_vectors(model_dir)
    except (OSError, ValueError):
        return {}  # damaged: rebuild from scratch rather than trust it
    return dict(zip(ids, vectors, strict=True))


def _load_and_prepare(embedder: Embedder, catalogue: Catalogue, item_id: str):
    """Decode one image and preprocess it; returns (prepared, None) or (None, reason)."""
    try:
        image = open_rgb(
            catalogue.image_path(item_id), name=f"{item_id} ({catalogue.items.at[item_id, 'path']})"
        )
        return embedder.prepare(image), None
    except (ImageError, EmbeddingsError) as exc:
        return None, str(exc)


def _decode_ahead(embedder: Embedder, workers: int) -> int:
    """How many chunks to decode while the model runs: 1 when there are cores to spare, else 0.

    A model that keeps every core busy in its forward pass (torch's or ONNX Runtime's intra-op
    threads, `Embedder.inference_threads`) is slowed down by decoding threads running at the
    same time: each preempted thread stalls the others at the next synchronisation point.
    Measured on 2 cores with EfficientNet-Lite0 (bench/bench_build.py, BENCHMARKS.md): on
    torch, decoding overlapped with the forward pass reached 78% of the forward-only speed and
    decoding each chunk with all threads between forward passes 89%. On ONNX Runtime, whose
    idle threads sleep rather than spin, with the table-lookup preprocessing, overlapping won:
    86% against 82% (`bench_build.py --runtimes onnx --ahead 0,1`), so it always overlaps.
    """
    if embedder.runtime == "onnx":
        return 1
    threads = embedder.inference_threads
    return 1 if workers + threads <= (os.cpu_count() or 1) else 0


def _prefetch(
    executor: ThreadPoolExecutor, chunks: Sequence[Sequence[str]], fn, ahead: int = 1
) -> Iterator[tuple[int, list[Future]]]:
    """Yield (chunk number, futures) while the next `ahead` chunks are already decoding."""
    pending: dict[int, list[Future]] = {}
    for number in range(len(chunks)):
        for upcoming in range(number, min(number + ahead + 1, len(chunks))):
            if upcoming not in pending:
                pending[upcoming] = [executor.submit(fn, item_id) for item_id in chunks[upcoming]]
        yield number, pending.pop(number)


@dataclass
class EmbeddedVectors:
    """Every vector of a model for a catalogue, in catalogue order, ready to be indexed."""

    ids: list[str]
    vectors: np.ndarray  # float32 (len(ids), dim), L2-normalised
    report: BuildReport
    work_dir: Path  # finished chunks of this plan; removed once the index is committed


#: An embedding engine: (embedder, catalogue, chunks, remaining chunk numbers, batch size,
#: decoding workers) -> (chunk number, vectors, failures, embedded ids) for every remaining
#: chunk, in any order. `_embed_chunks` is the local one; `embeddings.building.ray_engine` runs
#: the same chunks on a Ray cluster.
ChunkEngine = Callable[..., Iterator[tuple[int, np.ndarray, dict[str, str], list[str]]]]


def embed_catalogue(
    catalogue: Catalogue,
    embedder: Embedder,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int | None = None,
    workers: int = 2,
    force: bool = False,
    progress: ProgressFn | None = None,
    engine: ChunkEngine | None = None,
) -> EmbeddedVectors:
    """Embed what the model's current index lacks (everything with `force`), chunk by chunk.

    Vectors of the previous index built with the same model and weights are reused; finished
    chunks of an interrupted run with the same plan are reused, whichever engine wrote them.
    Unreadable images are reported in `report.failed` and left out; they never stop the
    embedding. Each chunk goes to disk as it is finished and is not kept in memory: the
    vectors are gathered from the chunk files once, at the end, into one array.
    """
    started = time.perf_counter()
    model_id, weights_id = embedder.id, embedder.weights_id
    chunk_size = chunk_size or batch_size * DEFAULT_CHUNK_BATCHES
    model_dir = catalogue.model_dir(model_id)
    report = BuildReport(model_id)
    known = {} if force else _previous_vectors(model_dir, model_id, weights_id)
    ids = catalogue.ids
    todo = [item_id for item_id in ids if item_id not in known]
    chunks = [todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size)]
    work_dir = model_dir.with_name(f"{model_dir.name}.work")
    plan_dir = _plan_dir(
        work_dir,
        _plan_key(model_id, weights_id, todo, chunk_size, batch_size),
        {
            "model_id": model_id,
            "weights_id": weights_id,
            "todo": len(todo),
            "chunk_size": chunk_size,
            "batch_size": batch_size,
        },
    )
    failed, finished = _reuse_chunks(plan_dir, chunks, report)
    done = len(ids) - len(todo) + sum(len(chunks[n]) for n in finished)
    say = progress or no_progress
    say(Progress("embed", model_id, done, len(ids)))  # after every chunk, from here on
    remaining = [n for n in range(len(chunks)) if n not in finished]
    embed_started = time.perf_counter()
    run = engine or _embed_chunks
    for number, vectors, chunk_failed, ok_ids in run(
        embedder, catalogue, chunks, remaining, batch_size, workers
    ):
        _write_chunk(plan_dir / f"chunk-{number:06d}.npz", ok_ids, vectors, chunk_failed)
        failed.update(chunk_failed)
        report.embedded += len(ok_ids)
        done += len(chunks[number])
        say(Progress("embed", model_id, done, len(ids)))
    report.seconds = time.perf_counter() - embed_started
    final_ids, stacked = _gather(ids, known, plan_dir, chunks, embedder.dim)
    report.reused += sum(1 for i in final_ids if i in known)
    report.failed = sorted(failed.items())
    report.count = len(final_ids)
    report.total_seconds = time.perf_counter() - started
    return EmbeddedVectors(final_ids, stacked, report, work_dir)


def _gather(
    ids: list[str],
    known: dict[str, np.ndarray],
    plan_dir: Path,
    chunks: list[list[str]],
    dim: int,
) -> tuple[list[str], np.ndarray]:
    """Every vector in catalogue order: the reused ones and those of the chunk files, read
    chunk by chunk into one array memory-mapped from `plan_dir`/gathered.npy. The file, not
    the driver's memory, holds them (pages come and go): a Milvus sink inserts them batch by
    batch, so a build of millions needs no RAM for every vector (a FAISS index, built in
    memory, still does)."""
    paths = [plan_dir / f"chunk-{number:06d}.npz" for number in range(len(chunks))]
    embedded: set[str] = set()
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            embedded.update(data["ids"].tolist())
    final_ids = [item_id for item_id in ids if item_id in known or item_id in embedded]
    row_of = {item_id: row for row, item_id in enumerate(final_ids)}
    stacked = _disk_array(plan_dir / "gathered.npy", (len(final_ids), dim))
    for item_id, vector in known.items():
        if item_id in row_of:
            stacked[row_of[item_id]] = vector
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            rows = [row_of[item_id] for item_id in data["ids"].tolist()]
            if rows:
                stacked[rows] = data["vectors"]
    return final_ids, stacked


def _disk_array(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A float32 .npy file of `shape`, memory-mapped for writing, its blocks reserved first: a
    full disk is an OSError (ENOSPC) here, not a SIGBUS on a later write into a sparse page."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))
    return array


def _plan_dir(work_dir: Path, plan: str, description: dict) -> Path:
    """This plan's chunk folder; folders of other plans (other ids, other sizes) are stale."""
    if work_dir.exists():
        for stale in work_dir.iterdir():
            if stale.name != plan:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
    plan_dir = work_dir / plan
    plan_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(plan_dir / "plan.json", json.dumps(description))
    return plan_dir


def _reuse_chunks(plan_dir: Path, chunks: list[list[str]], report: BuildReport):
    """Failures and numbers of the chunks an interrupted run of this plan finished (their
    vectors stay on disk until `_gather`)."""
    failed: dict[str, str] = {}
    finished: set[int] = set()
    for number, chunk in enumerate(chunks):
        saved = _read_chunk(plan_dir / f"chunk-{number:06d}.npz", chunk)
        if saved is not None:
            vectors, chunk_failed = saved
            failed.update(chunk_failed)
            finished.add(number)
            report.reused += len(vectors)
    return failed, finished


def _embed_chunks(
    embedder: Embedder,
    catalogue: Catalogue,
    chunks: list[list[str]],
    remaining: list[int],
    batch_size: int,
    workers: int,
):
    """Yield (chunk number, vectors, failures, embedded ids) for each remaining chunk, in order,
    decoding the next chunk in threads while the model runs (see `_decode_ahead`)."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as executor:
        prepare = lambda item_id: _load_and_prepare(embedder, catalogue, item_id)  # noqa: E731
        ahead = _decode_ahead(embedder, workers)
        for position, futures in _prefetch(
            executor, [chunks[n] for n in remaining], prepare, ahead=ahead
        ):
            number = remaining[position]
            results = [future.result() for future in futures]
            pairs = list(zip(chunks[number], results, strict=True))
            ok_ids = [item_id for item_id, (prepared, _) in pairs if prepared is not None]
            prepared = [prepared for _, (prepared, _) in pairs if prepared is not None]
            chunk_failed = {item_id: reason for item_id, (_, reason) in pairs if reason is not None}
            parts = [
                embedder.embed_prepared(prepared[s : s + batch_size])
                for s in range(0, len(prepared), batch_size)
            ]
            vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
            yield number, vectors, chunk_failed, ok_ids


def index_manifest(catalogue: Catalogue, embedder: Embedder, report: BuildReport) -> dict:
    """What a model's index manifest records about the build (index.py adds the rest)."""
    return {
        "model_id": embedder.id,
        "weights_id": embedder.weights_id,
        "runtime": embedder.runtime,  # what embedded this run's vectors: numpy, onnx or torch
        "description": embedder.spec.description,
        "has_text": embedder.spec.has_text,
        "catalogue_fingerprint": catalogue.fingerprint,
        "catalogue_count": len(catalogue),
        "failed": [{"id": i, "reason": r} for i, r in report.failed],
        "build_seconds": round(report.total_seconds, 3),
        "embedded_this_run": report.embedded,
    }


def index_labels(catalogue: Catalogue, ids: list[str], backend: str) -> dict[str, list[str]] | None:
    """Label values per row for a backend that filters by itself (Milvus), else None."""
    if backend != "milvus":
        return None
    return {
        label: catalogue.items.loc[ids, label].astype(str).tolist()
        for label in catalogue.label_fields
    }


def build_model_index(
    catalogue: Catalogue,
    embedder: Embedder,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int | None = None,
    workers: int = 2,
    hnsw_above: int = DEFAULT_HNSW_ABOVE,
    store_dtype: str = "float32",
    force: bool = False,
    progress: ProgressFn | None = None,
    backend: str = "faiss",
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> BuildReport:
    """Embed what is missing and put one model's index in place (`embed_catalogue`, then
    `embeddings.index.store.write_model_index`). A whole catalogue is built by
    `embeddings.building.catalogue.build_catalogue`, which commits all its models at once.
    """
    embedded = embed_catalogue(
        catalogue,
        embedder,
        batch_size=batch_size,
        chunk_size=chunk_size,
        workers=workers,
        force=force,
        progress=progress,
    )
    report = embedded.report
    report.manifest = write_model_index(
        catalogue.model_dir(embedder.id),
        ids=embedded.ids,
        vectors=embedded.vectors,
        manifest=index_manifest(catalogue, embedder, report),
        hnsw_above=hnsw_above,
        store_dtype=store_dtype,
        backend=backend,
        labels=index_labels(catalogue, embedded.ids, backend),
        milvus_uri=milvus_uri,
        milvus_token=milvus_token,
    )
    shutil.rmtree(embedded.work_dir, ignore_errors=True)
    return report


def _write_chunk(path: Path, ids: list[str], vectors: np.ndarray, failed: dict[str, str]) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.array(ids, dtype=str),
        vectors=vectors.astype(np.float32),
        failed_ids=np.array(list(failed), dtype=str),
        failed_reasons=np.array(list(failed.values()), dtype=str),
    )
    write_atomic(path, buffer.getvalue())


def _read_chunk(path: Path, expected: Sequence[str]):
    """A finished chunk's vectors and failures, or None if absent or not the expected chunk."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = data["ids"].tolist()
            vectors = data["vectors"]
            failed = dict(
                zip(data["failed_ids"].tolist(), data["failed_reasons"].tolist(), strict=True)
            )
    except (OSError, ValueError, KeyError):
        return None
    if sorted(ids + list(failed)) != sorted(expected):
        return None
    return dict(zip(ids, vectors, strict=True)), failed

"""Building per-model indexes: batched, overlapped, resumable and incremental.

`build_model_index` embeds the catalogue items a model has no vector for yet, in fixed chunks
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

from embeddings.catalog import Catalogue, write_atomic
from embeddings.errors import EmbeddingsError, ImageError
from embeddings.images import open_rgb
from embeddings.index import (
    DEFAULT_HNSW_ABOVE,
    load_vectors,
    read_manifest,
    write_model_index,
)
from embeddings.models import Embedder

#: progress(done, total): called after every chunk (tqdm in the CLI, st.progress in the app).
ProgressFn = Callable[[int, int], None]

DEFAULT_BATCH_SIZE = 64
DEFAULT_CHUNK_BATCHES = 2


@dataclass
class BuildReport:
    model_id: str
    count: int = 0  # vectors in the final index
    embedded: int = 0  # embedded in this run
    reused: int = 0  # taken from the previous index or from finished chunks of an interrupted run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    seconds: float = 0.0
    manifest: dict | None = None

    @property
    def items_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def _plan_key(model_id: str, weights_id: str, todo: Sequence[str], chunk_size: int, batch_size: int) -> str:
    digest = hashlib.sha256(f"{model_id}\n{weights_id}\n{chunk_size}\n{batch_size}\n".encode())
    for item_id in todo:
        digest.update(item_id.encode() + b"\n")
    return digest.hexdigest()[:16]


def _previous_vectors(model_dir: Path, model_id: str, weights_id: str) -> dict[str, np.ndarray]:
    """Vectors of the index already built for this model and weights (for incremental builds)."""
    manifest = read_manifest(model_dir)
    if not manifest or manifest.get("model_id") != model_id or manifest.get("weights_id") != weights_id:
        return {}
    try:
        ids, vectors = load_vectors(model_dir)
    except (OSError, ValueError):
        return {}  # damaged: rebuild from scratch rather than trust it
    return dict(zip(ids, vectors, strict=True))


def _load_and_prepare(embedder: Embedder, catalogue: Catalogue, item_id: str):
    """Decode one image and preprocess it; returns (prepared, None) or (None, reason)."""
    try:
        image = open_rgb(catalogue.image_path(item_id), name=f"{item_id} ({catalogue.items.at[item_id, 'path']})")
        return embedder.prepare(image), None
    except (ImageError, EmbeddingsError) as exc:
        return None, str(exc)


def _decode_ahead(embedder: Embedder, workers: int) -> int:
    """How many chunks to decode while the model runs: 1 when there are cores to spare, else 0.

    A torch model already uses every core for its forward pass (intra-op threads); decoding
    threads running at the same time preempt them, and each preempted thread stalls the others
    at the next synchronisation point. Measured on 2 cores with EfficientNet-Lite0
    (bench/bench_build.py): decoding overlapped with the forward pass reached 78% of the
    forward-only speed; decoding each chunk with all threads between forward passes, 89%.
    """
    if not embedder.spec.needs_torch:
        return 1
    import torch  # already imported: the model is a torch model

    return 1 if workers + torch.get_num_threads() <= (os.cpu_count() or 1) else 0


def _prefetch(executor: ThreadPoolExecutor, chunks: Sequence[Sequence[str]], fn, ahead: int = 1
              ) -> Iterator[tuple[int, list[Future]]]:
    """Yield (chunk number, futures) while the next `ahead` chunks are already decoding."""
    pending: dict[int, list[Future]] = {}
    for number in range(len(chunks)):
        for upcoming in range(number, min(number + ahead + 1, len(chunks))):
            if upcoming not in pending:
                pending[upcoming] = [executor.submit(fn, item_id) for item_id in chunks[upcoming]]
        yield number, pending.pop(number)


def build_model_index(catalogue: Catalogue, embedder: Embedder, *, batch_size: int = DEFAULT_BATCH_SIZE,
                      chunk_size: int | None = None, workers: int = 2, hnsw_above: int = DEFAULT_HNSW_ABOVE,
                      store_dtype: str = "float32", force: bool = False,
                      progress: ProgressFn | None = None, backend: str = "faiss",
                      milvus_uri: str | None = None, milvus_token: str | None = None) -> BuildReport:
    """Embed what is missing, then write the model's index artefacts atomically.

    `force` ignores vectors from a previous build. Unreadable images are reported in the
    returned `BuildReport.failed` (and the manifest) and left out; they never stop the build.
    `backend="milvus"` stores the index in a Milvus collection (`milvus_uri`, default Milvus
    Lite inside the catalogue) with the catalogue's label fields as filterable scalar fields.
    """
    started = time.perf_counter()
    model_id, weights_id = embedder.id, embedder.weights_id
    chunk_size = chunk_size or batch_size * DEFAULT_CHUNK_BATCHES
    model_dir = catalogue.model_dir(model_id)
    report = BuildReport(model_id)

    known = {} if force else _previous_vectors(model_dir, model_id, weights_id)
    ids = catalogue.ids
    todo = [item_id for item_id in ids if item_id not in known]
    chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
    plan = _plan_key(model_id, weights_id, todo, chunk_size, batch_size)
    work_dir = model_dir.with_name(f"{model_id}.work")
    plan_dir = work_dir / plan
    if work_dir.exists():  # runs with another plan (other ids, other sizes) are stale now
        for stale in work_dir.iterdir():
            if stale.name != plan:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
    plan_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(plan_dir / "plan.json", json.dumps({"model_id": model_id, "weights_id": weights_id,
                                                     "todo": len(todo), "chunk_size": chunk_size,
                                                     "batch_size": batch_size}))
    new_vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    done_items = len(ids) - len(todo)
    if progress:
        progress(done_items, len(ids))

    def chunk_file(number: int) -> Path:
        return plan_dir / f"chunk-{number:06d}.npz"

    remaining = []
    for number, chunk in enumerate(chunks):
        saved = _read_chunk(chunk_file(number), chunk)
        if saved is None:
            remaining.append(number)
            continue
        vectors, chunk_failed = saved
        new_vectors.update(vectors)
        failed.update(chunk_failed)
        report.reused += len(vectors)
        done_items += len(chunk)
    if progress and report.reused:
        progress(done_items, len(ids))

    embed_started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as executor:
        prepare = lambda item_id: _load_and_prepare(embedder, catalogue, item_id)  # noqa: E731
        ahead = _decode_ahead(embedder, workers)
        for position, futures in _prefetch(executor, [chunks[n] for n in remaining], prepare, ahead=ahead):
            number = remaining[position]
            chunk = chunks[number]
            results = [future.result() for future in futures]
            ok_ids = [item_id for item_id, (prepared, _) in zip(chunk, results, strict=True) if prepared is not None]
            prepared = [prepared for prepared, _ in results if prepared is not None]
            chunk_failed = {item_id: reason for item_id, (_, reason) in zip(chunk, results, strict=True)
                            if reason is not None}
            parts = [embedder.embed_prepared(prepared[s:s + batch_size]) for s in range(0, len(prepared), batch_size)]
            vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
            _write_chunk(chunk_file(number), ok_ids, vectors, chunk_failed)
            new_vectors.update(zip(ok_ids, vectors, strict=True))
            failed.update(chunk_failed)
            report.embedded += len(ok_ids)
            done_items += len(chunk)
            if progress:
                progress(done_items, len(ids))
    report.seconds = time.perf_counter() - embed_started

    final_ids = [item_id for item_id in ids if item_id in known or item_id in new_vectors]
    dim = embedder.dim
    stacked = (np.stack([known[i] if i in known else new_vectors[i] for i in final_ids])
               if final_ids else np.zeros((0, dim), dtype=np.float32))
    report.reused += sum(1 for i in final_ids if i in known)
    report.failed = sorted(failed.items())
    labels = ({label: catalogue.items.loc[final_ids, label].astype(str).tolist() for label in catalogue.label_fields}
              if backend == "milvus" else None)
    report.manifest = write_model_index(
        model_dir, ids=final_ids, vectors=stacked, hnsw_above=hnsw_above, store_dtype=store_dtype,
        backend=backend, labels=labels, milvus_uri=milvus_uri, milvus_token=milvus_token,
        manifest={"model_id": model_id, "weights_id": weights_id,
                  "description": embedder.spec.description, "has_text": embedder.spec.has_text,
                  "catalogue_fingerprint": catalogue.fingerprint, "catalogue_count": len(ids),
                  "failed": [{"id": i, "reason": r} for i, r in report.failed],
                  "build_seconds": round(time.perf_counter() - started, 3),
                  "embedded_this_run": report.embedded})
    report.count = len(final_ids)
    shutil.rmtree(work_dir, ignore_errors=True)
    return report


def _write_chunk(path: Path, ids: list[str], vectors: np.ndarray, failed: dict[str, str]) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), vectors=vectors.astype(np.float32),
             failed_ids=np.array(list(failed), dtype=str), failed_reasons=np.array(list(failed.values()), dtype=str))
    write_atomic(path, buffer.getvalue())


def _read_chunk(path: Path, expected: Sequence[str]):
    """A finished chunk's vectors and failures, or None if absent or not the expected chunk."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = data["ids"].tolist()
            vectors = data["vectors"]
            failed = dict(zip(data["failed_ids"].tolist(), data["failed_reasons"].tolist(), strict=True))
    except (OSError, ValueError, KeyError):
        return None
    if sorted(ids + list(failed)) != sorted(expected):
        return None
    return dict(zip(ids, vectors, strict=True)), failed

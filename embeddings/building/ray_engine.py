"""The Ray engine (`build --engine ray`): a Ray Data job embeds, the driver does the rest.

The driver, the process running the build, keeps what the local engine does: the scan, the
plan of resumable chunks and each chunk's file (`embeddings.building.model.embed_catalogue`), the
commit and the build lock, FAISS or Milvus as the sink, the progress bars. `RayEngine` only
turns the remaining chunks into vectors, on a running cluster or on a local one it starts:

- one row per image: (chunk, position, image folder, relative path); batches are keyed by row,
  so the order they come back in does not matter;
- reading and decoding are Ray tasks that apply the local engine's checks (the path stays
  inside the image folder, `open_rgb`'s 64-megapixel cap, unreadable files named by path);
- a neural model embeds in an actor pool of ONNX Runtime sessions, one per actor: its export is
  made (or found) once on the driver and shipped through the object store, and every actor
  checks it against its manifest before loading it; numpy models (`pixels`, `colour`) prepare
  and embed in the decoding tasks themselves;
- the `embeddings` package goes with the job (`runtime_env` `py_modules`), so the workers run
  the driver's code; their images carry the pinned requirements.txt.

Lost tasks run again elsewhere and lost actors restart (Ray Data's defaults for map tasks and
actor pools). Vectors stream back batch by batch and a chunk is handed to the driver as soon as
all its rows are in: the driver holds only the chunks in flight. `import ray` happens in this
module only, inside its functions: the app, the CLI's other commands and serving never import
Ray.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embeddings.errors import EmbeddingsError

ENGINES = ("local", "ray")
ADDRESS_ENV = "RAY_ADDRESS"
#: How long the driver waits for the cluster's address to answer before saying it cannot.
CONNECT_TIMEOUT_S = 10.0
#: The cluster counts as gone once its address has not answered for this long during a build.
GONE_AFTER_S = 10.0
#: Memory each decoding task reserves (a batch of decoded images and their prepared arrays).
DECODE_MEMORY = 512 * 2**20


class ClusterError(EmbeddingsError):
    """The Ray cluster cannot be reached, or went away during the build."""


def check_runtime(runtime: str | None = None) -> None:
    """Refuse the torch runtime on Ray: the workers run ONNX Runtime sessions only."""
    from embeddings.models.onnx_loader import RUNTIME_ENV, chosen_runtime

    if chosen_runtime(runtime) == "torch":
        raise EmbeddingsError(
            f"the torch runtime ({RUNTIME_ENV}=torch) is not offered on the Ray engine: its "
            "workers embed with ONNX Runtime sessions made from one export. Unset "
            f"{RUNTIME_ENV} to build on Ray, or build with --engine local to use torch"
        )


def _split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host:port'; None when it has no port."""
    bare = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _answers(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resume_hint() -> str:
    return (
        "Nothing was committed and the finished chunks are kept: run the same command again "
        "once the cluster is up"
    )


@dataclass
class ActorStats:
    """What one actor (or decoding task process, for numpy models) embedded."""

    rows: int = 0
    seconds: float = 0.0  # time inside the model

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RayEngine:
    """Embeds chunks on a Ray cluster (see the module docstring); call `close` when done.

    `address`: a running cluster ('host:port' or 'ray://host:port'); None: `$RAY_ADDRESS`, else
    a local cluster started on 127.0.0.1. `actor_cpus`: CPUs each model actor reserves (its
    ONNX Runtime threads); `decode_cpus`: CPUs each decoding task reserves.
    """

    address: str | None = None
    actor_cpus: float = 1.0
    decode_cpus: float = 0.5
    max_actors: int | None = None
    stats: dict[str, ActorStats] = field(default_factory=dict)
    first_vector_seconds: float | None = None  # from submitting the job to the first vector
    _started_ray: bool = False
    _gcs: tuple[str, int] | None = None

    @property
    def where(self) -> str:
        address = self.address or os.environ.get(ADDRESS_ENV)
        return f"the Ray cluster at {address}" if address else "a local Ray cluster"

    def connect(self) -> None:
        """Join the cluster (or start a local one), shipping the package; `ClusterError` when
        the address does not answer."""
        address = self.address or os.environ.get(ADDRESS_ENV) or None
        split = _split_address(address) if address and address != "auto" else None
        if address and address != "auto" and split is None:
            raise ClusterError(
                f"--ray-address {address!r}: write it as HOST:PORT (the head's GCS port, "
                "6379 by default) or ray://HOST:PORT"
            )
        if split and not _answers(*split, CONNECT_TIMEOUT_S):
            raise ClusterError(
                f"{self.where} does not answer (nothing listens on {split[0]}:{split[1]}); "
                f"start it (ray start --head) or check the address. {_resume_hint()}"
            )
        if split is None or _is_loopback(split[0]):
            # Ray replaces a loopback address by the machine's network address unless told
            # not to (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): a cluster on this machine stays on
            # 127.0.0.1. Read when ray is imported, so set before.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # The driver must outlive a lost head long enough to say so (it exits after this).
        os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "3600")
        import ray

        if ray.is_initialized():
            return
        options = {
            "runtime_env": {"py_modules": [str(Path(__file__).resolve().parents[1])]},
            "log_to_driver": False,
            "logging_level": "ERROR",
        }
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **options)
        except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ...
            raise ClusterError(f"cannot join {self.where}: {exc}. {_resume_hint()}") from exc
        self._started_ray = True
        gcs = ray.get_runtime_context().gcs_address
        self._gcs = _split_address(gcs) if gcs else None

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __call__(self, embedder, catalogue, chunks, remaining, batch_size, workers) -> Iterator:
        """(chunk number, vectors, failures, embedded ids) for each remaining chunk, as each
        one's last row comes back (see `embeddings.building.model.ChunkEngine`)."""
        if not remaining:
            return
        if embedder.runtime == "torch":
            check_runtime("torch")
        self.connect()
        rows = _rows(catalogue, chunks, remaining)
        dataset = self._dataset(embedder, rows, batch_size)
        gone = f"{self.where} went away during the build. {_resume_hint()}"
        watchdog = _Watchdog(self._gcs, gone) if self._gcs else None
        pending: dict[int, dict[int, tuple[np.ndarray | None, str]]] = {}
        submitted = time.perf_counter()
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                if self.first_vector_seconds is None:
                    self.first_vector_seconds = time.perf_counter() - submitted
                self._count(batch)
                yield from _completed_chunks(batch, chunks, pending)
        except ClusterError:
            raise
        except BaseException as exc:
            if watchdog is not None and watchdog.gone():
                watchdog.handled.set()
                raise ClusterError(gone) from exc
            raise
        finally:
            if watchdog is not None:
                watchdog.stop()

    def _count(self, batch: dict[str, np.ndarray]) -> None:
        for worker, seconds in zip(batch["worker"], batch["seconds"], strict=True):
            stats = self.stats.setdefault(str(worker), ActorStats())
            stats.rows += 1
            stats.seconds += float(seconds)

    def _dataset(self, embedder, rows: list[dict], batch_size: int):
        import logging

        import ray

        # The build shows its own progress bar; Ray Data's bars and logs would interleave.
        import ray.data  # configures its loggers on import: quieten them after

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False

        blocks = max(1, len(rows) // max(1, batch_size))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        if embedder.runtime != "onnx":  # numpy models: decoding and embedding in one task
            return dataset.map_batches(
                _embed_numpy,
                fn_kwargs={"model_id": embedder.id},
                batch_size=batch_size,
                num_cpus=self.decode_cpus,
            )
        shipped = _ship_export(embedder)
        decoded = dataset.map_batches(
            _decode,
            fn_kwargs={"settings": embedder.export.preprocess["image"]},
            batch_size=batch_size,
            num_cpus=self.decode_cpus,
            # A memory reservation of their own keeps the decoding tasks apart: Ray Data fuses
            # operators of equal resources, and the actors would decode and infer in turn.
            memory=DECODE_MEMORY,
        )
        return decoded.map_batches(
            OnnxActor,
            fn_constructor_kwargs={"shipped": shipped, "threads": max(1, round(self.actor_cpus))},
            batch_size=batch_size,
            num_cpus=self.actor_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=self._pool_size()),
        )

    def _pool_size(self) -> int:
        """Actors at most: one per `actor_cpus` the cluster has beyond one decoding task."""
        import ray

        if self.max_actors:
            return self.max_actors
        cpus = float(ray.cluster_resources().get("CPU", 1))
        return max(1, int((cpus - self.decode_cpus) // self.actor_cpus))


class _Watchdog:
    """Probes the cluster's GCS address every second during a build, from a thread.

    Once it has not answered for `GONE_AFTER_S`, the main thread is interrupted (it may be
    waiting on the lost cluster) and turns that into a `ClusterError`. When Ray keeps the main
    thread inside its own C++ wait, the watchdog prints `message` and ends the process itself
    (exit status 2): nothing has been committed, finished chunks are on disk, and the build
    lock is a file lock the system releases.
    """

    def __init__(self, gcs: tuple[str, int], message: str):
        self._gcs = gcs
        self._message = message
        self._down_since: float | None = None
        self._stop = threading.Event()
        self.handled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import _thread
        import sys

        while not self._stop.wait(1.0):
            if _answers(*self._gcs, 2.0):
                self._down_since = None
                continue
            self._down_since = self._down_since or time.monotonic()
            if self.gone():
                _thread.interrupt_main()
                if not self.handled.wait(5.0) and not self._stop.is_set():
                    print(f"error: {self._message}", file=sys.stderr, flush=True)
                    os._exit(2)
                return

    def gone(self) -> bool:
        return self._down_since is not None and time.monotonic() - self._down_since >= GONE_AFTER_S

    def stop(self) -> None:
        self._stop.set()


def _rows(catalogue, chunks: list[list[str]], remaining: list[int]) -> list[dict]:
    root = str(catalogue.root)
    return [
        {
            "chunk": number,
            "pos": position,
            "root": root,
            "path": str(catalogue.items.at[item_id, "path"]),
            "name": f"{item_id} ({catalogue.items.at[item_id, 'path']})",
        }
        for number in remaining
        for position, item_id in enumerate(chunks[number])
    ]


def _completed_chunks(batch, chunks, pending) -> Iterator:
    """Add a batch's rows to their chunks; yield each chunk whose rows are all in."""
    touched = set()
    for chunk, pos, vector, error in zip(
        batch["chunk"], batch["pos"], batch["vector"], batch["error"], strict=True
    ):
        number = int(chunk)
        pending.setdefault(number, {})[int(pos)] = (None if error else vector, str(error))
        touched.add(number)
    for number in sorted(touched):
        rows = pending[number]
        if len(rows) < len(chunks[number]):
            continue
        del pending[number]
        ids = chunks[number]
        ok = [p for p in range(len(ids)) if rows[p][0] is not None]
        failed = {ids[p]: rows[p][1] for p in range(len(ids)) if rows[p][0] is None}
        vectors = (
            np.stack([rows[p][0] for p in ok]).astype(np.float32)
            if ok
            else np.zeros((0, batch["vector"].shape[1]), np.float32)
        )
        yield number, vectors, failed, [ids[p] for p in ok]


def _ship_export(embedder) -> dict:
    """The export's files and identity, put once in the object store for every actor."""
    import ray

    folder = embedder.export.folder
    files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    return {
        "model_id": embedder.id,
        "weights_id": embedder.weights_id,
        "spec": embedder.spec,
        "files": [ray.put(files)],  # in a list: Ray Data passes it on as a reference
    }


# -- on the workers -------------------------------------------------------------------------


def _worker_name() -> str:
    import ray

    context = ray.get_runtime_context()
    return f"{context.get_node_id()[:8]}/{os.getpid()}"


def _open_image(root: str, relative: str, name: str):
    """The local engine's checks: inside the image folder, readable, at most 64 megapixels."""
    from embeddings.catalogue.base import safe_relative_path
    from embeddings.images import open_rgb

    folder = Path(root)
    return open_rgb(folder / safe_relative_path(relative, folder), name=name)


def _prepare_rows(batch: dict, prepare) -> tuple[list, list[str]]:
    """Each row's prepared image (None when it failed) and its error ('' when it did not)."""
    from embeddings.errors import EmbeddingsError, ImageError

    prepared, errors = [], []
    for root, relative, name in zip(batch["root"], batch["path"], batch["name"], strict=True):
        try:
            prepared.append(prepare(_open_image(str(root), str(relative), str(name))))
            errors.append("")
        except (ImageError, EmbeddingsError) as exc:
            prepared.append(None)
            errors.append(str(exc))
    return prepared, errors


def _filled(values: list, shape: tuple[int, ...]) -> np.ndarray:
    """Rows stacked, a zero row standing for each None (a failed image)."""
    out = np.zeros((len(values), *shape), dtype=np.float32)
    for row, value in enumerate(values):
        if value is not None:
            out[row] = value
    return out


def _decode(batch: dict, *, settings: dict) -> dict:
    """Decoding task of a neural model: images -> the export's preprocessed pixels."""
    from PIL import Image

    from embeddings.models.preprocess import image_recipe

    prepare = image_recipe(settings)
    prepared, errors = _prepare_rows(batch, prepare)
    shape = prepare(Image.new("RGB", (8, 8))).shape  # the recipe's fixed output shape
    return {
        "chunk": batch["chunk"],
        "pos": batch["pos"],
        "error": np.array(errors, dtype=object),
        "pixels": _filled(prepared, shape),
    }


def _embed_numpy(batch: dict, *, model_id: str) -> dict:
    """Decoding and embedding task of a numpy model (`pixels`, `colour`)."""
    from embeddings.models import load_model

    embedder = load_model(model_id)
    prepared, errors = _prepare_rows(batch, embedder.prepare)
    ok = [value for value in prepared if value is not None]
    started = time.perf_counter()
    vectors = embedder.embed_prepared(ok) if ok else np.zeros((0, embedder.dim), np.float32)
    seconds = time.perf_counter() - started
    it = iter(vectors)
    rows = [next(it) if value is not None else None for value in prepared]
    return _output(batch, rows, errors, embedder.dim, seconds)


def _output(batch: dict, vectors: list, errors: list[str], dim: int, seconds: float) -> dict:
    rows = len(errors)
    return {
        "chunk": batch["chunk"],
        "pos": batch["pos"],
        "error": np.array(errors, dtype=object),
        "vector": _filled(vectors, (dim,)),
        "worker": np.array([_worker_name()] * rows, dtype=object),
        "seconds": np.full(rows, seconds / max(1, rows)),
    }


class OnnxActor:
    """One ONNX Runtime session over the shipped export, checked against its manifest."""

    def __init__(self, shipped: dict, threads: int):
        import ray

        from embeddings.models.onnx_cache import export_dir, open_export
        from embeddings.models.onnx_embedders import embedder_for_export
        from embeddings.models.onnx_session import THREADS_ENV

        os.environ[THREADS_ENV] = str(threads)
        files = ray.get(shipped["files"][0])
        home = Path(tempfile.mkdtemp(prefix="embeddings-export-"))
        folder = export_dir(shipped["model_id"], shipped["weights_id"], home)
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / Path(name).name).write_bytes(data)
        export = open_export(folder, shipped["model_id"], shipped["weights_id"])
        self.embedder = embedder_for_export(shipped["spec"], export)
        self.embedder.session.session  # noqa: B018 - load it now, while the files exist
        import shutil

        shutil.rmtree(home, ignore_errors=True)

    def __call__(self, batch: dict) -> dict:
        errors = [str(e) for e in batch["error"]]
        ok = [row for row, error in enumerate(errors) if not error]
        started = time.perf_counter()
        embedded = (
            self.embedder.embed_prepared(list(batch["pixels"][ok]))
            if ok
            else np.zeros((0, self.embedder.dim), np.float32)
        )
        seconds = time.perf_counter() - started
        vectors: list = [None] * len(errors)
        for row, vector in zip(ok, embedded, strict=True):
            vectors[row] = vector
        return _output(batch, vectors, errors, self.embedder.dim, seconds)

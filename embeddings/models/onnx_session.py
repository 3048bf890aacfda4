"""One ONNX Runtime session per model file: created on first use, CPU only, threads set once.

`OnnxSession.run` may be called from several threads: ONNX Runtime's `InferenceSession.run` is
thread-safe, and the session itself is created once under a lock. (The app still serialises
calls per encoder, `app_support.resources.LockedEncoder`, so one query's batch never waits
behind another's on 2 cores.)

Threads: `EMBEDDINGS_ONNX_THREADS`, else one intra-op thread per available core. Idle threads
sleep instead of spinning (`session.intra_op.allow_spinning=0`), so the build's decoding threads
get the cores between batches (bench/bench_build.py measured both).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from embeddings.errors import ModelLoadError

THREADS_ENV = "EMBEDDINGS_ONNX_THREADS"
SPINNING_ENV = "EMBEDDINGS_ONNX_SPINNING"


def default_threads() -> int:
    """`$EMBEDDINGS_ONNX_THREADS`, else the cores this process may run on."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxSession:
    """An `onnxruntime.InferenceSession` over `path`, made on the first `run`."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, hint: str = ""):
        self.path = Path(path)
        self.threads = threads or default_threads()
        self._hint = hint  # what to do when the file cannot be loaded
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._create()
        return self._session

    def _create(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spinning = os.environ.get(SPINNING_ENV, "0") == "1"
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        try:
            return ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(
                f"ONNX Runtime could not load {self.path} ({type(exc).__name__}: "
                f"{str(exc)[:300]}){'; ' + self._hint if self._hint else ''}"
            ) from exc

    def input_names(self) -> list[str]:
        return [node.name for node in self.session.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The first output for `feeds`."""
        return self.session.run(None, dict(feeds))[0]

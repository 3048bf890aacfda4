"""Helpers of the Ray engine tests: builds through the CLI, and comparing two builds' indexes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.harness.paths import REPO
from tests.harness.ray_cluster import node_env

MODELS = "pixels,efficientnet-lite0"


def build_args(source: Path, out: Path, *extra: str, batch: int = 8) -> list[str]:
    return [
        sys.executable, "-m", "embeddings", "build", "--source", str(source), "--out", str(out),
        "--models", MODELS, "--batch-size", str(batch), "--no-bridge", *extra,
    ]  # fmt: skip


def driver_env(**extra: str) -> dict[str, str]:
    """A client of the test cluster: its loopback settings, this repository on the path."""
    return {**node_env(), "PYTHONPATH": str(REPO), **extra}


def run_build(source: Path, out: Path, *extra: str, env=None, timeout=600):
    return subprocess.run(
        build_args(source, out, *extra),
        cwd=REPO,
        env=env or driver_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_build(source: Path, out: Path, *extra: str, log: Path, pause_at: str) -> subprocess.Popen:
    """The build in the background, paused after `pause_at`'s first chunk file (see
    `paused_build`); its gate folder is `log`'s folder / "gate"."""
    handle = open(log, "w")  # noqa: SIM115 - closed with the process by the caller's wait
    command = build_args(source, out, *extra)
    command[1:3] = ["-m", "tests.harness.paused_build", str(gate_of(log)), pause_at]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=driver_env(),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def gate_of(log: Path) -> Path:
    return log.parent / "gate"


def wait_for_pause(log: Path, process, timeout=300) -> Path:
    """Until the build started by `start_build` has saved its first chunk; that chunk's path."""
    paused = gate_of(log) / "paused"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if paused.exists():
            return Path(paused.read_text())
        if process.poll() is not None:
            ended = log.read_text()[-3000:]
            raise AssertionError(f"the build ended before its first chunk: {ended}")
        time.sleep(0.05)
    raise AssertionError(f"no chunk saved after {timeout} s: " + log.read_text()[-3000:])


def resume(log: Path) -> None:
    """Let the paused build go on."""
    (gate_of(log) / "go").write_text("")


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def add_bad_images(folder: Path) -> None:
    """An unreadable file and an image over the 64-megapixel cap, for the checks on workers."""
    (folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.new("1", (8001, 8001)).save(folder / "blue" / "huge.png")


def vectors_of(out: Path, model_id: str) -> tuple[list[str], np.ndarray]:
    from embeddings.index.store import load_vectors

    return load_vectors(out / "models" / model_id)


def failed_of(out: Path, model_id: str) -> dict[str, str]:
    import json

    manifest = json.loads((out / "models" / model_id / "manifest.json").read_text())
    return {entry["id"]: entry["reason"] for entry in manifest["failed"]}


def top_k(out: Path, model_id: str, queries: np.ndarray, k: int = 5):
    """(scores, ids) of the committed index's own search for each query vector."""
    from embeddings.catalogue import Catalogue
    from embeddings.index.store import load_model_index

    catalogue = Catalogue.open(out)
    index = load_model_index(
        out / "models" / model_id,
        catalogue_fingerprint=catalogue.fingerprint,
        model_id=model_id,
    )
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, [[index.ids[r] for r in row] for row in rows]


def assert_same_index(local: Path, ray: Path, model_id: str, k: int = 5) -> None:
    """Same ids in the same order, each row's cosine >= 0.99999, the same top-k (ties aside)."""
    local_ids, local_vectors = vectors_of(local, model_id)
    ray_ids, ray_vectors = vectors_of(ray, model_id)
    assert ray_ids == local_ids
    a, b = local_vectors.astype(np.float64), ray_vectors.astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.99999, f"{model_id}: lowest row cosine {cosine.min():.7f}"
    _, local_top = top_k(local, model_id, local_vectors, k)
    _, ray_top = top_k(ray, model_id, local_vectors, k)
    row_of = {item_id: row for row, item_id in enumerate(local_ids)}
    for query, want, got in zip(a, local_top, ray_top, strict=True):
        for mine, theirs in zip(want, got, strict=True):
            if mine != theirs:  # only a tie may swap two results
                gap = abs(a[row_of[mine]] @ query - a[row_of[theirs]] @ query)
                assert gap < 1e-5, f"{model_id}: top-{k} {want} != {got}"

"""A real two-node Ray cluster on 127.0.0.1 for the tests: a head and a worker, each its own
`ray start --block` process, stopped by process id (never `ray stop`, which ends every Ray
process on the machine by name).

    cluster = RayCluster(tmp_path).start()      # head + one worker node, 1 CPU each
    cluster.address                             # "127.0.0.1:<port>"
    cluster.kill_worker_raylet()                # a worker node dies (its raylet, by pid)
    cluster.stop()

Every node runs on `--node-ip-address=127.0.0.1` with `RAY_AUTH_MODE=disabled` (a local test
cluster; token authentication stays on anywhere else), so every port it opens listens on
127.0.0.1 only; the head and the clients with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the worker
nodes through tests/harness/ray_node.py (`node_env` says why). The nodes start in a folder of
their own, with no PYTHONPATH, so the workers import the `embeddings` package only from what
the job ships (its runtime environment).

`ray_cluster` is the fixture of the tests that share one cluster (a module imports it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120.0
START_ATTEMPTS = 3
#: `ray start` for a joining node that keeps 127.0.0.1 (see that file).
JOIN = str(Path(__file__).with_name("ray_node.py"))


class ClusterUnavailable(RuntimeError):
    """The test cluster could not be started here (the message says why)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_env(*, joining: bool = False) -> dict[str, str]:
    """The environment of a node (`joining`: a worker node) or of a client of this cluster.

    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` keeps a head and its clients on the loopback address;
    `ray start --address` refuses to join with it (ray 2.60), so a worker node goes without it
    and keeps 127.0.0.1 through tests/harness/ray_node.py.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    if not joining:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


class RayCluster:
    """A head node and `workers` worker nodes started as separate process groups."""

    def __init__(
        self,
        folder: Path | None = None,
        *,
        port: int | None = None,
        cpus: int = 1,
        object_store_mb: int = 100,
    ):
        # A short path: Ray's socket paths under it must stay within the 107-byte Unix limit.
        self.folder = Path(folder or tempfile.mkdtemp(prefix="rayt-", dir="/tmp"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.cpus = cpus
        self.object_store_mb = object_store_mb
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        # Every Ray process these nodes started (for the cleanup).
        self._seen: dict[int, psutil.Process] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start_node(self, name: str, args: list[str], *, joining: bool = False):
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - kept for the node's life
        start = [sys.executable, JOIN, "start"] if joining else [RAY, "start"]
        command = [
            *start,
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 2**20}",
            "--disable-usage-stats",
            # Every port of its own (Ray's defaults are fixed numbers two nodes would share).
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            *args,
        ]
        return subprocess.Popen(
            command,
            cwd=self.folder,
            env=node_env(joining=joining),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start(self, workers: int = 1) -> RayCluster:
        """Start the head, then `workers` worker nodes; wait until every node is alive."""
        for attempt in range(START_ATTEMPTS):
            self.head = self._start_node(
                "head",
                [
                    "--head",
                    f"--port={self.port}",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                    f"--ray-client-server-port={free_port()}",
                    f"--temp-dir={self.folder / 'ray'}",
                ],
            )
            try:
                self._wait_until_started("head", self.head)
                break
            except ClusterUnavailable:
                self._kill_node(self.head)
                if attempt == START_ATTEMPTS - 1:
                    raise
        for _ in range(workers):
            self.add_worker()
        return self

    def add_worker(self) -> subprocess.Popen:
        """Start one more worker node; tried again when it gives up starting (on a loaded
        machine a raylet can miss Ray's fixed 30-second registration wait)."""
        for attempt in range(START_ATTEMPTS):
            name = f"worker{len(self.workers)}"
            worker = self._start_node(name, [f"--address={self.address}"], joining=True)
            self.workers.append(worker)
            try:
                self._wait_until_started(name, worker)
                return worker
            except ClusterUnavailable:
                self._kill_node(worker)
                if attempt == START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _kill_node(self, node: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)

    def _wait_until_started(self, name: str, node: subprocess.Popen) -> None:
        """Until the node's log says "Ray runtime started" (printed once it has registered)."""
        log = self.folder / f"{name}.log"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._remember_processes()
            if node.poll() is not None:
                raise ClusterUnavailable(f"the Ray node {name} exited; see {log}")
            if "Ray runtime started" in log.read_text(errors="replace"):
                self._remember_processes()
                return
            time.sleep(0.2)
        raise ClusterUnavailable(
            f"Ray node {name} not started after {START_TIMEOUT_S:.0f} s; see {log}"
        )

    def _remember_processes(self) -> None:
        for node in [self.head, *self.workers]:
            if node is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(node.pid).children(recursive=True):
                    self._seen.setdefault(child.pid, child)

    def raylet_of(self, node: subprocess.Popen) -> psutil.Process:
        for child in psutil.Process(node.pid).children(recursive=True):
            if child.name() == "raylet":
                return child
        raise RuntimeError(f"no raylet under the node process {node.pid}")

    def kill_worker_raylet(self, index: int = 0) -> int:
        """SIGKILL the raylet of worker node `index` (the node is lost); returns its pid."""
        self._remember_processes()
        raylet = self.raylet_of(self.workers[index])
        raylet.kill()
        return raylet.pid

    def stop(self) -> None:
        """Kill every node's process group, then any Ray process these nodes started."""
        self._remember_processes()
        for node in [*self.workers, self.head]:  # no graceful drain: nothing here is kept
            if node is not None:
                self._kill_node(node)
        self._kill_survivors()
        self.head, self.workers = None, []

    def _kill_survivors(self) -> None:
        """Processes started by these nodes that left their group (Ray daemonises a few)."""
        self._seen.update(self._started_here())
        survivors = []
        for process in self._seen.values():  # is_running() also checks the start time
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
                    survivors.append(process)
        psutil.wait_procs(survivors, timeout=10)

    def _started_here(self) -> dict[int, psutil.Process]:
        """Processes whose command line names this cluster's folder (its nodes' sessions)."""
        found = {}
        for process in psutil.process_iter(["cmdline"]):
            if process.pid != os.getpid() and any(
                str(self.folder) in part for part in process.info["cmdline"] or []
            ):
                found[process.pid] = process
        return found

    def survivors(self) -> list[int]:
        """Pids of processes these nodes started that still run (empty after `stop`)."""
        alive = []
        for process in {**self._seen, **self._started_here()}.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process.pid)
        return alive


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a worker node for a test module; fails in CI (skips elsewhere) when Ray
    cannot start here, saying why."""
    cluster = RayCluster()
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        cluster.stop()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the Ray test cluster cannot start in CI: {exc}")
        pytest.skip(f"no Ray test cluster here: {exc}")
    yield cluster
    cluster.stop()
    assert not cluster.survivors(), "Ray processes of the test cluster outlived it"
    shutil.rmtree(cluster.folder, ignore_errors=True)

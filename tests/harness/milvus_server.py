"""A real Milvus standalone server for the tests and the benchmarks.

The PyPI package `milvus` (a test and benchmark dependency, in requirements-dev.txt; never a
runtime one) ships the Milvus standalone server: the Go/C++ engine and the gRPC API of a cluster,
with embedded etcd and local storage. `start_server` runs one in a folder of its own, on ports
the kernel reports free (never the default 19530: other servers may run on the machine), waits
until it answers a gRPC call on 127.0.0.1, and returns a handle that stops it. Milvus itself
listens on every interface (its configuration has no bind address): run it where its ports are
not reachable from outside, as on a CI runner or a developer's machine.

    python -m tests.harness.milvus_server /tmp/milvus-dev    # a server by hand; prints its URI

The test session starts one server (`milvus_server_uri` in tests/conftest.py) and
`bench.bench_scale` one per engine run.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 180.0
START_ATTEMPTS = 3


class ServerUnavailable(RuntimeError):
    """The server could not be started here (the message says why)."""


class ServerExited(ServerUnavailable):
    """The server process exited while starting."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (chosen by the kernel)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class MilvusServerProcess:
    """A running Milvus standalone server: its gRPC `uri`, folder and process."""

    uri: str
    base_dir: Path
    server: object = field(repr=False)  # milvus.MilvusServer

    @property
    def pid(self) -> int | None:
        proc = self.server.server_proc
        return proc.pid if proc is not None else None

    def rss_mib(self) -> float:
        """Resident memory of the server's process and its children, in MiB."""
        import psutil

        if self.pid is None:
            return 0.0
        root = psutil.Process(self.pid)
        processes = [root, *root.children(recursive=True)]
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):  # it exited meanwhile
                total += process.memory_info().rss
        return total / 2**20

    def log_tail(self, lines: int = 15) -> str:
        return _log_tail(self.base_dir, lines)

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a second) and remove its folder."""
        self.server.stop()
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_server(base_dir: Path, *, timeout_s: float = START_TIMEOUT_S) -> MilvusServerProcess:
    """Start a Milvus standalone server with its data, logs and binaries under `base_dir`.

    Raises `ServerUnavailable` with the reason (the package is missing, the process exited, or
    it did not answer within `timeout_s`), after stopping what was started.
    """
    try:
        from milvus import MilvusServer, MilvusServerConfig
    except ImportError as exc:
        raise ServerUnavailable(
            f"the `milvus` package is not installed ({exc}): pip install -r requirements-dev.txt"
        ) from exc
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(START_ATTEMPTS):
        # A port taken between choosing it and binding it fails the start (or the process):
        # choose new ports and start again.
        last = attempt == START_ATTEMPTS - 1
        server = _configured_server(MilvusServer, MilvusServerConfig, base_dir)
        try:
            server.start()
        except Exception as exc:
            server.stop()
            if last:
                raise ServerUnavailable(f"the Milvus server did not start: {exc}") from exc
            continue
        running = MilvusServerProcess(f"http://127.0.0.1:{server.listen_port}", base_dir, server)
        try:
            _wait_until_serving(running, timeout_s)
            return running
        except ServerExited:
            running.stop(remove=False)
            if last:
                raise
        except BaseException:
            running.stop(remove=False)
            raise
    raise AssertionError("unreachable")


def _configured_server(server_class: type, config_class: type, base_dir: Path):
    """A `milvus.MilvusServer` (not started) on ports the kernel picked, in `base_dir`."""
    config = _isolated_config(config_class)()
    # Every listening port (proxy, coordinators, nodes, embedded etcd) on a port the kernel
    # picked, so two servers on one machine never meet.
    for key in list(config.configurable_items):
        if key.endswith("_port"):
            config.configs[key] = free_port()
    server = server_class(config, wait_for_started=False)
    server.webservice_port = free_port()  # health and metrics (default 9091)
    server.set_base_dir(str(base_dir))
    return server


def _isolated_config(base: type) -> type:
    """`milvus.MilvusServerConfig` whose embedded etcd listens on free ports too.

    The package's template leaves the embedded etcd on its defaults (2379 for clients, 2380 for
    peers), so a second server on the machine dies at start-up ("bind: address already in
    use"). Milvus reads an etcd configuration file from `etcd.config.path`; the template has no
    such key, so it is added to the written milvus.yaml.
    """

    class IsolatedConfig(base):
        def write_config(self):
            super().write_config()
            configs = Path(self.base_data_dir) / "configs"
            client, peer = (
                f"http://127.0.0.1:{self.get('etcd_port')}",
                f"http://127.0.0.1:{free_port()}",
            )
            (configs / "etcd.yaml").write_text(
                "name: milvus\n"
                f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
                f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                f"initial-cluster: milvus={peer}\n"
            )
            milvus_yaml = configs / "milvus.yaml"
            text = milvus_yaml.read_text()
            etcd_path = f"etcd:\n  config:\n    path: {configs / 'etcd.yaml'}\n"
            if text.count("\netcd:\n") != 1:
                raise ServerUnavailable(f"{milvus_yaml}: not the expected template (one etcd:)")
            milvus_yaml.write_text(text.replace("\netcd:\n", "\n" + etcd_path, 1))

    return IsolatedConfig


def _wait_until_serving(running: MilvusServerProcess, timeout_s: float) -> None:
    """Poll until a gRPC call succeeds (not a fixed sleep); fail with the log's last lines."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        proc = running.server.server_proc
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise ServerExited(
                f"the Milvus server exited at start-up (code {code}); its log ends:\n"
                f"{running.log_tail()}"
            )
        try:
            client = MilvusClient(uri=running.uri, timeout=5)
            client.list_collections()
            client.close()
            return
        except Exception as exc:  # not up yet: the proxy answers last
            last_error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        time.sleep(0.5)
    raise ServerUnavailable(
        f"the Milvus server at {running.uri} did not answer within {timeout_s:.0f} s "
        f"({last_error}); its log ends:\n{running.log_tail()}"
    )


def _log_tail(base_dir: Path, lines: int) -> str:
    logs = sorted((Path(base_dir) / "logs").glob("milvus-std*.log"))
    tails = []
    for log in logs:
        text = log.read_text(errors="replace").splitlines()[-lines:]
        if text:
            tails.append(f"[{log.name}]\n" + "\n".join(text))
    return "\n".join(tails) or "(no log written)"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="run a Milvus standalone server until Ctrl-C")
    parser.add_argument("base_dir", type=Path, help="its data, logs and binaries")
    args = parser.parse_args()
    started = time.perf_counter()
    handle = start_server(args.base_dir)
    print(f"Milvus at {handle.uri} (up in {time.perf_counter() - started:.1f} s); Ctrl-C stops it")
    try:
        while handle.server.server_proc is not None and handle.server.server_proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop(remove=False)

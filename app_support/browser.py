"""Driving the app in a real browser: start `streamlit run app.py`, open headless Chromium.

Used by the browser test (`tests/test_browser.py`) and the app benchmark (`bench/bench_app.py`).
The browser is Debian's `chromium` (Playwright's own browser download needs network): install it
with `apt-get install chromium`. Playwright and Chromium are imported/started only here.

Grids are `st.components.v2` components whose markup sits in shadow roots; Playwright's CSS
locators pierce open shadow roots, so `.grid[data-model=pixels] a.tile` finds the tiles.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("EMBEDDINGS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A `streamlit run app.py` process serving on `url`."""

    process: subprocess.Popen
    port: int
    log_path: Path
    started_at: float  # time.perf_counter() when the process was spawned

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_app(
    data_dir: str | os.PathLike,
    *,
    log_path: str | os.PathLike,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    python: str | os.PathLike | None = None,
    script: str | os.PathLike | None = None,
    options: Sequence[str] = (),
) -> AppServer:
    """Start the app on a free port with `EMBEDDINGS_DATA=data_dir`; return once it answers.

    `python`: the interpreter to serve with (default this one), e.g. a torch-free environment's;
    `script`: the entrypoint (default `app.py`; `deploy/streamlit_app.py` for Community Cloud);
    `options`: more `streamlit run` options, e.g. `("--secrets.files", path)`.
    """
    port = port or free_port()
    log_path = Path(log_path)
    environment = {
        **os.environ,
        "EMBEDDINGS_DATA": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    command = [
        str(python or sys.executable),
        "-m",
        "streamlit",
        "run",
        str(script or REPO / "app.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        *options,
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    server = AppServer(process, port, log_path, started)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"streamlit exited with code {process.returncode}:\n{server.log()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise TimeoutError(
        f"streamlit did not answer on port {port} within {timeout:.0f} s:\n{server.log()[-3000:]}"
    )


def launch_chromium(playwright):
    """Headless Debian Chromium through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def grid_selector(model: str) -> str:
    return f".grid[data-model='{model}']"


def read_grid(page, model: str) -> dict:
    """The query a model's grid shows and its tiles [(id, score)], read from the page.

    Both are read in one evaluation: read separately, a re-render in between (the next query's
    results arriving) could pair the new query with the previous query's tiles.
    """
    state = page.locator(grid_selector(model)).first.evaluate(
        "grid => ({query: grid.dataset.query === undefined ? null : grid.dataset.query,"
        " tiles: Array.from(grid.querySelectorAll('a.tile')).map("
        "a => [a.dataset.id, a.dataset.score === undefined ? null : Number(a.dataset.score)])})"
    )
    return {"query": state["query"], "tiles": [tuple(t) for t in state["tiles"]]}


def wait_for_results(
    page,
    models: list[str],
    *,
    query: str | None = None,
    not_query: str | None = None,
    timeout: float = 60.0,
) -> dict:
    """Wait until every model's grid shows scored tiles for `query` (if given; or for any query
    but `not_query`); return {model: {"query", "tiles": [(id, score)]}}."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            grids = {}
            for model in models:
                if page.locator(grid_selector(model)).count() == 0:
                    raise LookupError(f"no grid for {model} yet")
                state = read_grid(page, model)
                if (query is not None and state["query"] != query) or (
                    not_query is not None and state["query"] == not_query
                ):
                    raise LookupError(f"{model} still shows {state['query']!r}")
                if not state["tiles"] or any(score is None for _, score in state["tiles"]):
                    raise LookupError(f"{model} has no scored tiles yet")
                grids[model] = state
            return grids
        except Exception as exc:  # retried until the deadline: elements re-render under us
            last_error = exc
            time.sleep(0.05)
    raise TimeoutError(f"results did not appear within {timeout:.0f} s: {last_error}")

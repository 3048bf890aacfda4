"""The command line as a user runs it: `python -m embeddings ARGS` in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness.paths import REPO


def cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m embeddings ARGS` in a fresh interpreter from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "embeddings", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )

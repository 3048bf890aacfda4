"""Running the CLI in a fresh interpreter, as a user does (for tests that need no fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m embeddings ARGS` from the repository root; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "embeddings", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )

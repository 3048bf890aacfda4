"""`python -m tests.harness.paused_build GATE MODEL BUILD-ARGS...`: the real `embeddings build`,
which stops right after saving MODEL's first chunk file, writes that file's path into GATE/paused
and waits for GATE/go.

A build of a few dozen test images can finish between two polls of its work folder, so a test
that must act mid-build (kill the driver, stop the cluster, kill a worker node) waits for the
pause instead of racing the build. Nothing else changes: the chunk is written by the product's
own code before the pause, and the driver is a normal process the test may SIGKILL.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def pause_after_first_chunk(gate: Path, model_id: str) -> None:
    import embeddings.building.model as model

    write_chunk = model._write_chunk

    def write_then_pause(path, *args, **kwargs):
        write_chunk(path, *args, **kwargs)
        if Path(path).parent.parent.name == f"{model_id}.work" and not (gate / "paused").exists():
            (gate / "paused.tmp").write_text(str(path))
            (gate / "paused.tmp").replace(gate / "paused")  # whole, for the waiting test
            while not (gate / "go").exists():
                time.sleep(0.05)

    model._write_chunk = write_then_pause


def main(argv: list[str]) -> int:
    gate = Path(argv[0])
    gate.mkdir(parents=True, exist_ok=True)
    pause_after_first_chunk(gate, argv[1])
    from embeddings.cli import main as cli

    return cli(argv[2:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

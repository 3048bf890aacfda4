"""One progress event for every long piece of work, whichever front door shows it.

Builds, embedding, bridges, the evaluation, the KAGL figures, maps, near-duplicates, publishing
and opening bundles all report `Progress` events to one `ProgressFn`. The front doors each have
one adapter: tqdm bars in the CLI (`embeddings.cli.progress`), `st.progress` bars in the app
(`app_support.progress_ui`). The core never prints or draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One step of long work: `done` of `total` (0: a step with no count, just its message)."""

    stage: str  # e.g. "scan", "embed", "bridge", "layout", "search", "download", "save"
    model_id: str | None = None  # the model the work is for (None: the whole catalogue)
    done: int = 0
    total: int = 0
    message: str = ""
    unit: str = ""  # what is counted when it is not obvious: "bytes" (shown in MB)


ProgressFn = Callable[[Progress], None]


def no_progress(event: Progress) -> None:
    """The default callback: shows nothing."""

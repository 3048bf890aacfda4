"""The app's one progress adapter: `Progress` events as `st.progress` bars, in view."""

from __future__ import annotations

import streamlit as st

from embeddings.progress import Progress


class ProgressUI:
    """One bar per model (and one for work over the whole catalogue), created where the work
    starts; its text says the step, with the count when the step has one."""

    def __init__(self):
        self.bars: dict[str, object] = {}
        self.fractions: dict[str, float] = {}

    def __call__(self, event: Progress) -> None:
        key = event.model_id or ""
        prefix = f"{event.model_id}: " if event.model_id else ""
        if key not in self.bars:
            self.bars[key] = st.progress(0.0, text=f"{prefix}starting…")
        if event.total:
            self.fractions[key] = min(1.0, event.done / event.total)
        count = ""
        if event.total and event.unit == "bytes":
            count = f" ({event.done / 1e6:,.1f} of {event.total / 1e6:,.1f} MB)"
        elif event.total:
            count = f" ({event.done:,} / {event.total:,})"
        text = f"{prefix}{event.message or event.stage}{count}"
        self.bars[key].progress(self.fractions.get(key, 0.0), text=text)

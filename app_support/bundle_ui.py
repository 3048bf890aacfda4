"""Serving a published bundle (`EMBEDDINGS_BUNDLE`): opening it with progress, and what it holds.

The first session of a fresh server downloads and unpacks the bundle (a URL or an archive) with
a progress bar (or says that it waits while another server process does); a bundle that cannot
be opened (unreachable, partial, damaged, hostile: every failure is a `BundleError`) stops the
page with the reason, and the next session (or start) tries again. The Catalogue page shows what the
bundle holds, read-only.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_support import resources
from embeddings.bundle.open import BundleError, OpenedBundle

STEPS = {
    "waiting": "Another process is downloading or unpacking this bundle; waiting for it",
    "download": "Downloading the catalogue bundle",
    "checking": "Checking the bundle",
    "unpacking": "Unpacking and checking the bundle",
}


def serve_bundle_ui() -> OpenedBundle | None:
    """The served bundle (None when `EMBEDDINGS_BUNDLE` is not set), opened once per process."""
    if not resources.bundle_source():
        return None
    served = resources.opened_bundle()
    if served is not None:
        return served
    bar = st.progress(0.0, text="Opening the catalogue bundle…")

    def progress(step: str, done: int, total: int) -> None:
        fraction = min(1.0, done / total) if total else 0.0
        amount = (
            f" ({done / 1e6:,.1f} of {total / 1e6:,.1f} MB)" if step == "download" and total else ""
        )
        bar.progress(fraction, text=STEPS.get(step, step) + amount + "…")

    try:
        served = resources.open_served_bundle(progress)
    except BundleError as exc:
        bar.empty()
        st.error(f"The catalogue bundle could not be opened: {exc}")
        st.stop()
    bar.empty()
    return served


def bundle_parts(manifest: dict) -> pd.DataFrame:
    """The bundle's size per part, in MB, largest first."""
    parts = manifest.get("parts") or {}
    frame = pd.DataFrame({"part": list(parts), "MB": [size / 1e6 for size in parts.values()]})
    return frame.sort_values("MB", ascending=False)


def bundle_overview_ui(served: OpenedBundle) -> None:
    """What the served bundle is and holds (the Catalogue page of a read-only deployment)."""
    manifest = served.manifest
    st.markdown("**A published bundle, served read-only**")
    st.caption(
        f"From {served.source} · published {manifest.get('created_at', '?')} · "
        f"{len(manifest.get('files', [])):,} files checked against bundle.json"
    )
    parts = bundle_parts(manifest)
    if not parts.empty:
        st.bar_chart(
            parts, x="part", y="MB", horizontal=True, height=min(60 + 28 * len(parts), 400)
        )

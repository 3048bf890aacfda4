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
from app_support.progress_ui import ProgressUI
from embeddings.bundle.open import BundleError, OpenedBundle


def serve_bundle_ui() -> OpenedBundle | None:
    """The served bundle (None when `EMBEDDINGS_BUNDLE` is not set), opened once per process."""
    if not resources.bundle_source():
        return None
    served = resources.opened_bundle()
    if served is not None:
        return served
    area = st.empty()
    try:
        with area.container():
            served = resources.open_served_bundle(ProgressUI())
    except BundleError as exc:
        area.empty()
        st.error(f"The catalogue bundle could not be opened: {exc}")
        st.stop()
    area.empty()
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

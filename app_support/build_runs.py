"""Running a catalogue build from the app: the request, the run with progress bars in view, and
what each model's build did, said for people. The Catalogue page and its model picker share it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_support import resources
from app_support.progress_ui import ProgressUI
from embeddings.errors import EmbeddingsError, describe_os_error


def run_build_ui(request) -> object | None:
    """Run `build_catalogue` with progress on the page; the result, or None after an error."""
    from embeddings.building.catalogue import build_catalogue

    try:
        return build_catalogue(request, progress=ProgressUI())
    except EmbeddingsError as exc:
        st.error(str(exc))
    except OSError as exc:
        st.error(describe_os_error(exc, building=True))
    return None


def outcome_lines(result) -> tuple[list[str], dict[str, str]]:
    """What each model's build did, for people: (notes, {failed model: reason})."""
    notes, failed = [], {}
    for outcome in result.outcomes:
        if outcome.status == "failed":
            failed[outcome.model_id] = outcome.message
            continue
        report = outcome.report
        if report is None:
            notes.append(f"{outcome.model_id}: already up to date")
        else:
            notes.append(
                f"{outcome.model_id}: {report.count:,} vectors, {report.embedded:,} embedded at "
                f"{report.items_per_second:.0f} images/s, {report.reused:,} reused, "
                f"{len(report.failed)} unreadable"
            )
        if outcome.bridge:
            notes.append(f"{outcome.model_id}: text bridge: {outcome.bridge}")
    if result.updated_too:
        notes.append(f"The products changed, so {', '.join(result.updated_too)} were updated too.")
    if result.bridges_too:
        notes.append(
            f"The bridge settings changed, so the bridges of {', '.join(result.bridges_too)} "
            "were retrained to follow them."
        )
    if result.kagl:
        notes.append(f"Fashion leaderboard protocol: {result.kagl}")
    return notes, failed


def build_request(out: Path, **fields):
    """A `BuildRequest` with the app's local weights options."""
    from embeddings.building.catalogue import BuildRequest

    return BuildRequest(out=out, weights=resources.weights_options(), **fields)

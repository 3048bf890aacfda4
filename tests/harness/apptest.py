"""The app through `streamlit.testing.v1.AppTest` (no browser), and what its pages show."""

from __future__ import annotations

import json
import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.harness.paths import REPO

APP = str(REPO / "app.py")
TIMEOUT = 180


def make_app(data_dir: Path, monkeypatch, **params: str) -> AppTest:
    """An AppTest of app.py on `data_dir`, with `params` in its URL."""
    monkeypatch.setenv("EMBEDDINGS_DATA", str(data_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in params.items():
        at.query_params[name] = value
    return at


def grids(at: AppTest) -> dict[str, dict]:
    """Every tile grid on the page: {model id or 'browse': the data the component received}."""
    found = {}
    for element in at.get("bidi_component"):
        data = json.loads(element.proto.json)
        found[data["model"]] = data
    return found


def tile_ids(grid: dict) -> list[str]:
    return [tile["id"] for tile in grid["tiles"]]


def url(at: AppTest) -> dict[str, str]:
    """The app's URL parameters after the run (AppTest may hold them as lists)."""
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in dict(at.query_params).items()}


def messages(elements) -> str:
    """The elements' texts as a reader sees them (markdown escapes and bold markers removed)."""
    text = "\n".join(str(element.value) for element in elements)
    return re.sub(r"\\(.)", r"\1", text.replace("**", ""))

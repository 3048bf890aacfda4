"""The app's page files and Streamlit's legacy `pages/` folder.

Streamlit treats a folder named `pages` beside the entrypoint as a v1 multipage app (its
`PagesManager` looks for it when a session starts) until some session calls `st.navigation`;
until then a request for a page's URL runs that page file alone, without `app.py`. No option
turns the detection off, so the page files live in `app_pages/` and nothing patches Streamlit.
"""

from __future__ import annotations

import re

from tests.harness.paths import REPO

APP_SOURCES = [
    REPO / "app.py",
    *sorted((REPO / "app_support").glob("*.py")),
    *sorted((REPO / "app_pages").glob("*.py")),
]


def test_a_fresh_server_is_never_in_legacy_pages_mode(monkeypatch):
    """What a new server process decides before any `st.navigation` call: no `pages/` mode."""
    from streamlit.runtime.pages_manager import PagesManager

    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)  # as in a new process
    PagesManager(str(REPO / "app.py"))
    assert PagesManager.uses_pages_directory is False


def test_the_app_does_not_patch_streamlit_internals():
    for path in APP_SOURCES:
        source = path.read_text()
        assert "uses_pages_directory" not in source, path
        assert not re.search(r"streamlit\.runtime", source), path


def test_every_page_of_the_router_exists_and_is_thin():
    from_app = re.findall(r'"(app_pages/\w+\.py)"', (REPO / "app.py").read_text())
    assert sorted(from_app) == [
        "app_pages/catalogue.py",
        "app_pages/compare.py",
        "app_pages/duplicates.py",
        "app_pages/map.py",
        "app_pages/search.py",
    ]
    for page in from_app:
        assert len((REPO / page).read_text().splitlines()) <= 8, page
    links = set()
    for path in APP_SOURCES:
        links |= set(re.findall(r'(?:switch_page|page_link)\("([^"]+)"', path.read_text()))
    assert links and links <= set(from_app)

"""Visual product search you can see and compare: the Streamlit app's router.

Run it with `./run app` (or `streamlit run app.py`). The catalogues come from the data folder
(`data/`, or `$EMBEDDINGS_DATA`), or from a published bundle (`$EMBEDDINGS_BUNDLE`, served
read-only; `deploy/streamlit_app.py` is the same app as Streamlit Community Cloud starts it). This
file holds what every page shares: the navigation, the sidebar (catalogue, models, k, label
filter) and the URL that mirrors the view; the pages in `app_pages/` are thin and call
`app_support` and the `embeddings` core for everything. (Not `pages/`: Streamlit reads a folder
of that name as a legacy multipage app, running a page file without this router until a session
calls `st.navigation`; no setting turns that off.)
"""

from pathlib import Path

import streamlit as st

from app_support import bundle_ui, sidebar

HERE = Path(__file__).resolve().parent

st.set_page_config(
    page_title="Visual product search", page_icon=":material/image_search:", layout="wide"
)
# Less blank space above the page: the results are what matters.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.2rem; }</style>")

#: Page file -> (title, icon, what the page shows in the URL: see `sidebar.view_params`).
PAGES = {
    "app_pages/search.py": ("Search", ":material/search:", "search"),
    "app_pages/catalogue.py": ("Catalogue", ":material/inventory_2:", "catalogue"),
    "app_pages/compare.py": ("Compare", ":material/monitoring:", "compare"),
    "app_pages/map.py": ("Map", ":material/scatter_plot:", "map"),
    "app_pages/duplicates.py": ("Duplicates", ":material/content_copy:", "duplicates"),
}

page = st.navigation(
    [
        st.Page(
            HERE / path,
            title=title,
            icon=icon,
            url_path=None if kind == "search" else kind,
            default=kind == "search",
        )
        for path, (title, icon, kind) in PAGES.items()
    ]
)
bundle_ui.serve_bundle_ui()  # a published bundle ($EMBEDDINGS_BUNDLE), opened once per process
selection = sidebar.sidebar_ui()
for notice in sidebar.notices():
    st.warning(notice, icon=":material/link:")
if flash := st.session_state.pop("flash", None):
    st.success(flash)
if flash_warning := st.session_state.pop("flash_warning", None):
    st.warning(flash_warning)
# The view is settled here (widget callbacks ran before this script), so the URL is written
# before the page draws: the address bar never lags behind the results.
kind = next(kind for title, _, kind in PAGES.values() if title == page.title)
sidebar.write_url(sidebar.view_params(selection, kind))
with sidebar.routing(selection):
    page.run()

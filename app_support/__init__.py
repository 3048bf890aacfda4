"""The Streamlit app's helpers: everything the pages need beyond the `embeddings` core.

The core package never imports Streamlit; this package is the app's side of the line. Modules:

- `urlstate`: the view in the URL (`?catalog=..&models=..&k=..&item=..`), parsed and encoded;
- `resources`: what loads once per process (`st.cache_resource`): catalogues, indexes, models;
- `thumbs`: product thumbnails as data URIs (`st.cache_data`);
- `comparison`: agreement, overlap and label shares between models' results (pure functions);
- `tiles`: the clickable thumbnail grid (a `st.components.v2` component);
- `sidebar`: the shared sidebar (`sidebar_ui()` returns the `Selection`);
- `search_ui`, `catalogue_ui`, `compare_ui`: the pages' bodies, as small `*_ui()` helpers;
- `browser`: starting the app and a headless Chromium (the browser test and `bench/bench_app.py`).
"""

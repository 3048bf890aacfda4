"""The tests' toolbox: helpers that tests import (fixtures stay in tests/conftest.py).

- `paths`: the repository and the shared real dataset;
- `products`: the synthetic products (coloured shapes on white) and planted copies of them;
- `cli`: `python -m embeddings ...` in a fresh interpreter;
- `apptest`: the app through Streamlit's `AppTest` (no browser) and what its pages show;
- `chromium`: whether a real browser test can run here;
- `milvus_server`: a real Milvus standalone server on 127.0.0.1;
- `serving_env`: the torch-free serving environment made from deploy/requirements.txt;
- `tiny_models`: tiny random models saved on the spot in each backend's format;
- `fashion`: the shared fashion dataset's `styles.csv` layout.

Import them as `from tests.harness.products import draw_product` (the repository root is on
pytest's `pythonpath`, see pyproject.toml).
"""

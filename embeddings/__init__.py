"""Visual product search you can see and compare.

The core package: catalogues (dataset adapters), the model zoo, per-model index artefacts,
search and evaluation. It never imports Streamlit, and importing it does not import torch:
browsing and item queries work on the saved indexes alone; models load only when something
must be embedded.
"""

__version__ = "0.1.0"

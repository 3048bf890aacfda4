"""Compare: each model's precision@k by label over many queries, and its score distribution."""

from app_support.compare_ui import compare_page
from app_support.sidebar import selection

compare_page(selection())

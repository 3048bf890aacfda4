"""Compare: precision@k by label, score distributions, text search on the kagl protocol."""

from app_support.compare_ui import compare_page, leaderboard_ui
from app_support.sidebar import selection

chosen = selection()
compare_page(chosen)
leaderboard_ui(chosen)

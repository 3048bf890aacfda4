"""Compare: each model's precision@k by label over many queries, its score distribution, and
text search on the Marqo fashion leaderboard protocol."""

from app_support.compare_ui import compare_page, leaderboard_ui
from app_support.sidebar import selection

chosen = selection()
compare_page(chosen)
leaderboard_ui(chosen)

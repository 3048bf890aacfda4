"""A build that sets up the fashion leaderboard protocol by itself (`build --kagl`, and the app's
demo build): the query titles it picks, and the measurement after the commit.

The protocol's title queries must be titles no bridge trained on (`embeddings.quality.kagl`).
On the full set the recipe draws 2,000 of 31,131 distinct titles (6%). A demo catalogue is
small (3,000 products, about 2,900 distinct titles), so the build draws `TITLE_SHARE` (10%) of
its distinct titles, at most `DEFAULT_TITLE_QUERIES`, with seed 0: about 290 queries on the demo,
enough for recall figures that move by a few hundredths between seeds, while the bridges keep
90% of the titles to learn from (of which their own 10% are held out to score them). The titles
become the catalogue's bridge setting (`embeddings.bridge.settings`), so every later build keeps
them out too.
"""

from __future__ import annotations

from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError
from embeddings.progress import ProgressFn
from embeddings.quality.kagl import DEFAULT_TITLE_QUERIES, pick_title_queries

#: The share of a catalogue's distinct titles a build picks as the protocol's title queries.
TITLE_SHARE = 0.10
TITLE_SEED = 0


def title_query_count(distinct: int) -> int:
    """How many title queries a build picks among `distinct` titles (at least 1)."""
    return max(1, min(DEFAULT_TITLE_QUERIES, round(TITLE_SHARE * distinct)))


def pick_build_title_queries(catalogue: Catalogue) -> tuple[list[str] | None, str | None]:
    """(titles, where they came from) for the catalogue's setting; (None, None) when the
    catalogue has fewer than 10 distinct titles (nothing worth measuring; the build goes on)."""
    titles = catalogue.items["title"].astype(str).str.strip()
    distinct = titles[titles != ""].nunique()
    if distinct < 10:
        return None, None
    count = title_query_count(distinct)
    picked = pick_title_queries(catalogue, count, TITLE_SEED)
    origin = (
        f"picked by the build: {count:,} of {distinct:,} distinct titles "
        f"({TITLE_SHARE:.0%}, seed {TITLE_SEED})"
    )
    return picked, origin


def measure_after_build(catalogue: Catalogue, say: ProgressFn) -> str:
    """Measure the protocol on every model of the catalogue that answers text and save it for
    the Compare page; returns what was measured, or why nothing was (never raises for a model
    or a catalogue that cannot be measured)."""
    from embeddings.quality.kagl import evaluate_leaderboard, save_leaderboard
    from embeddings.search.searcher import text_capable_models

    fresh = Catalogue.open(catalogue.directory)  # as committed
    models = sorted(text_capable_models(fresh))
    if not models:
        return "not measured: no model of the catalogue answers text (no bridge, no text tower)"
    try:
        result = evaluate_leaderboard(
            fresh,
            models,
            progress=say,
        )
        save_leaderboard(fresh, result)
    except (EmbeddingsError, OSError) as exc:
        return f"not measured: {exc}"
    refused = result.manifest["refused_titles"]
    return (
        f"measured {', '.join(models)} on {result.manifest['title_queries']:,} title queries "
        f"and {len(result.manifest['label_fields'])} label fields (the Compare page shows them)"
        + (f"; no title figures for {', '.join(refused)}" if refused else "")
    )

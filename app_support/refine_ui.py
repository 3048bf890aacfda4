"""Refining a search on the Search page: words mixed into a product or an upload,
"more like this" / "less like this" on every result tile, and the liked and disliked products
listed above the grids, removable one by one.

The session's query (see `sidebar.current_query`) is the core's `Query`, refinements included:
`text` and `text_weight` mixed into a product or an upload, `liked` and `disliked` product ids;
every model composes it in its own space (`embeddings.search.query`). The URL carries them too
(`urlstate`: `text` with `item`, `mix`, `like`, `dislike`).
"""

from __future__ import annotations

import html

import streamlit as st

from app_support import resources, sidebar, thumbs
from embeddings.catalogue import Catalogue
from embeddings.search.query import DEFAULT_STEERING, DEFAULT_TEXT_WEIGHT, MAX_TEXT_CHARS, Query

SIDES = {"liked": "More like", "disliked": "Less like"}


def takes_words(query: Query) -> bool:
    """Whether answering `query` needs a model that takes text (a text query, or a mix)."""
    return query.text is not None


def steer_marks(query: Query) -> dict[str, str]:
    """{product id: "liked" | "disliked"} for the tiles."""
    marks = dict.fromkeys(query.liked, "liked")
    marks.update(dict.fromkeys(query.disliked, "disliked"))
    return marks


def query_label(query: Query) -> str:
    """What a grid shows results for (its `data-query`): the base, then any refinements."""
    if query.kind == "text":
        label = query.text or ""
    else:
        label = query.item or query.image_name or ""
        if query.text:
            label += f" & {query.text} @{query.text_weight:g}"
    if query.liked:
        label += " +[" + ",".join(query.liked) + "]"
    if query.disliked:
        label += " -[" + ",".join(query.disliked) + "]"
    return label


def tile_steered(item_id: str, side: str) -> None:
    """A tile's "more like this" / "less like this" button (a second press takes it back)."""
    sidebar.toggle_steering(item_id, side)


# -- words mixed in ----------------------------------------------------------------------------
def _words_submitted() -> None:
    words = (st.session_state.get("w_words") or "").strip()
    sidebar.set_words(words or None, st.session_state.get("w_weight"))


def _weight_changed() -> None:
    query = sidebar.current_query()
    if query is not None:
        sidebar.set_words(query.text, st.session_state.get("w_weight"))


def words_ui(query: Query) -> None:
    """For a product or an upload: words to mix in ("in red") and their share, 0 to 1."""
    if query.kind not in ("item", "image"):
        return
    words = query.text or ""
    weight = float(query.text_weight)
    st.session_state["w_words"] = words
    st.session_state["w_weight"] = weight
    box, share = st.columns([3, 2], vertical_alignment="bottom")
    with box, st.form("words_mix", border=False, enter_to_submit=True):
        field, go = st.columns([3, 1], vertical_alignment="bottom")
        field.text_input(
            "Add words to this query",
            key="w_words",
            max_chars=MAX_TEXT_CHARS,
            placeholder="e.g. in red",
            help="This product, but … : the words go through each model's text tower or text "
            "bridge and are mixed into the picture's vector. Empty the box to drop them.",
        )
        go.form_submit_button("Mix in", on_click=_words_submitted, width="stretch")
    share.slider(
        "Share of the words",
        0.0,
        1.0,
        step=0.05,
        key="w_weight",
        on_change=_weight_changed,
        disabled=not words,
        help=f"0: the picture alone; 1: the words alone. Default {DEFAULT_TEXT_WEIGHT:g}, "
        "measured on the fashion set (README, 'Refining a search').",
    )
    if words:
        st.caption(
            f"Mixed in: “{sidebar.escape_markdown(words)}” at {weight:.0%}; models that take no "
            "text are "
            "left out of a mix."
        )


# -- liked and disliked products --------------------------------------------------------------
_STEER_CSS = """
<style>
.steer-card { display: flex; gap: 6px; align-items: center; font-size: .8rem; }
.steer-card img { width: 36px; height: 48px; object-fit: contain; background: #fff;
  border-radius: 4px; flex: none; }
.steer-card span { overflow: hidden; display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow-wrap: anywhere; }
</style>
"""


def steer_card_html(image: str, title: str, side: str, item_id: str) -> str:
    """A liked or disliked product, small; product data escaped (shown as text)."""
    esc = html.escape
    return (
        f'{_STEER_CSS}<div class="steer-card" data-testid="steer-{esc(side)}" '
        f'data-id="{esc(item_id)}"><img src="{esc(image)}" alt=""><span>{esc(title)}</span></div>'
    )


def steering_bar_ui(cat: Catalogue, query: Query) -> None:
    """The products steering the query, above the grids, each with a button to remove it."""
    sides = {side: list(getattr(query, side)) for side in SIDES}
    if not any(sides.values()):
        return
    table = resources.products(cat)
    with st.container(border=True):
        head, clear = st.columns([5, 1], vertical_alignment="center")
        head.markdown(
            f"**Steered** · q′ = {DEFAULT_STEERING.base:g}·q + {DEFAULT_STEERING.liked:g}·mean("
            f"liked) − {DEFAULT_STEERING.disliked:g}·mean(disliked), in each model's own space"
        )
        clear.button("Clear all", key="steer_clear", on_click=sidebar.clear_steering)
        for side, ids in sides.items():
            if not ids:
                continue
            st.caption(f"{SIDES[side]} ({len(ids)})")
            columns = st.columns(min(6, max(3, len(ids))))
            for n, item_id in enumerate(ids):
                with columns[n % len(columns)]:
                    st.html(
                        steer_card_html(
                            thumbs.thumbnail(cat, item_id),
                            table.title(item_id) or item_id,
                            side,
                            item_id,
                        )
                    )
                    st.button(
                        "Remove",
                        key=f"unsteer_{side}_{item_id}",
                        icon=":material/close:",
                        on_click=sidebar.remove_steering,
                        args=(item_id,),
                        help=f"Stop steering by product {item_id}",
                    )

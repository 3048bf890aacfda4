"""The Search page: three ways to ask, the query on top, one column of results per model.

Ways in (each sets the session's query in a callback, before the page reruns):
- *Random product*, or a click on any product tile (the browse strip or a result): item query;
- the text box: text-to-image for every selected model that takes text;
- an image upload: image-to-image for every selected model, embedded on the fly.

Item queries use the saved indexes only (no model, no torch). Every model runs on its own, so
one model's failure (missing vector, weights that do not load) is shown in its column and the
others still answer.
"""

from __future__ import annotations

import html
import io
import random
import time
from dataclasses import dataclass, field
from urllib.parse import quote_plus

import numpy as np
import streamlit as st
from PIL import Image

from app_support import (
    comparison,
    duplicates_ui,
    refine_ui,
    resources,
    sidebar,
    thumbs,
    urlstate,
)
from app_support.sidebar import Selection, current_query, escape_markdown, set_item_query, set_query
from app_support.tiles import Tile, tile_grid
from embeddings.catalogue import Catalogue
from embeddings.errors import CatalogueChangedError, EmbeddingsError, ImageError, QueryError
from embeddings.images import open_rgb
from embeddings.index.fused import DEFAULT_METHOD, fused_parts, is_fused
from embeddings.search.query import Query
from embeddings.search.searcher import MAX_TEXT_CHARS, Hit, check_text

#: Uploads above this size are refused before decoding (the server's own limit is in config.toml).
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
#: An upload is kept (in the session only) at most this large; every model resizes to less.
UPLOAD_KEEP_SIDE = 1024
BROWSE_COUNT = 12


# -- the ways in -----------------------------------------------------------------------------
def random_product(
    cat: Catalogue, filters: dict[str, str] | None, rng: random.Random | None = None
) -> str | None:
    """A random product id (among those matching `filters`), or None when none matches."""
    allowed = cat.ids_matching(filters)
    pool = cat.items.index if allowed is None else sorted(allowed)
    if not len(pool):
        return None
    return str(pool[(rng or random).randrange(len(pool))])


def _random_clicked(cat: Catalogue, filters) -> None:
    item_id = random_product(cat, filters)
    if item_id is None:
        st.session_state["query_error"] = (
            "No product matches the label filter; change it in the sidebar."
        )
    else:
        set_item_query(item_id)


def _text_submitted() -> None:
    text = st.session_state.get("w_text", "")
    try:
        set_query(Query(text=check_text(text)))
    except QueryError as exc:
        st.session_state["query_error"] = str(exc)


def accept_upload(name: str, data: bytes) -> Query:
    """Check an uploaded file and make it a query; raises `ImageError` with a message for people."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(
            f"{name}: {len(data) / 1e6:.1f} MB is larger than the {MAX_UPLOAD_BYTES / 1e6:.0f} MB "
            "upload limit; upload a smaller image."
        )
    image = open_rgb(data, name=name)  # ImageError for anything that is not a readable image
    image.thumbnail((UPLOAD_KEEP_SIDE, UPLOAD_KEEP_SIDE), Image.Resampling.LANCZOS)
    return Query(image=image, image_name=name)


def _upload_changed() -> None:
    upload = st.session_state.get("w_upload")
    if upload is None:
        return
    try:
        set_query(accept_upload(upload.name, upload.getvalue()))
    except ImageError as exc:
        st.session_state["query_error"] = str(exc)


def query_bar_ui(selection: Selection) -> None:
    """Random product, the text box and the uploader; each sets the query in its callback."""
    cat = selection.catalogue
    random_col, text_col, upload_col = st.columns([1.1, 3.0, 2.0], vertical_alignment="bottom")
    random_col.button(
        "Random product",
        key="random",
        type="primary",
        width="stretch",
        icon=":material/casino:",
        on_click=_random_clicked,
        args=(cat, selection.filters),
        help="Search by a product picked at random (within the label filter, if any).",
    )
    with text_col, st.form("text_query", border=False, enter_to_submit=True):
        box, go = st.columns([3.6, 1], vertical_alignment="bottom")
        box.text_input(
            "Describe a product",
            key="w_text",
            max_chars=MAX_TEXT_CHARS,
            placeholder="e.g. red running shoes",
        )
        go.form_submit_button(
            "Search", on_click=_text_submitted, width="stretch", icon=":material/search:"
        )
    upload_col.file_uploader(
        "…or search by an image",
        type=UPLOAD_TYPES,
        key="w_upload",
        on_change=_upload_changed,
        help="JPEG, PNG, WebP, GIF, BMP or TIFF; "
        f"up to {MAX_UPLOAD_BYTES // 2**20} MB. Uploads stay in your session.",
    )
    capable = [m for m in selection.models if m in selection.text_models]
    if capable:
        text_col.caption(
            "Text is answered by "
            + ", ".join(
                f"{m} ({'bridge' if selection.text_models[m] == 'bridge' else 'native'})"
                for m in capable
            )
            + "."
        )
    else:
        others = ", ".join(selection.text_models) or "none in this catalogue"
        text_col.caption(f"None of the selected models takes text (models that can: {others}).")


# -- running a query ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """A query's results per model, with what failed and why."""

    models: list[str] = field(default_factory=list)  # the models that were asked
    results: dict[str, list[Hit]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    problem: str | None = None  # the query cannot be answered at all
    skipped: list[str] = field(default_factory=list)  # selected models that cannot take this query


def run_query(selection: Selection, query: Query) -> Outcome:
    """Answer `query` with every selected model that can take it, one model at a time."""
    cat = selection.catalogue
    outcome = Outcome()
    searcher = resources.searcher(cat)
    models = list(selection.models)
    if query.item is not None and query.item not in cat:
        outcome.problem = (
            f"There is no product with id “{query.item}” in catalogue “{cat.name}”. The link "
            "may come from another catalogue; press Random product or pick one below."
        )
        return outcome
    if query.kind == "text":
        try:
            check_text(query.text)
        except QueryError as exc:
            outcome.problem = str(exc)
            return outcome
    if refine_ui.takes_words(query):  # a text query, or words mixed into a picture
        outcome.skipped = [m for m in models if m not in selection.text_models]
        models = [m for m in models if m in selection.text_models]
        if not models:
            can = (
                ", ".join(f"{m} ({kind_})" for m, kind_ in selection.text_models.items())
                or "none yet"
            )
            outcome.problem = (
                f"None of the selected models takes text. Models that can in “{cat.name}”: {can}. "
                "Add one in the sidebar."
            )
            return outcome

    fold = duplicates_ui.fold_thresholds(cat)

    def ask(model_id):
        return searcher.search(query, [model_id], selection.k, filters=selection.filters, fold=fold)

    outcome.models = models
    for model_id in models:
        try:  # loaded once per process (the first text or upload query waits here), not timed
            _open_index(cat, model_id)
            for part in fused_parts(model_id):
                if refine_ui.takes_words(query):
                    resources.text_encoder(cat, part)
                if query.image is not None:
                    resources.embedder(part)
        except EmbeddingsError as exc:
            outcome.errors[model_id] = str(exc)
    for model_id in models:
        if model_id in outcome.errors:
            continue
        started = time.perf_counter()
        try:
            outcome.results[model_id] = ask(model_id)[model_id]
        except EmbeddingsError as exc:
            outcome.errors[model_id] = str(exc)
        outcome.seconds[model_id] = time.perf_counter() - started
    return outcome


def _open_index(cat: Catalogue, model_id: str):
    """The model's index; when a build committed a newer catalogue meanwhile, rerun the page
    (it then opens the new catalogue and its indexes together)."""
    try:
        return resources.index(cat, model_id)
    except CatalogueChangedError:
        st.rerun()


# -- showing it ---------------------------------------------------------------------------------
_CARD_CSS = """
<style>
.qcard { display: flex; gap: 16px; align-items: center; padding: 10px 14px; border-radius: 12px;
  border: 1px solid rgba(128,128,128,.28);
  background: var(--st-secondary-background-color, #f6f7f9); }
.qcard img { width: 84px; height: 112px; object-fit: contain; background: #fff;
  border-radius: 8px; flex: none; }
.qcard .qkind { font-size: .78rem; text-transform: uppercase; letter-spacing: .06em; opacity: .65; }
.qcard .qtitle { font-size: 1.15rem; font-weight: 600; margin: 2px 0 6px; overflow-wrap: anywhere; }
.qcard .qtext { font-size: 1.3rem; font-weight: 600; margin: 2px 0 4px; overflow-wrap: anywhere; }
.qcard .chips { display: flex; flex-wrap: wrap; gap: 6px; }
.qcard .chip { font-size: .78rem; padding: 1px 8px; border-radius: 999px;
  background: rgba(128,128,128,.14); }
.qcard .chip b { font-weight: 600; }
</style>
"""


def query_card_html(
    kind: str,
    *,
    title: str,
    subtitle: str,
    image: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """The query's card as HTML; every piece of product data is escaped (shown as text)."""
    esc = html.escape
    picture = f'<img src="{esc(image)}" alt="{esc(title)}">' if image else ""
    chips = "".join(
        f'<span class="chip">{esc(k)}: <b>{esc(v)}</b></span>'
        for k, v in (labels or {}).items()
        if v
    )
    title_class = "qtext" if kind == "text" else "qtitle"
    return (
        f'{_CARD_CSS}<div class="qcard" data-testid="query-card" data-kind="{esc(kind)}">'
        f"{picture}<div>"
        f'<div class="qkind">{esc(subtitle)}</div><div class="{title_class}">{esc(title)}</div>'
        f'<div class="chips">{chips}</div></div></div>'
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def query_labels(cat: Catalogue, query: Query) -> dict[str, str]:
    """An item query's non-empty labels ({} for text and uploads)."""
    if query.kind != "item":
        return {}
    return resources.products(cat).labels(query.item)


def query_card_ui(cat: Catalogue, query: Query) -> None:
    kind = query.kind
    if kind == "item":
        item_id = query.item
        known = item_id in cat
        title = resources.products(cat).title(item_id) or item_id
        st.html(
            query_card_html(
                "item",
                title=title,
                subtitle=f"Query · product {item_id}",
                image=thumbs.thumbnail(cat, item_id) if known else None,
                labels=query_labels(cat, query),
            )
        )
    elif kind == "text":
        st.html(query_card_html("text", title=f"“{query.text.strip()}”", subtitle="Query · text"))
    else:
        try:
            image = thumbs.image_data_uri(_png(query.image))
        except ImageError:
            image = thumbs.PLACEHOLDER
        st.html(
            query_card_html(
                "upload",
                title=query.image_name or "uploaded image",
                subtitle="Query · uploaded image",
                image=image,
            )
        )


def _tile_label(
    table: resources.ProductTable, item_id: str, field_name: str | None, query_value: str | None
):
    if not field_name or item_id not in table:
        return None, None
    value = table.get(item_id, field_name)
    return value or "—", (None if not query_value else value == query_value)


def _tooltip(table: resources.ProductTable, item_id: str) -> str:
    labels = " · ".join(f"{name}: {value}" for name, value in table.labels(item_id).items())
    return "\n".join(part for part in (table.title(item_id), labels, f"id {item_id}") if part)


def item_tiles(
    cat: Catalogue,
    hits: list[Hit] | list[str],
    *,
    base_params: dict[str, str],
    agreement: dict[str, int] | None = None,
    label_field: str | None = None,
    query_value: str | None = None,
    marks: dict[str, str] | None = None,
) -> list[Tile]:
    """Tiles for ranked hits (with scores) or plain ids (the browse strip); `marks`: products
    liked or disliked by the query ({id: "liked" | "disliked"})."""
    tiles = []
    base_href = urlstate.href(base_params)
    table = resources.products(cat)
    for rank, entry in enumerate(hits, start=1):
        item_id, score = (entry.id, entry.score) if isinstance(entry, Hit) else (entry, None)
        label, match = _tile_label(table, item_id, label_field, query_value)
        title = table.title(item_id)
        tiles.append(
            Tile(
                id=item_id,
                title=title or item_id,
                image=thumbs.thumbnail(cat, item_id),
                href=f"{base_href}&item={quote_plus(item_id)}"
                if base_params
                else urlstate.href({"item": item_id}),
                rank=rank if score is not None else None,
                score=None if score is None else round(float(score), 4),
                agree=(agreement or {}).get(item_id, 0),
                label=label,
                match=match,
                tooltip=_tooltip(table, item_id),
                similar=len(entry.folded) if isinstance(entry, Hit) else 0,
                steer=(marks or {}).get(item_id),
            )
        )
    return tiles


def _tile_clicked(item_id: str) -> None:
    set_item_query(item_id)


_AGREE_CSS = """
<style>
.agree-box { display: flex; flex-direction: column; gap: 6px; font-size: .85rem; }
.agree-row { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 2px 10px;
  align-items: center; }
.agree-row .pair { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.agree-row .count { font-weight: 600; font-variant-numeric: tabular-nums; }
.agree-row .bar { grid-column: 1 / 3; height: 5px; border-radius: 3px;
  background: rgba(128,128,128,.2); overflow: hidden; }
.agree-row .bar i { display: block; height: 100%; background: #d97706; }
</style>
"""


def agreement_html(pairs: list[comparison.Overlap]) -> str:
    """Pairwise overlap of the models' top-k lists as small bars (model ids escaped)."""
    rows = "".join(
        f'<div class="agree-row" data-pair="{html.escape(p.first)}|{html.escape(p.second)}">'
        f'<span class="pair">{html.escape(p.first)} &cap; {html.escape(p.second)}</span>'
        f'<span class="count">{p.shared} / {p.size}</span>'
        f'<span class="bar"><i style="width:{p.share * 100:.0f}%"></i></span></div>'
        for p in pairs
    )
    return f'{_AGREE_CSS}<div class="agree-box">{rows}</div>'


def comparison_ui(selection: Selection, outcome: Outcome, query_values: dict[str, str]) -> None:
    """Pairwise overlap of the models' top-k (amber outlines on shared tiles)."""
    answered = {m: outcome.results[m] for m in outcome.models if m in outcome.results}
    if len(answered) < 2:
        return
    st.markdown("**Agreement** · products in both top-k lists (amber outlines)")
    st.html(agreement_html(comparison.pairwise_overlap(answered)))


def label_table_ui(selection: Selection, outcome: Outcome, query_values: dict[str, str]) -> None:
    """For an item query: the share of each model's results with the query's label, every field."""
    answered = {m: outcome.results[m] for m in outcome.models if m in outcome.results}
    if not (query_values and answered):
        return
    table = comparison.label_share_table(
        answered,
        resources.products(selection.catalogue).get,
        query_values,
        selection.catalogue.label_fields,
    )
    if not table.empty:
        with st.expander(
            "Share of each model's results with the query's label, for every label field"
        ):
            st.dataframe(
                table,
                width="stretch",
                column_config={
                    model: st.column_config.ProgressColumn(
                        model, format="percent", min_value=0.0, max_value=1.0
                    )
                    for model in table.columns
                },
            )


def result_columns_ui(
    selection: Selection, outcome: Outcome, query: Query, query_values: dict[str, str]
) -> None:
    """One column per model, side by side: header, label share, and the top-k grid."""
    cat = selection.catalogue
    answered = {m: outcome.results[m] for m in outcome.models if m in outcome.results}
    agreement = comparison.agreement_counts(answered) if len(answered) > 1 else {}
    label_field = selection.label
    query_value = query_values.get(label_field) if label_field else None
    base = sidebar.view_params(selection, "search")
    for name in urlstate.QUERY_PARAMS:  # a tile's link is a new query: no refinements
        base.pop(name, None)
    current = query.item
    marks = refine_ui.steer_marks(query)
    columns = st.columns(max(1, len(outcome.models)), gap="medium", border=True)
    for column, model_id in zip(columns, outcome.models, strict=False):
        with column:
            words = refine_ui.takes_words(query)
            kind = selection.text_models.get(model_id) if words else None
            st.markdown(f"#### {escape_markdown(model_id)}")
            hits = outcome.results.get(model_id)
            note = (
                [f"text via {'its own text tower' if kind == 'native' else 'a text bridge'}"]
                if kind
                else []
            )
            if is_fused(model_id):
                note.append(f"fused ranking ({DEFAULT_METHOD}): scores are not cosines")
            if hits is not None:
                note.append(
                    f"{len(hits)} results in {outcome.seconds.get(model_id, 0) * 1000:.1f} ms"
                )
            st.caption(" · ".join(note) or " ")
            if model_id in outcome.errors:
                st.error(escape_markdown(outcome.errors[model_id]))
                continue
            if query_value and hits:
                share = comparison.label_share(
                    hits, resources.products(cat).get, label_field, query_value
                )
                st.badge(
                    escape_markdown(
                        f"{round(share * len(hits))} of {len(hits)} share "
                        f"{label_field} = {query_value}"
                    ),
                    icon=":material/check:",
                    color="green" if share >= 0.5 else "orange",
                )
            if hits is not None and len(hits) < selection.k:
                st.caption(
                    f"Only {len(hits)} products could be ranked (label filter or catalogue size)."
                )
            tile_grid(
                item_tiles(
                    cat,
                    hits or [],
                    base_params=base,
                    agreement=agreement,
                    label_field=label_field,
                    query_value=query_value,
                    marks=marks,
                ),
                key=f"grid_{model_id}",
                on_click=_tile_clicked,
                model=model_id,
                current=current,
                query=refine_ui.query_label(query),
                empty="No product matches.",
                on_steer=refine_ui.tile_steered,
            )


def label_choice_ui(selection: Selection, query_values: dict[str, str], kind: str) -> None:
    """The label field the tiles are marked on (in the URL as `label`)."""
    fields = selection.catalogue.label_fields
    if not fields:
        return
    st.session_state["w_label"] = selection.label if selection.label in fields else fields[0]
    verb = "Tick the results that share the query's" if kind == "item" else "Show each result's"
    st.selectbox(
        verb,
        fields,
        key="w_label",
        on_change=sidebar._copy,
        args=("w_label", "label"),
        format_func=lambda f: f"{f} ({query_values[f]})" if f in query_values else f,
    )


def browse_ui(selection: Selection, *, expanded: bool) -> None:
    """A strip of random products (within the label filter); a click searches by one."""
    cat = selection.catalogue
    allowed = cat.ids_matching(selection.filters)
    pool = (
        cat.items.index.to_numpy() if allowed is None else np.array(sorted(allowed), dtype=object)
    )
    with st.expander("Browse the catalogue: click any product to search by it", expanded=expanded):
        if st.button("Shuffle", key="shuffle", icon=":material/shuffle:"):
            st.session_state["browse_seed"] = st.session_state.get("browse_seed", 0) + 1
        seed = st.session_state.setdefault("browse_seed", 0)
        count = min(BROWSE_COUNT, len(pool))
        ids = (
            [str(i) for i in np.random.default_rng(seed).choice(pool, size=count, replace=False)]
            if count
            else []
        )
        base = sidebar.view_params(selection, "search")
        for name in urlstate.QUERY_PARAMS:
            base.pop(name, None)
        item = (current_query() or Query()).item
        tile_grid(
            item_tiles(cat, ids, base_params=base, label_field=selection.label),
            key="grid_browse",
            on_click=_tile_clicked,
            model="browse",
            query=item or "",
            current=item,
            empty="No product matches the label filter.",
        )


def no_catalogue_ui() -> None:
    st.title("Visual product search")
    st.info(
        "There is no catalogue in the data folder yet. The **Catalogue** page builds the demo "
        "catalogue (a few thousand fashion products) or one from a folder of images, "
        "in a few minutes."
    )
    st.page_link(
        "app_pages/catalogue.py", label="Set up a catalogue", icon=":material/inventory_2:"
    )


def search_page(selection: Selection) -> None:
    """The whole Search page."""
    cat = selection.catalogue
    if cat is None:
        if selection.error:
            st.error(selection.error)
        else:
            no_catalogue_ui()
        return
    if not selection.built:
        st.warning(f"No model has an index in “{cat.name}” yet.")
        st.page_link(
            "app_pages/catalogue.py",
            label="Build one on the Catalogue page",
            icon=":material/inventory_2:",
        )
        return
    query_bar_ui(selection)
    if st.session_state.get("query_error"):
        # Messages quote what people typed, uploaded or linked (file names, ids): shown as text.
        st.error(escape_markdown(st.session_state["query_error"]))
    query = current_query()
    if query is None:
        st.markdown(
            "Pick a product below, press **Random product**, describe what you want, or upload a "
            "photo: every selected model answers side by side, so you can see how they differ."
        )
        browse_ui(selection, expanded=True)
        return
    if not selection.models:
        st.warning("Select at least one model in the sidebar.")
        return
    outcome = run_query(selection, query)
    if outcome.problem:  # an unknown product, an empty text...: say so, keep the page usable
        st.error(escape_markdown(outcome.problem))
        browse_ui(selection, expanded=True)
        return
    values = query_labels(cat, query)
    card_col, side_col = st.columns([3, 2], gap="large", vertical_alignment="top")
    with card_col:
        query_card_ui(cat, query)
        if query.kind == "image":
            st.caption(
                ":material/attach_file: Uploaded images stay in this browser session: the address "
                "bar cannot carry them, so a shared link will not reproduce this search."
            )
        else:
            st.caption(
                ":material/link: The address bar holds this view: copy it to share these results."
            )
        refine_ui.words_ui(query)
    with side_col:
        label_choice_ui(selection, values, query.kind)
        duplicates_ui.hide_duplicates_ui()
        comparison_ui(selection, outcome, values)
    if outcome.skipped:
        st.info(
            f"Not shown: {', '.join(outcome.skipped)} (no text tower and no text bridge in "
            "this catalogue)."
        )
    refine_ui.steering_bar_ui(cat, query)
    result_columns_ui(selection, outcome, query, values)
    label_table_ui(selection, outcome, values)
    browse_ui(selection, expanded=False)

"""The Map page: every selected model's 2-D map of the catalogue, side by side.

- The maps are the catalogue's own (`embeddings.derived.maps`): computed by `python -m embeddings
map`,
  or here with a progress bar (not in a read-only deployment). A map whose index was rebuilt is
  stale and is not drawn.
- One Vega-Lite chart (`st.altair_chart`) holds a view per model over ONE table: a product is one
  row with its coordinates on every model's map. So a product under the pointer is ringed on every
  map, and the session's query product (from Search) is marked on every map.
- Hovering shows the product's title and labels and, for a declared sample of products, its
  thumbnail (Vega's tooltip shows a field named `image` as a picture). Thumbnails of every product
  would weigh about 2.5 KB each (110 MB for 44,441 products); `HOVER_THUMBS` of them are sent.
- A click on a point opens that product on Search; dragging a box lists the products inside it
  as tiles, and a click on a tile opens that one.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_support import resources, thumbs
from app_support.progress_ui import ProgressUI
from app_support.sidebar import (
    Selection,
    current_query,
    escape_markdown,
    page_catalogue,
    search_product_next_run,
)
from app_support.tiles import Tile, tile_grid
from embeddings.artefacts import artefact_dir
from embeddings.catalogue import Catalogue, stratified_sample
from embeddings.config import MANIFEST_FILE
from embeddings.derived import maps as core_maps
from embeddings.errors import EmbeddingsError, IndexMismatchError, IndexMissingError
from embeddings.search.query import Query

#: Products whose tooltip carries a thumbnail (a stratified sample of those drawn).
HOVER_THUMBS = 1_500
#: Longest side of a hover thumbnail: 60 pixels, about 1.8 KB each for the fashion set.
HOVER_THUMB_SIZE = 60
#: Choices of how many products each map draws (a stratified sample below the catalogue's size).
DRAWN_CHOICES = (2_000, 10_000, 50_000)
DEFAULT_DRAWN = 10_000
#: Label values coloured on the maps (Tableau's ten colours); rarer values are grey "(other)".
PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#2f4b7c",
]  # fmt: skip
COLOURED_VALUES = len(PALETTE)
OTHER = "(other)"
OTHER_COLOUR = "#c7c9cc"
#: Products listed when a box is dragged over a map.
BOXED_SHOWN = 60
#: The chart's width in CSS pixels (the main column of the wide layout at 1440 pixels), and height.
CHART_WIDTH = 940
CHART_HEIGHT = 520


# -- loading ---------------------------------------------------------------------------------
@st.cache_resource(max_entries=16, show_spinner=False)
def _load_map(directory: str, fingerprint: str, model_id: str, stamp: int):
    try:
        return core_maps.load_map(resources.catalogue(directory), model_id)
    except EmbeddingsError as exc:
        return exc


def saved_map(cat: Catalogue, model_id: str):
    """The model's current map, or the `EmbeddingsError` saying why there is none; loaded once
    per process and per version of the map and of the index."""
    return _load_map(str(cat.directory), cat.fingerprint, model_id, _map_stamp(cat, model_id))


def _map_stamp(cat: Catalogue, model_id: str) -> int:
    folder = artefact_dir(cat, core_maps.KIND, model_id)
    return resources._stamp(folder / MANIFEST_FILE, cat.model_dir(model_id) / MANIFEST_FILE)


# -- the table behind the chart ------------------------------------------------------------------
def drawn_ids(cat: Catalogue, mapped: list[str], count: int, filters) -> list[str]:
    """The products drawn: those mapped (and matching the label filter), or a sample of `count`
    of them stratified by the catalogue's main label."""
    allowed = cat.ids_matching(filters)
    ids = [i for i in mapped if i in cat and (allowed is None or i in allowed)]
    if len(ids) <= count:
        return ids
    items = cat.items.loc[ids]
    label = cat.main_label if cat.main_label in cat.items else None
    return stratified_sample(items, count, label=label, seed=0)["id"].tolist()


def coloured_values(values: pd.Series) -> pd.Series:
    """The label values as coloured: the `COLOURED_VALUES` commonest, the rest `OTHER`."""
    values = values.replace("", "—")
    top = values.value_counts().index[:COLOURED_VALUES]
    return values.where(values.isin(top), OTHER)


def map_frame(
    cat: Catalogue, found: dict[str, core_maps.EmbeddingMap], ids: list[str], label: str | None
) -> pd.DataFrame:
    """One row per drawn product: id, title, colour value, labels, image (for a sample), and
    `x{i}`/`y{i}` on the i-th model's map (NaN when that map lacks the product)."""
    table = resources.products(cat)
    frame = pd.DataFrame({"id": ids, "title": [table.title(i) or i for i in ids]})
    for name in cat.label_fields:  # categorical: sent as Arrow dictionaries, a tenth the bytes
        frame[name] = pd.Categorical([table.get(i, name) for i in ids])
    # A catalogue without labels colours every product alike (one value per row, not a scalar).
    colours = (
        coloured_values(frame[label].astype(str)) if label in frame else ["products"] * len(ids)
    )
    frame["colour"] = pd.Categorical(colours)
    for position, result in enumerate(found.values()):
        rows = np.array([result.row_of.get(i, -1) for i in ids], dtype=np.int64)
        coords = np.where(rows[:, None] >= 0, result.coords[np.maximum(rows, 0)], np.nan)
        frame[f"x{position}"] = coords[:, 0]
        frame[f"y{position}"] = coords[:, 1]
    with_image = set(drawn_ids(cat, ids, HOVER_THUMBS, None))
    frame["image"] = [
        thumbs.thumbnail(cat, i, HOVER_THUMB_SIZE) if i in with_image else "" for i in ids
    ]
    return frame


@st.cache_resource(max_entries=8, show_spinner="Preparing the maps…")
def _drawn_frame(
    directory: str, fingerprint: str, models: tuple, stamps: tuple, drawn: int, label, filters
) -> pd.DataFrame:
    cat = resources.catalogue(directory)
    found = {m: saved_map(cat, m) for m in models}
    mapped = list(dict.fromkeys(i for result in found.values() for i in result.ids))
    return map_frame(cat, found, drawn_ids(cat, mapped, drawn, dict(filters or ())), label)


def drawn_frame(cat: Catalogue, models: tuple, drawn: int, label, filters) -> pd.DataFrame:
    """`map_frame` of the drawn products, built once per process and view (never mutated)."""
    stamps = tuple(_map_stamp(cat, m) for m in models)
    key = tuple(sorted((filters or {}).items()))
    return _drawn_frame(str(cat.directory), cat.fingerprint, models, stamps, drawn, label, key)


# -- the chart ---------------------------------------------------------------------------------
#: Selections shared by every map: declared once at the top of the chart with no `views`, so
#: Vega-Lite applies them to every view (the hovered product is ringed on each map).
def map_chart(
    frame: pd.DataFrame,
    models: list[str],
    label: str | None,
    marked: list[str],
    label_fields: list[str],
) -> alt.HConcatChart:
    """A view per model over the one table `frame`: coloured points, a ring on the hovered
    product in every view, a diamond on `marked` products (the query), a box selection per view
    (`box{i}`) and a click selection (`pick`).

    `hover` and `pick` are added to every view's points: Altair lifts them to one parameter
    listening on all views (and warns that it merged them, which is the point; `chart_ui`
    silences that warning).
    """
    hover = alt.selection_point(
        name="hover", fields=["id"], on="pointerover", clear="pointerout", empty=False
    )
    pick = alt.selection_point(name="pick", fields=["id"], on="click", empty=False)
    tooltip = [
        alt.Tooltip("title:N"),
        alt.Tooltip("image:N"),
        *[alt.Tooltip(f"{name}:N") for name in label_fields],
        alt.Tooltip("id:N"),
    ]
    width = max(220, (CHART_WIDTH - 18 * (len(models) - 1)) // max(1, len(models)))
    values = [v for v in frame["colour"].value_counts().index if v != OTHER]
    domain = values + ([OTHER] if (frame["colour"] == OTHER).any() else [])
    colour = alt.Color(
        "colour:N",
        title=label or "",
        scale=alt.Scale(
            domain=domain,
            range=PALETTE[: len(values)] + [OTHER_COLOUR] * (len(domain) > len(values)),
        ),
        legend=alt.Legend(orient="bottom", columns=6, symbolLimit=len(domain)),
    )
    size = point_size(len(frame))
    views = []
    for position, model_id in enumerate(models):
        x, y = f"x{position}", f"y{position}"
        base = alt.Chart(frame).transform_filter(f"isValid(datum.{x})")
        axis = {"axis": None, "scale": alt.Scale(zero=False, nice=False, padding=10)}
        points = base.mark_circle(size=size, opacity=0.7).encode(
            x=alt.X(f"{x}:Q", **axis), y=alt.Y(f"{y}:Q", **axis), color=colour, tooltip=tooltip
        )
        box = alt.selection_interval(name=f"box{position}", encodings=["x", "y"])
        ring = (
            base.transform_filter(hover)
            .mark_point(size=420, strokeWidth=3, color="#111827", filled=False)
            .encode(x=f"{x}:Q", y=f"{y}:Q")
        )
        star = (
            base.transform_filter(alt.FieldOneOfPredicate(field="id", oneOf=marked or ["\0"]))
            .mark_point(shape="diamond", size=360, strokeWidth=3, color="#dc2626", filled=False)
            .encode(x=f"{x}:Q", y=f"{y}:Q", tooltip=tooltip)
        )
        with _merged_selections_expected():
            view = alt.layer(points.add_params(hover, pick, box), ring, star)
        views.append(view.properties(title=model_id, width=width, height=CHART_HEIGHT))
    with _merged_selections_expected():
        return alt.hconcat(*views, spacing=18).configure_view(stroke="#e5e7eb")


def chart_ui(chart: alt.HConcatChart, views: int) -> None:
    """Draw the maps; a click or a box reruns the page through `_chart_selected`."""
    with _merged_selections_expected():
        st.altair_chart(
            chart,
            key="map_chart",
            on_select=_chart_selected,
            selection_mode=["pick", *[f"box{i}" for i in range(views)]],
        )


@contextlib.contextmanager
def _merged_selections_expected():
    """Silence Altair's warning that it merged a selection added to several views."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Automatically deduplicated selection parameter", category=UserWarning
        )
        yield


def point_size(count: int) -> int:
    """Marks small enough not to hide each other: 60 px² for a few hundred, 5 for 50,000."""
    return int(np.clip(60 * (500 / max(count, 1)) ** 0.5, 5, 60))


# -- interaction ---------------------------------------------------------------------------------
def _chart_selected() -> None:
    """A click opens the product on Search; a box keeps the products inside it for the list."""
    state = st.session_state.get("map_chart") or {}
    selection = state.get("selection", {}) if hasattr(state, "get") else {}
    picked = selection.get("pick") or []
    if picked and picked[0].get("id") is not None:
        search_product_next_run(str(picked[0]["id"]))
        return
    st.session_state["map_box"] = {
        name: value for name, value in selection.items() if name.startswith("box") and value
    }


def boxed_ids(frame: pd.DataFrame, box: dict) -> list[str]:
    """Ids of the products inside a dragged box ({"x0": [lo, hi], "y0": [lo, hi]})."""
    inside = np.ones(len(frame), bool)
    for column, bounds in box.items():
        if column in frame and len(bounds) == 2:
            low, high = sorted(float(b) for b in bounds)
            inside &= frame[column].between(low, high).to_numpy()
    return frame.loc[inside, "id"].tolist()


def boxed_ui(cat: Catalogue, frame: pd.DataFrame, models: list[str]) -> None:
    """The products inside the dragged box(es), as tiles; a click opens one on Search."""
    boxes = st.session_state.get("map_box") or {}
    for name, box in boxes.items():
        position = int(name[3:]) if name[3:].isdigit() else -1
        if not 0 <= position < len(models):
            continue
        ids = boxed_ids(frame, box)
        st.markdown(
            f"**{len(ids):,} products** in the box drawn on **{escape_markdown(models[position])}**"
            + (f" (the first {BOXED_SHOWN} shown)" if len(ids) > BOXED_SHOWN else "")
            + ": click one to search by it."
        )
        table = resources.products(cat)
        tiles = [
            Tile(
                id=i,
                title=table.title(i) or i,
                image=thumbs.thumbnail(cat, i),
                href=f"./?catalog={cat.name}&item={i}",
                tooltip=table.title(i),
            )
            for i in ids[:BOXED_SHOWN]
        ]
        tile_grid(
            tiles, key=f"map_box_grid_{position}", on_click=search_product_next_run, model="map-box"
        )


# -- computing maps ------------------------------------------------------------------------------
def compute_ui(cat: Catalogue, models: list[str]) -> None:
    """The button that computes (and saves) the maps of `models`, with progress bars."""
    if resources.read_only():
        st.caption(
            f"Compute them on the server: `python -m embeddings map --catalog {cat.directory}`."
        )
        return
    label = f"Compute the map{'s' if len(models) > 1 else ''} of {', '.join(models)}"
    if not st.button(label, type="primary", key="map_compute", icon=":material/scatter_plot:"):
        return
    try:
        outcomes = core_maps.make_maps(cat.directory, models, progress=ProgressUI())
    except EmbeddingsError as exc:
        st.error(escape_markdown(str(exc)))
        return
    failed = [f"{o.model_id}: {o.message}" for o in outcomes if o.status == "failed"]
    if failed:
        st.session_state["flash_warning"] = "Not mapped: " + "; ".join(failed)
    st.rerun()


def describe_map(result: core_maps.EmbeddingMap) -> str:
    """A caption: what the map shows and how faithful it is."""
    manifest = result.manifest
    faithful = manifest["faithfulness"]
    pca = manifest.get("pca")
    what = (
        f"a sample of {manifest['mapped']:,} of {manifest['products']:,} products stratified by "
        f"{manifest['sample_label']}"
        if manifest["sampled"]
        else f"all {manifest['mapped']:,} products"
    )
    trust = faithful.get("trustworthiness")
    return (
        f"**{escape_markdown(result.model_id)}**: {what}; t-SNE"
        + (f" after PCA to {pca['dims']} dimensions" if pca else "")
        + f". Keeps {faithful['neighbours_kept']:.0%} of each product's "
        f"{faithful['neighbours']} nearest neighbours (chance {faithful['chance']:.2%})"
        + (f", trustworthiness {trust:.3f}" if trust is not None else "")
        + f"; computed in {sum(manifest['seconds'].values()):.0f} s."
    )


@dataclass
class MapChoice:
    """The page's own choices: how many products to draw."""

    drawn: int


def drawn_choice_ui(largest: int) -> MapChoice:
    choices = [c for c in DRAWN_CHOICES if c < largest] + [largest]
    default = min(DEFAULT_DRAWN, largest)
    chosen = st.session_state.get("w_map_drawn")
    if chosen not in choices:
        st.session_state["w_map_drawn"] = default if default in choices else choices[-1]
    drawn = st.selectbox(
        "Products drawn",
        choices,
        key="w_map_drawn",
        format_func=lambda c: f"all {c:,}" if c == largest else f"{c:,} (stratified sample)",
        help="Every product draws a point; a sample keeps the page light.",
        width=260,
    )
    return MapChoice(drawn)


def label_ui(cat: Catalogue, selection: Selection) -> str | None:
    from app_support import sidebar

    fields = cat.label_fields
    if not fields:
        return None
    st.session_state["w_label"] = selection.label if selection.label in fields else fields[0]
    return st.selectbox(
        "Colour by",
        fields,
        key="w_label",
        on_change=sidebar._copy,
        args=("w_label", "label"),
        width=260,
    )


def map_page(selection: Selection) -> None:
    """The whole Map page."""
    cat = page_catalogue(selection, "Maps of the catalogue")
    if cat is None:
        return
    st.markdown(
        "Each selected model places every product on a 2-D map so that products it finds "
        "similar lie close together. Hover a point for the product, click it to search by it, "
        "drag a box to list the products inside; the product under the pointer is ringed on "
        "every map, and the Search page's product is marked with a red diamond."
    )
    found, missing = {}, {}
    for model_id in selection.models:
        result = saved_map(cat, model_id)
        if isinstance(result, EmbeddingsError):
            missing[model_id] = result
        else:
            found[model_id] = result
    if missing:
        missing_ui(cat, missing)
    if not found:
        return
    controls = st.columns([1, 1, 3], vertical_alignment="bottom")
    with controls[0]:
        label = label_ui(cat, selection)
    largest = max(len(result.ids) for result in found.values())
    with controls[1]:
        choice = drawn_choice_ui(largest)
    mapped = list(dict.fromkeys(i for result in found.values() for i in result.ids))
    frame = drawn_frame(cat, tuple(found), choice.drawn, label, selection.filters)
    item = (current_query() or Query()).item
    marked = [item] if item is not None and item in cat else []
    controls[2].caption(drawn_note(cat, frame, len(mapped), selection.filters, marked))
    chart_ui(map_chart(frame, list(found), label, marked, cat.label_fields), len(found))
    for result in found.values():
        st.caption(describe_map(result))
    boxed_ui(cat, frame, list(found))


def drawn_note(cat: Catalogue, frame: pd.DataFrame, mapped: int, filters, marked) -> str:
    with_image = int((frame["image"].fillna("") != "").sum())  # "" marks no thumbnail
    parts = [
        f"Drawing {len(frame):,} of {mapped:,} mapped products"
        + (" (label filter)" if filters else "")
        + ("" if len(frame) >= mapped or filters else f", stratified by {cat.main_label}")
        + f"; {with_image:,} of them show their thumbnail on hover."
    ]
    if marked:
        parts.append(f"Red diamond: product {marked[0]}.")
    return " ".join(parts)


def missing_ui(cat: Catalogue, missing: dict[str, EmbeddingsError]) -> None:
    """Say which models have no current map and why, and offer to compute them."""
    for model_id, error in missing.items():
        if isinstance(error, IndexMismatchError):
            st.warning(
                f"The map of **{escape_markdown(model_id)}** is out of date: its index was "
                "rebuilt since. Compute it again."
            )
        elif isinstance(error, IndexMissingError):
            st.info(f"**{escape_markdown(model_id)}** has no map yet.")
        else:
            st.error(escape_markdown(str(error)))
    compute_ui(cat, list(missing))

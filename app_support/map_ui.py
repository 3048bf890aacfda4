"""The Map page: every selected model's 2-D map of the catalogue, side by side.

- The maps are the catalogue's own (`embeddings.derived.maps`): computed by
  `python -m embeddings map`, or here with a progress bar (not in a read-only deployment). A map
  whose index was rebuilt is stale and is not drawn.
- Every mapped product is drawn by default, on the GPU in the browser (`app_support.map_component`:
  deck.gl through WebGL 2, software rendering included). A product is one row of ONE table with
  its coordinates on every model's map, sent once as compact binary arrays
  (`app_support.map_payload`), so the product under the pointer is ringed on every map and the
  session's query product (from Search) is marked on every map, without a rerun.
- Hovering shows the product's title and labels at once, and its thumbnail as soon as it arrives:
  thumbnails are fetched on demand by a small fragment (`map_component.thumbnail_fragment`).
- A click on a point opens that product on Search; dragging a box (Shift + drag, or "Select a
  box") lists the products inside it as tiles, and a click on a tile opens that one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from app_support import map_payload, resources, thumbs
from app_support.map_component import FULL_RUN, product_maps, thumbnail_fragment
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

#: Choices of how many products each map draws below the catalogue's size (a stratified
#: sample); every mapped product is drawn by default.
DRAWN_CHOICES = (2_000, 10_000, 50_000, 200_000)
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
#: The maps' height in CSS pixels.
CHART_HEIGHT = 520
#: The component's height beyond the maps: their titles above, the buttons and legend below.
FRAME_EXTRA = 110


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


# -- the table behind the maps ------------------------------------------------------------------
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


def legend_of(colours: pd.Series) -> tuple[list[dict], np.ndarray]:
    """The legend ([{value, colour}], commonest first, `OTHER` last) and each row's entry."""
    values = [v for v in colours.value_counts().index if v != OTHER]
    domain = values + ([OTHER] if (colours == OTHER).any() else [])
    legend = [
        {"value": str(v), "colour": PALETTE[n] if v != OTHER else OTHER_COLOUR}
        for n, v in enumerate(domain)
    ]
    position = {v: n for n, v in enumerate(domain)}
    return legend, colours.map(position).to_numpy(dtype=np.uint8)


def map_frame(
    cat: Catalogue, found: dict[str, core_maps.EmbeddingMap], ids: list[str]
) -> pd.DataFrame:
    """One row per drawn product: id, and `x{i}`/`y{i}` on the i-th model's map (NaN when that
    map lacks the product)."""
    frame = pd.DataFrame({"id": ids})
    for position, result in enumerate(found.values()):
        rows = np.array([result.row_of.get(i, -1) for i in ids], dtype=np.int64)
        coords = np.where(rows[:, None] >= 0, result.coords[np.maximum(rows, 0)], np.nan)
        frame[f"x{position}"] = coords[:, 0]
        frame[f"y{position}"] = coords[:, 1]
    return frame


def map_args(cat: Catalogue, frame: pd.DataFrame, models: list[str], label: str | None) -> dict:
    """The component's arguments for the products of `frame` (see `app_support.map_payload`)."""
    table = resources.products(cat)
    ids = frame["id"].tolist()
    labels = {name: [table.get(i, name) for i in ids] for name in cat.label_fields}
    if label in labels:
        colours = coloured_values(pd.Series(labels[label], dtype=object).fillna("").astype(str))
    else:
        colours = pd.Series(["products"] * len(ids), dtype=object)
    legend, codes = legend_of(colours)
    return map_payload.encode(
        ids=ids,
        titles=[table.title(i) or "" for i in ids],
        labels=labels,
        colour_codes=codes,
        legend=legend,
        colour_field=label if label in labels else None,
        maps={
            model_id: frame[[f"x{p}", f"y{p}"]].to_numpy(np.float64)
            for p, model_id in enumerate(models)
        },
    )


@st.cache_resource(max_entries=8, show_spinner="Preparing the maps…")
def _drawn(
    directory: str, fingerprint: str, models: tuple, stamps: tuple, drawn: int, label, filters
) -> tuple[pd.DataFrame, dict]:
    cat = resources.catalogue(directory)
    found = {m: saved_map(cat, m) for m in models}
    mapped = list(dict.fromkeys(i for result in found.values() for i in result.ids))
    frame = map_frame(cat, found, drawn_ids(cat, mapped, drawn, dict(filters or ())))
    return frame, map_args(cat, frame, list(models), label)


def drawn_maps(
    cat: Catalogue, models: tuple, drawn: int, label, filters
) -> tuple[pd.DataFrame, dict]:
    """`map_frame` of the drawn products and the component's arguments for them, built once per
    process and view (never mutated)."""
    stamps = tuple(_map_stamp(cat, m) for m in models)
    key = tuple(sorted((filters or {}).items()))
    return _drawn(str(cat.directory), cat.fingerprint, models, stamps, drawn, label, key)


def maps_ui(cat: Catalogue, frame: pd.DataFrame, args: dict, marked: list[str]) -> None:
    """Draw the maps (a click or a box reruns the page through `_maps_event`), and the
    fragment that answers their thumbnail requests."""
    channel = st.session_state.setdefault("map_channel", f"embeddings-map-{uuid.uuid4().hex}")
    product_maps(
        {
            **args,
            "marked": marked,
            "map_height": CHART_HEIGHT,
            "height": CHART_HEIGHT + FRAME_EXTRA,  # the iframe: titles, maps, legend
            "channel": channel,
            "colour_version": f"{args['colour_field']}:{args['version']}",
        },
        key="map_chart",
        on_change=_maps_event,
    )
    thumbnail_fragment(cat, channel)


# -- interaction ---------------------------------------------------------------------------------
def _maps_event() -> None:
    """A click opens the product on Search; a box keeps its corners for the list below."""
    event = st.session_state.get("map_chart")
    if not isinstance(event, dict):
        return
    st.session_state[FULL_RUN] = True
    if event.get("event") == "click" and isinstance(event.get("id"), str):
        search_product_next_run(event["id"])
    elif event.get("event") == "box" and isinstance(event.get("view"), int):
        view, x, y = event["view"], event.get("x"), event.get("y")
        numbers = all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(b, (int, float)) for b in v)
            for v in (x, y)
        )  # the browser's word: anything else is ignored
        if numbers:
            st.session_state["map_box"] = {f"box{view}": {f"x{view}": x, f"y{view}": y}}


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
    choices = [largest] + [c for c in DRAWN_CHOICES if c < largest]
    if st.session_state.get("w_map_drawn") not in choices:
        st.session_state["w_map_drawn"] = largest
    drawn = st.selectbox(
        "Products drawn",
        choices,
        key="w_map_drawn",
        format_func=lambda c: f"all {c:,}" if c == largest else f"{c:,} (stratified sample)",
        help="Every mapped product is drawn by default; a sample sends less to the browser.",
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
    st.session_state.pop(FULL_RUN, None)
    cat = page_catalogue(selection, "Maps of the catalogue")
    if cat is None:
        return
    st.markdown(
        "Each selected model places every product on a 2-D map so that products it finds "
        "similar lie close together. Hover a point for the product, click it to search by it, "
        "drag a box (Shift + drag, or **Select a box**) to list the products inside; scroll to "
        "zoom, drag to pan. The product under the pointer is ringed on every map, and the "
        "Search page's product is marked with a red ring."
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
    frame, args = drawn_maps(cat, tuple(found), choice.drawn, label, selection.filters)
    item = (current_query() or Query()).item
    marked = [item] if item is not None and item in cat else []
    controls[2].caption(drawn_note(cat, frame, len(mapped), selection.filters, marked))
    maps_ui(cat, frame, args, marked)
    for result in found.values():
        st.caption(describe_map(result))
    boxed_ui(cat, frame, list(found))


def drawn_note(cat: Catalogue, frame: pd.DataFrame, mapped: int, filters, marked) -> str:
    parts = [
        f"Drawing {len(frame):,} of {mapped:,} mapped products"
        + (" (label filter)" if filters else "")
        + ("" if len(frame) >= mapped or filters else f", stratified by {cat.main_label}")
        + "; each shows its thumbnail on hover."
    ]
    if marked:
        parts.append(f"Red ring: product {marked[0]}.")
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

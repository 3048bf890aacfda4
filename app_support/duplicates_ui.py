"""Near-duplicates in the app: the Duplicates page, and the Search page's "hide near-duplicates".

- The Duplicates page shows, per selected model, the groups of near-duplicate products at a
  threshold the user slides (from the model's floor to 1), as rows of thumbnails with titles and
  labels, with the count of products in groups. It reads the pairs saved in the catalogue
  (`python -m embeddings duplicates`, or the button here, with a progress bar) and regroups them
  at any threshold without searching again.
- On Search, "hide near-duplicates" (`dedup=1` in the URL) folds every result that is within the
  model's default threshold of a higher-ranked result into it (a "+2 similar" badge), so the top-k
  shows k different products. The core's Searcher does the folding (`embeddings.search.hits`).
"""

from __future__ import annotations

import streamlit as st

from app_support import resources, thumbs
from app_support.progress_ui import ProgressUI
from app_support.sidebar import (
    Selection,
    escape_markdown,
    page_catalogue,
    search_product_next_run,
)
from app_support.tiles import Tile, tile_grid
from embeddings.artefacts import artefact_dir
from embeddings.catalogue import Catalogue
from embeddings.config import MANIFEST_FILE
from embeddings.derived import duplicates as core
from embeddings.errors import EmbeddingsError, IndexMismatchError, IndexMissingError

#: Groups listed per model, largest first; and members shown per group.
GROUPS_SHOWN = 25
MEMBERS_SHOWN = 16


# -- cached reads ------------------------------------------------------------------------------
def _stamp(cat: Catalogue, model_id: str) -> int:
    folder = artefact_dir(cat, core.KIND, model_id)
    return resources._stamp(folder / MANIFEST_FILE, cat.model_dir(model_id) / MANIFEST_FILE)


@st.cache_resource(max_entries=16, show_spinner=False)
def _load_pairs(directory: str, fingerprint: str, model_id: str, stamp: int):
    try:
        return core.load_pairs(resources.catalogue(directory), model_id)
    except EmbeddingsError as exc:
        return exc


def saved_pairs(cat: Catalogue, model_id: str):
    """The model's saved pairs, or the `EmbeddingsError` saying why there are none."""
    return _load_pairs(str(cat.directory), cat.fingerprint, model_id, _stamp(cat, model_id))


@st.cache_resource(max_entries=64, show_spinner=False)
def _groups(directory: str, fingerprint: str, model_id: str, stamp: int, threshold: float):
    pairs = _load_pairs(directory, fingerprint, model_id, stamp)
    return pairs.groups(threshold)


@st.cache_resource(max_entries=32, show_spinner="Reading the model's score distribution…")
def _thresholds(directory: str, fingerprint: str, model_id: str, stamp: int) -> core.Thresholds:
    pairs = _load_pairs(directory, fingerprint, model_id, stamp)
    if not isinstance(pairs, EmbeddingsError):
        manifest = pairs.manifest
        return core.Thresholds(
            manifest["default_threshold"],
            manifest["model_floor"],
            manifest["median_nearest"],
            manifest["threshold_sample"],
        )
    cat = resources.catalogue(directory)
    return core.default_threshold(resources.index(cat, model_id))


def thresholds(cat: Catalogue, model_id: str) -> core.Thresholds:
    """The model's default threshold and floor: from its saved pairs, else measured once."""
    return _thresholds(str(cat.directory), cat.fingerprint, model_id, _stamp(cat, model_id))


# -- the Search page's switch ----------------------------------------------------------------------
def dedup_on() -> bool:
    """Whether the session hides near-duplicates on Search (`dedup=1` in the URL)."""
    return bool(st.session_state.get("view.dedup"))


def _dedup_changed() -> None:
    st.session_state["view.dedup"] = bool(st.session_state.get("w_dedup"))


def hide_duplicates_ui() -> None:
    """The switch; its state is the session's (and the URL's) `dedup`."""
    st.session_state["w_dedup"] = dedup_on()
    st.toggle(
        "Hide near-duplicates",
        key="w_dedup",
        on_change=_dedup_changed,
        help="A result within the model's near-duplicate threshold of a higher-ranked result is "
        "folded into it (a “+N similar” badge), so the top-k shows k different products.",
    )


def fold_thresholds(cat: Catalogue):
    """What the Searcher folds by (`Searcher.search(fold=...)`): each model's default
    near-duplicate threshold while the switch is on, else None (nothing is folded)."""
    if not dedup_on():
        return None
    return lambda model_id: thresholds(cat, model_id).default


# -- the Duplicates page -------------------------------------------------------------------------
def find_ui(cat: Catalogue, model_id: str) -> None:
    """The button that searches the model's pairs (and saves them), with a progress bar."""
    if resources.read_only():
        st.caption(
            "Find them on the server: "
            f"`python -m embeddings duplicates --catalog {cat.directory} --model {model_id}`."
        )
        return
    if not st.button(
        f"Find near-duplicates with {model_id}",
        key=f"dup_find_{model_id}",
        type="primary",
        icon=":material/content_copy:",
        help=f"A range search of every one of the {len(cat):,} products in the index.",
    ):
        return
    try:
        found = core.find_duplicates(cat.directory, model_id, progress=ProgressUI())
    except EmbeddingsError as exc:
        st.error(escape_markdown(str(exc)))
        return
    if found.not_saved:
        st.session_state["flash_warning"] = (
            f"The {model_id} pairs were found but not saved: {found.not_saved}"
        )
    st.rerun()


def group_tiles(cat: Catalogue, group: core.DuplicateGroup, label: str | None) -> list[Tile]:
    table = resources.products(cat)
    tiles = []
    for item_id in group.ids[:MEMBERS_SHOWN]:
        labels = " · ".join(f"{k}: {v}" for k, v in table.labels(item_id).items())
        tiles.append(
            Tile(
                id=item_id,
                title=table.title(item_id) or item_id,
                image=thumbs.thumbnail(cat, item_id),
                href=f"./?catalog={cat.name}&item={item_id}",
                label=(table.get(item_id, label) or "—") if label else None,
                tooltip="\n".join(p for p in (table.title(item_id), labels, f"id {item_id}") if p),
            )
        )
    return tiles


def model_groups_ui(cat: Catalogue, model_id: str, label: str | None) -> dict | None:
    """One model's slider, counts and groups; returns its summary row (None without pairs)."""
    pairs = saved_pairs(cat, model_id)
    if isinstance(pairs, EmbeddingsError):
        if isinstance(pairs, IndexMismatchError):
            st.warning("The saved pairs are out of date: the index was rebuilt since.")
        elif not isinstance(pairs, IndexMissingError):
            st.error(escape_markdown(str(pairs)))
        else:
            st.info(f"No near-duplicate search has been run with {model_id} yet.")
        find_ui(cat, model_id)
        return None
    manifest = pairs.manifest
    default = float(manifest["default_threshold"])
    threshold = st.slider(
        f"Threshold for {model_id} (cosine similarity)",
        min_value=float(pairs.floor),
        max_value=1.0,
        value=max(float(pairs.floor), default),
        step=0.0001,
        format="%.4f",
        key=f"dup_threshold_{model_id}",
        help=f"The model's default is {default:.4f}: pairs ten times closer than products "
        f"usually are to their nearest neighbour (median nearest score "
        f"{manifest['median_nearest']:.4f}).",
    )
    groups = _groups(
        str(cat.directory), cat.fingerprint, model_id, _stamp(cat, model_id), float(threshold)
    )
    in_groups = core.products_in_groups(groups)
    st.markdown(
        f"**{in_groups:,} products** ({in_groups / max(1, len(pairs.ids)):.1%} of "
        f"{len(pairs.ids):,}) in **{len(groups):,} groups** at cosine ≥ {threshold:.4f}. "
    )
    st.caption(
        f"{manifest['method']} over the {manifest.get('index_type')} index at "
        f"{pairs.floor:.4f}: {manifest['pairs']:,} pairs in {manifest['seconds']:.1f} s "
        f"({manifest['computed_at']})."
    )
    for number, group in enumerate(groups[:GROUPS_SHOWN], start=1):
        more = len(group.ids) - MEMBERS_SHOWN
        st.markdown(
            f"**Group {number}** · {len(group.ids)} products · lowest linked score "
            f"{group.min_score:.4f}" + (f" · {more} more not shown" if more > 0 else "")
        )
        tile_grid(
            group_tiles(cat, group, label),
            key=f"dup_{model_id}_{number}",
            on_click=search_product_next_run,
            model=f"dup-{model_id}",
            query=str(number),
            min_width=88,
        )
    if len(groups) > GROUPS_SHOWN:
        st.caption(
            f"{len(groups) - GROUPS_SHOWN:,} smaller groups not shown: `python -m embeddings "
            f"duplicates --catalog {cat.directory} --model {model_id} --json` lists them all."
        )
    return {"model": model_id, "threshold": threshold, "groups": len(groups), "products": in_groups}


def duplicates_page(selection: Selection) -> None:
    """The whole Duplicates page."""
    cat = page_catalogue(selection, "Near-duplicate products")
    if cat is None:
        return
    st.markdown(
        "Products whose vectors are almost the same for a model: the same photo under two ids, "
        "or near-copies. Each model has its own scale, so each has its own threshold; a group "
        "joins products linked by pairs at or above it. Click a product to search by it."
    )
    label = selection.label if selection.label in cat.label_fields else None
    tabs = st.tabs([escape_markdown(m) for m in selection.models])
    summary = []
    for tab, model_id in zip(tabs, selection.models, strict=True):
        with tab:
            row = model_groups_ui(cat, model_id, label)
            if row:
                summary.append(row)
    if len(summary) > 1:
        st.divider()
        st.dataframe(summary, hide_index=True)

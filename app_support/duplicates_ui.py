"""Near-duplicates in the app: the Duplicates page, and the Search page's "hide near-duplicates".

- The Duplicates page shows, per selected model, the groups of near-duplicate products at a
  threshold the user slides (from the model's floor to 1), as rows of thumbnails with titles and
  labels, with the count of products in groups. It reads the pairs saved in the catalogue
  (`python -m embeddings duplicates`, or the button here, with a progress bar) and regroups them
  at any threshold without searching again.
- On Search, "hide near-duplicates" (`dedup=1` in the URL) folds every result that is within the
  model's default threshold of a higher-ranked result into it (a "+2 similar" badge), so the top-k
  shows k different products. The core does the folding (`embeddings.derived.duplicates`).
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from app_support import resources, thumbs
from app_support.sidebar import (
    Selection,
    escape_markdown,
    page_catalogue,
    search_product_next_run,
)
from app_support.tiles import Tile, tile_grid
from embeddings.derived import duplicates as core
from embeddings.catalogue import Catalogue
from embeddings.artefacts import Step, artefact_dir
from embeddings.errors import EmbeddingsError, IndexMismatchError, IndexMissingError
from embeddings.index.fused import is_fused
from embeddings.index.store import MANIFEST_FILE
from embeddings.search.searcher import MAX_K

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


def widened(selection: Selection) -> Selection:
    """The selection asking for more results than shown, to fold near-duplicates out of."""
    if not dedup_on():
        return selection
    return dataclasses.replace(selection, k=min(MAX_K, max(3 * selection.k, selection.k + 10)))


def fold_outcome(selection: Selection, query: dict, outcome, run) -> None:
    """Fold each model's near-duplicate results into higher-ranked ones, keeping k per model.

    `outcome` (from `run(widened(selection), query)`) is changed in place: its results become
    the k kept hits, and `outcome.similar[model][id]` counts what was folded into each. When the
    wider list runs out before k distinct products, `run` is asked again for more.
    """
    if not dedup_on():
        return
    cat = selection.catalogue
    for model_id, hits in list(outcome.results.items()):
        if is_fused(model_id):  # a fused model has no vectors of its own to compare
            outcome.results[model_id] = hits[: selection.k]
            continue
        index = resources.index(cat, model_id)
        wide = {"hits": hits}

        def fetch(n: int, model_id=model_id, wide=wide):
            if n > len(wide["hits"]) and len(wide["hits"]) >= widened(selection).k:
                more = run(dataclasses.replace(selection, models=[model_id], k=n), query)
                wide["hits"] = more.results.get(model_id, wide["hits"])
            return wide["hits"][:n]

        def vectors(ids, index=index):
            return index.reconstruct_batch([index.row_of[i] for i in ids])

        folded = core.distinct_top_k(
            fetch,
            vectors,
            selection.k,
            thresholds(cat, model_id).default,
            most=MAX_K,
        )
        outcome.results[model_id] = [f.hit for f in folded]
        outcome.similar[model_id] = {f.hit.id: len(f.similar) for f in folded if f.similar}


# -- the Duplicates page -------------------------------------------------------------------------
class PairsProgressUI:
    """Draws the range search's `Step`s as a progress bar."""

    def __init__(self):
        self.bar = st.progress(0.0, text="Starting…")

    def __call__(self, step: Step) -> None:
        fraction = step.done / step.total if step.total else 0.0
        self.bar.progress(
            min(1.0, fraction),
            text=f"{step.model_id}: {step.message} ({step.done:,} / {step.total:,})",
        )


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
        found = core.find_duplicates(cat.directory, model_id, progress=PairsProgressUI())
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

"""The shared sidebar and the session's view: catalogue, models, k, label filter, query.

The view lives in `st.session_state` under `view.*` keys (and `query`) and is mirrored into the
URL. Each run, `sidebar_ui()`:

1. applies the URL's parameters that changed since the app last wrote it (a pasted link, or a
   page link that carries parameters), with a notice for anything it cannot honour;
2. validates the view against the data (the catalogue exists, the models are built, k fits);
3. draws the sidebar widgets and returns the `Selection` the pages work from.

`write_url()` (called by `app.py` after the page ran) writes the view back into the URL.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import streamlit as st

from app_support import resources, urlstate
from embeddings.catalogue import Catalogue
from embeddings.config import data_dir
from embeddings.errors import EmbeddingsError
from embeddings.index.fused import check_model_id, fused_pairs, is_fused, missing_parts
from embeddings.search.query import DEFAULT_TEXT_WEIGHT, Query
from embeddings.search.searcher import MAX_K, MAX_TEXT_CHARS, fused_text_kind

#: The k slider's top (a URL may not ask for more: 50 tiles per model is already a long page).
K_SLIDER_MAX = 50
DEFAULT_K = 10
#: Models shown side by side when the URL and the session name none.
DEFAULT_MODEL_COUNT = 4

NO_FILTER = "(no filter)"


@dataclass(frozen=True)
class Selection:
    """What the sidebar resolved for this run; pages read it and never change it."""

    catalogues: list[str]
    catalogue: Catalogue | None = None
    built: list[str] = field(default_factory=list)
    text_models: dict[str, str] = field(default_factory=dict)  # model -> "native" | "bridge"
    models: list[str] = field(default_factory=list)
    k: int = DEFAULT_K
    filters: dict[str, str] | None = None
    label: str | None = None  # label field for the comparison's marks
    error: str | None = None  # the catalogue could not be opened


# -- session state -------------------------------------------------------------------------
def _state(name: str, default=None):
    return st.session_state.get(f"view.{name}", default)


def _set_state(name: str, value) -> None:
    st.session_state[f"view.{name}"] = value


def notices() -> list[str]:
    """Messages about the URL or the view, gathered during this run (shown above the page)."""
    return st.session_state.setdefault("_notices", [])


def _notice(message: str) -> None:
    notices().append(message)


def current_query() -> Query | None:
    """The session's query: the core's `Query` (a product, words, or an upload's decoded image
    with its file name; words mixed into a picture; liked and disliked products), or None. The
    URL carries it as `item`, `text`, `mix`, `like` and `dislike` (`urlstate`)."""
    return st.session_state.get("query")


def set_query(query: Query | None) -> None:
    st.session_state["query"] = query
    st.session_state["query_error"] = None


def set_item_query(item_id: str) -> None:
    set_query(Query(item=str(item_id)))


SEARCH_PAGE = "app_pages/search.py"
_OPEN_SEARCH = "open_search_next_run"


def search_product_next_run(item_id: str) -> None:
    """From a widget callback on another page: query `item_id`, and open Search on the rerun
    (`st.switch_page` cannot be called inside a callback)."""
    set_item_query(item_id)
    st.session_state[_OPEN_SEARCH] = True


def page_catalogue(selection: Selection, title: str) -> Catalogue | None:
    """The start of a page other than Search: follow a product clicked on the last run to
    Search, show the title, and return the catalogue, or None (with a note) when the sidebar
    has no catalogue or no model chosen."""
    if st.session_state.pop(_OPEN_SEARCH, False):
        st.switch_page(SEARCH_PAGE)
    st.title(title)
    if selection.catalogue is None or not selection.models:
        st.info("Pick a catalogue and at least one model in the sidebar.")
        return None
    return selection.catalogue


# -- refining the query: more / less like this, words mixed in ------------------------------
def toggle_steering(item_id: str, side: str) -> None:
    """Like (`side` "liked") or dislike ("disliked") a product for the current query; the same
    action again takes it back. A product is on one side at most."""
    query = current_query()
    if query is None:
        return
    other = "disliked" if side == "liked" else "liked"
    chosen = tuple(i for i in getattr(query, side) if i != item_id)
    if len(chosen) == len(getattr(query, side)):
        chosen += (str(item_id),)
    _refine(**{side: chosen, other: tuple(i for i in getattr(query, other) if i != item_id)})


def remove_steering(item_id: str) -> None:
    query = current_query()
    if query is not None:
        _refine(
            liked=tuple(i for i in query.liked if i != item_id),
            disliked=tuple(i for i in query.disliked if i != item_id),
        )


def clear_steering() -> None:
    _refine(liked=(), disliked=())


def set_words(words: str | None, weight: float | None = None) -> None:
    """Mix `words` into the current item or upload query (None: no words)."""
    _refine(text=words or None, text_weight=DEFAULT_TEXT_WEIGHT if weight is None else weight)


def _refine(**changes) -> None:
    query = current_query()
    if query is not None:
        st.session_state["query"] = dataclasses.replace(query, **changes)
        st.session_state["query_error"] = None


def _query_from_url(view: urlstate.UrlView) -> Query | None:
    """The query a link's `item` / `text` / `mix` / `like` / `dislike` describe."""
    steering = {"liked": tuple(view.like or ()), "disliked": tuple(view.dislike or ())}
    if view.item is not None:  # with text: "this product, but in red"
        weight = DEFAULT_TEXT_WEIGHT if view.mix is None else view.mix
        return Query(item=view.item, text=view.text, text_weight=weight, **steering)
    if view.text is not None:
        st.session_state["w_text"] = view.text.strip()[:MAX_TEXT_CHARS]  # the box shows it
        return Query(text=view.text, **steering)
    if any(steering.values()):
        _notice("The link's like/dislike need a product or a text query (item or text); ignored.")
    return None


def _apply_url() -> None:
    """Copy the URL parameters that changed since the app last wrote the URL into the session."""
    current = st.query_params.to_dict()
    changed = urlstate.changed_params(current, st.session_state.get("_url_last", {}))
    if not changed:
        return
    view, problems = urlstate.parse_params(
        {n: v for n, v in changed.items() if n not in urlstate.QUERY_PARAMS}
    )
    for problem in problems:
        _notice(problem)
    if "catalog" in view.present and view.catalog and view.catalog != _state("catalog"):
        _set_state("catalog", view.catalog)
        _set_state("catalog_from_url", True)
        for name in ("filter", "label"):
            _set_state(name, None)
        set_query(None)
    if view.models is not None:
        _set_state("models", view.models)
        _set_state("models_from_url", True)
    if view.k is not None:
        _set_state("k", view.k)
        _set_state("k_from_url", True)
    if "filter" in view.present:
        _set_state("filter", view.filter)
    if view.label is not None:
        _set_state("label", view.label)
    if view.dedup is not None:
        _set_state("dedup", view.dedup)
    if any(name in changed for name in urlstate.QUERY_PARAMS):
        # The query's parameters are read together: a link changing one changes the query.
        query_view, problems = urlstate.parse_params(
            {n: v for n, v in current.items() if n in urlstate.QUERY_PARAMS}
        )
        for problem in problems:
            _notice(problem)
        query = _query_from_url(query_view)
        if query is not None:
            set_query(query)


# -- validation ----------------------------------------------------------------------------
def _resolve_catalogue(names: list[str]) -> str | None:
    wanted = _state("catalog")
    if wanted in names:
        return wanted
    if wanted and _state("catalog_from_url"):
        where = data_dir()
        _notice(
            f"There is no catalogue named **{escape_markdown(wanted)}** in the data folder "
            f"({escape_markdown(str(where))})"
            + (f"; showing **{escape_markdown(names[0])}** instead." if names else ".")
        )
        set_query(None)
    _set_state("catalog_from_url", False)
    chosen = names[0] if names else None
    _set_state("catalog", chosen)
    return chosen


def _usable_fused(cat: Catalogue, model_id: str, built: list[str]) -> bool:
    """Whether a fused id from the view can be shown; a notice says why not (from a link)."""
    try:
        model_id = check_model_id(model_id)
    except EmbeddingsError as exc:
        if _state("models_from_url"):
            _notice(f"The link's models: {escape_markdown(str(exc))}.")
        return False
    missing = missing_parts(model_id, built)
    if missing and _state("models_from_url"):
        _notice(
            f"The link asks for the fused model **{escape_markdown(model_id)}**, but "
            f"{', '.join(f'**{escape_markdown(m)}**' for m in missing)} has no index in catalogue "
            f"**{escape_markdown(cat.name)}** (built: {', '.join(built) or 'none'})."
        )
    return not missing


def _resolve_models(cat: Catalogue, built: list[str]) -> list[str]:
    wanted = _state("models")
    if wanted is None:
        chosen = built[:DEFAULT_MODEL_COUNT]
    else:
        fused = [m for m in wanted if is_fused(m)]
        usable = {m for m in fused if _usable_fused(cat, m, built)}
        chosen = [m for m in wanted if m in built or m in usable]
        missing = [m for m in wanted if m not in built and not is_fused(m)]
        if missing and _state("models_from_url"):
            _notice(
                f"The link asks for {', '.join(f'**{escape_markdown(m)}**' for m in missing)}, "
                f"which has no index in catalogue **{escape_markdown(cat.name)}** (built: "
                f"{', '.join(built) or 'none'}); build it on the Catalogue page."
            )
        if wanted and not chosen:  # none of the asked models is built here: the defaults
            chosen = built[:DEFAULT_MODEL_COUNT]
    _set_state("models_from_url", False)
    _set_state("models", chosen)
    return chosen


def _resolve_steering(cat: Catalogue) -> None:
    """Drop liked / disliked products the catalogue does not have (a link from elsewhere)."""
    query = current_query()
    if not query:
        return
    for side, word in (("liked", "like"), ("disliked", "dislike")):
        ids = getattr(query, side)
        unknown = [i for i in ids if i not in cat]
        if unknown:
            _notice(
                f"The link's {word}= names "
                f"{', '.join(f'**{escape_markdown(i)}**' for i in unknown)}, not a product of "
                f"catalogue **{escape_markdown(cat.name)}**; left out."
            )
            query = dataclasses.replace(query, **{side: tuple(i for i in ids if i in cat)})
    st.session_state["query"] = query


def max_k_for(cat: Catalogue) -> int:
    """The largest k worth asking: every other product, capped by the slider's range."""
    return max(1, min(K_SLIDER_MAX, MAX_K, len(cat) - 1))


def _resolve_k(cat: Catalogue) -> tuple[int, int]:
    top = max_k_for(cat)
    wanted = _state("k")
    k = DEFAULT_K if wanted is None else int(wanted)
    if k < 1 or k > top:
        clamped = min(max(k, 1), top)
        if _state("k_from_url"):
            _notice(
                f"k={k} in the link is out of range: catalogue **{escape_markdown(cat.name)}** "
                f"({len(cat):,} products) shows 1 to {top} results per model; showing k={clamped}."
            )
        k = clamped
    _set_state("k_from_url", False)
    _set_state("k", k)
    return k, top


def _resolve_filter(cat: Catalogue) -> dict[str, str] | None:
    wanted = _state("filter")
    if not wanted:
        return None
    field_name, value = wanted
    if field_name in cat.label_fields and value is None:  # a field just picked: its commonest value
        counts = cat.label_counts(field_name)
        if counts.empty:
            _set_state("filter", None)
            return None
        value = str(counts.index[0])
        _set_state("filter", (field_name, value))
    if field_name not in cat.label_fields:
        _notice(
            f"Cannot filter on **{escape_markdown(field_name)}**: catalogue "
            f"**{escape_markdown(cat.name)}** has the label fields "
            f"{', '.join(cat.label_fields) or 'none'}. No filter applied."
        )
        _set_state("filter", None)
        return None
    if value not in set(cat.items[field_name]):
        _notice(
            f"No product has {escape_markdown(field_name)} = **{escape_markdown(value)}** in "
            f"**{escape_markdown(cat.name)}**; no filter applied."
        )
        _set_state("filter", None)
        return None
    return {field_name: value}


def _resolve_label(cat: Catalogue) -> str | None:
    wanted = _state("label")
    if wanted in cat.label_fields:
        return wanted
    if wanted:
        _notice(
            f"label={escape_markdown(wanted)} in the link is not a label field of "
            f"**{escape_markdown(cat.name)}**; using {cat.main_label or 'none'}."
        )
    label = (
        cat.main_label if cat.main_label in cat.label_fields else (cat.label_fields or [None])[0]
    )
    _set_state("label", label)
    return label


# -- widgets -------------------------------------------------------------------------------
def _copy(widget_key: str, name: str, convert=lambda v: v) -> None:
    _set_state(name, convert(st.session_state[widget_key]))


def _catalogue_changed() -> None:
    _set_state("catalog", st.session_state["w_catalog"])
    _set_state("filter", None)
    _set_state("label", None)
    set_query(None)


def _filter_changed() -> None:
    field_name = st.session_state.get("w_filter_field", NO_FILTER)
    value = st.session_state.get("w_filter_value")
    if field_name == NO_FILTER:
        _set_state("filter", None)
    elif value is not None and (_state("filter") or (None,))[0] == field_name:
        _set_state("filter", (field_name, value))
    else:  # a new field: its most common value until the user picks another
        _set_state("filter", (field_name, None))


def model_label(model_id: str, text_models: dict[str, str]) -> str:
    """How the model picker names a model: 'clip · text' when it answers text, else its id."""
    return f"{model_id} · text" if model_id in text_models else model_id


def _models_ui(cat: Catalogue, built: list[str], models: list[str]):
    """The model picker: built models and fusions of two of them (plus any fused id the view
    already holds). Returns (the chosen models, {model: "native" | "bridge"} for those that
    answer text, fused ones included)."""
    plain_text_models = resources.text_capable(cat)
    options = [*built, *(m for m in [*fused_pairs(built), *models] if is_fused(m))]
    options = list(dict.fromkeys(options))
    text_models = {
        m: kind for m in options if (kind := fused_text_kind(m, plain_text_models)) is not None
    }
    if not built:
        st.sidebar.warning(
            f"No model has an index in **{escape_markdown(cat.name)}** yet: build one on the "
            "Catalogue page."
        )
        return models, text_models
    st.session_state["w_models"] = models
    st.sidebar.multiselect(
        "Models, side by side",
        options,
        key="w_models",
        format_func=lambda m: model_label(m, text_models),
        on_change=_copy,
        args=("w_models", "models"),
        help="Only models with an index in this catalogue. '· text': the model answers text "
        "queries, with its own text tower or through a text bridge learnt from "
        "the product titles. 'A+B' fuses two models' rankings (no index of its own).",
    )
    if plain_text_models:
        st.sidebar.caption(
            "Text queries: "
            + ", ".join(
                f"{m} ({'own text tower' if kind == 'native' else 'text bridge'})"
                for m, kind in plain_text_models.items()
            )
        )
    return _state("models"), text_models


def sidebar_ui() -> Selection:
    """Draw the shared sidebar and return the resolved `Selection` (see the module docstring)."""
    st.session_state["_notices"] = []
    _apply_url()
    folders = resources.catalogue_dirs()
    names = list(folders)
    chosen = _resolve_catalogue(names)
    sidebar = st.sidebar
    if chosen is None:
        sidebar.info("No catalogue yet: build one on the **Catalogue** page.")
        return Selection(catalogues=names)

    st.session_state["w_catalog"] = chosen
    sidebar.selectbox(
        "Catalogue",
        names,
        key="w_catalog",
        on_change=_catalogue_changed,
        help=f"The catalogues in the data folder ({data_dir()})."
        if not resources.opened_bundle()
        else "The published bundle this app serves.",
    )
    try:
        cat = resources.catalogue(folders[chosen])
    except EmbeddingsError as exc:
        sidebar.error(str(exc))
        return Selection(catalogues=names, error=str(exc))

    built = resources.built_models(cat)
    models = _resolve_models(cat, built)
    _resolve_steering(cat)
    k, top = _resolve_k(cat)
    filters = _resolve_filter(cat)
    label = _resolve_label(cat)
    models, text_models = _models_ui(cat, built, models)
    if top > 1:
        st.session_state["w_k"] = k
        sidebar.slider(
            "Results per model (k)", 1, top, key="w_k", on_change=_copy, args=("w_k", "k")
        )
    else:
        sidebar.caption(
            f"k = {top} (the catalogue has {len(cat):,} product{'s' if len(cat) != 1 else ''})"
        )

    if cat.label_fields:
        with sidebar.expander("Filter by label", expanded=bool(filters)):
            fields = [NO_FILTER, *cat.label_fields]
            st.session_state["w_filter_field"] = next(iter(filters)) if filters else NO_FILTER
            st.selectbox("Label field", fields, key="w_filter_field", on_change=_filter_changed)
            if st.session_state["w_filter_field"] != NO_FILTER:
                field_name = st.session_state["w_filter_field"]
                counts = cat.label_counts(field_name)
                value = (filters or {}).get(field_name)
                if value is not None:
                    st.session_state["w_filter_value"] = value
                    st.selectbox(
                        "Value",
                        counts.index.tolist(),
                        key="w_filter_value",
                        on_change=_filter_changed,
                        format_func=lambda v: f"{v} ({counts.get(v, 0):,})",
                    )
                st.caption("Every search keeps only the products with this label.")
    return Selection(
        catalogues=names,
        catalogue=cat,
        built=built,
        text_models=text_models,
        models=list(models),
        k=k,
        filters=filters,
        label=label,
    )


def view_params(selection: Selection, page: str) -> dict[str, str]:
    """The URL parameters of the view shown on `page` ("search", "compare", "catalogue",
    "map" or "duplicates")."""
    if selection.catalogue is None:
        return {}
    catalog = selection.catalogue.name
    if page == "catalogue":
        return urlstate.encode_view(catalog=catalog)
    if page == "duplicates":
        return urlstate.encode_view(catalog=catalog, models=selection.models)
    if page in ("compare", "map"):
        return urlstate.encode_view(catalog=catalog, models=selection.models, label=selection.label)
    query = current_query() or Query()
    linkable = query.image is None  # an upload is the one query a URL cannot carry
    return urlstate.encode_view(
        catalog=catalog,
        models=selection.models,
        k=selection.k,
        filters=selection.filters,
        label=selection.label,
        item=query.item,
        text=query.text if linkable else None,
        mix=query.text_weight,  # written only with item and text (a mix)
        like=list(query.liked) if linkable else None,
        dislike=list(query.disliked) if linkable else None,
        dedup=bool(_state("dedup")),
    )


_router = threading.local()


@contextmanager
def routing(selection: Selection):
    """Run a page with this run's selection (`app.py` wraps `page.run()` in it)."""
    st.session_state["_selection"] = selection
    _router.active = True
    try:
        yield
    finally:
        _router.active = False


def selection() -> Selection:
    """The selection `sidebar_ui()` resolved in this run; pages start with this call.

    Page files run only through `app.py` (`st.navigation`, inside `routing`): they live in
    `app_pages/`, not `pages/`, so Streamlit never runs one alone as a legacy v1 page.
    """
    if not getattr(_router, "active", False):
        raise RuntimeError(
            "a page of the app ran without its router; start the app with "
            "`streamlit run app.py`, not a file in app_pages/"
        )
    return st.session_state["_selection"]


def write_url(params: dict[str, str]) -> None:
    """Put `params` in the address bar (only when they changed) and remember what was written."""
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
    st.session_state["_url_last"] = dict(params)


def escape_markdown(text: str) -> str:
    """Text shown literally inside Streamlit markdown (no links, emphasis, HTML or :color[]
    directives)."""
    specials = "\\`*_{}[]()#+-.!|<>~:$&"
    return "".join(f"\\{char}" if char in specials else char for char in str(text))

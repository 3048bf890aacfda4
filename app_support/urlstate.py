"""The view in the URL: which catalogue, models, k, label filter and query a page shows.

Pasting a URL reproduces the view, so every choice that changes what the Search and Compare pages
show is a query parameter:

    /?catalog=fashion-2000&models=pixels,efficientnet-lite0&k=10&item=15970
    /?catalog=fashion-2000&models=clip&k=20&text=red+running+shoes&filter=gender:Women
    /compare?catalog=fashion-2000&models=pixels,clip&label=articleType

(the page itself is the URL's path). An uploaded image is the one query a URL cannot carry.

This module is pure (no Streamlit): `parse_params` turns raw parameters into a `UrlView` and a
list of problems worth telling the user; `encode_view` does the reverse. Whether a catalogue,
model or product named in a URL exists is checked later, against the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

#: Every parameter the app reads or writes, in the order it writes them.
PARAMS = ("catalog", "models", "k", "filter", "label", "item", "text", "dedup")

#: URL parameters are refused above this length (a text query has its own, smaller, limit).
MAX_PARAM_CHARS = 4000


@dataclass
class UrlView:
    """What a URL asks for; `None` means 'not in the URL' (the session keeps its own value)."""

    catalog: str | None = None
    models: list[str] | None = None
    k: int | None = None
    filter: tuple[str, str] | None = None  # (label field, value)
    label: str | None = None  # label field the comparison marks matches on
    item: str | None = None
    text: str | None = None
    dedup: bool | None = None  # Search hides near-duplicates (dedup=1)
    present: set[str] = field(default_factory=set)  # parameters the URL had (even if invalid)


def parse_params(params: Mapping[str, str]) -> tuple[UrlView, list[str]]:
    """Read the app's parameters from a URL's query; returns the view and problems found.

    Problems are sentences for the user ("k=abc in the link is not a whole number; ..."); the
    offending parameter is left out of the view. Unknown parameters are ignored.
    """
    view, problems = UrlView(), []
    for name in PARAMS:
        if name not in params:
            continue
        view.present.add(name)
        raw = str(params[name])
        if len(raw) > MAX_PARAM_CHARS:
            problems.append(
                f"The link's `{name}` parameter is {len(raw):,} characters long; it was ignored."
            )
            continue
        value = raw.strip()
        if name == "catalog":
            view.catalog = value or None
        elif name == "models":
            models = [m.strip() for m in value.split(",") if m.strip()]
            view.models = list(dict.fromkeys(models)) or None
        elif name == "k":
            try:
                view.k = int(value)
            except ValueError:
                problems.append(
                    f"k={value!r} in the link is not a whole number; the sidebar's k is used."
                )
        elif name == "filter":
            if not value:
                view.filter = None
            elif ":" not in value:
                problems.append(
                    f"filter={value!r} in the link should read field:value (e.g. gender:Women); "
                    "no filter applied."
                )
            else:
                field_name, _, field_value = value.partition(":")
                view.filter = (field_name.strip(), field_value.strip())
        elif name == "label":
            view.label = value or None
        elif name == "item":
            view.item = value or None
        elif name == "text":
            view.text = raw  # the query text as typed; checked by the core's check_text
        elif name == "dedup":
            view.dedup = value.lower() in ("1", "true", "yes", "on")
    if view.item is not None and view.text is not None:
        problems.append("The link has both an item and a text query; the item query is shown.")
        view.text = None
    return view, problems


def encode_view(
    *,
    catalog: str | None,
    models: list[str] | None = None,
    k: int | None = None,
    filters: Mapping[str, str] | None = None,
    label: str | None = None,
    item: str | None = None,
    text: str | None = None,
    dedup: bool = False,
) -> dict[str, str]:
    """The query parameters for a view, in `PARAMS` order; empty choices are left out."""
    params: dict[str, str] = {}
    if catalog:
        params["catalog"] = catalog
    if models:
        params["models"] = ",".join(models)
    if k is not None:
        params["k"] = str(int(k))
    if filters:
        ((field_name, value),) = list(filters.items())[:1]
        params["filter"] = f"{field_name}:{value}"
    if label:
        params["label"] = label
    if item is not None:
        params["item"] = item
    elif text is not None:
        params["text"] = text
    if dedup:
        params["dedup"] = "1"
    return params


def href(params: Mapping[str, str]) -> str:
    """A relative link (`?a=1&b=2`) to the current page with these parameters."""
    return "?" + urlencode(params)


def changed_params(current: Mapping[str, str], last_written: Mapping[str, str]) -> dict[str, str]:
    """The parameters of `current` that differ from what the app last wrote into the URL.

    A new session has written nothing, so the whole URL counts (a pasted link). Within a session
    the URL changes only when the app writes it or when a page link carries parameters; switching
    pages from the navigation drops the parameters, which is not a request to reset the view, so
    absent parameters never count as changes.
    """
    return {
        name: value
        for name, value in current.items()
        if name in PARAMS and last_written.get(name) != value
    }

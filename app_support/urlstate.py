"""The view in the URL: which catalogue, models, k, label filter and query a page shows.

Pasting a URL reproduces the view, so every choice that changes what the Search and Compare pages
show is a query parameter:

    /?catalog=fashion-2000&models=pixels,efficientnet-lite0&k=10&item=15970
    /?catalog=fashion-2000&models=clip&k=20&text=red+running+shoes&filter=gender:Women
    /compare?catalog=fashion-2000&models=pixels,clip&label=articleType
    /?catalog=fashion-2000&models=efficientnet-lite0+pixels&item=15970&text=in+red&mix=0.6
    /?catalog=fashion-2000&models=pixels&item=15970&like=1163,1164&dislike=2001

(the page itself is the URL's path). `item` and `text` together are a mix ("this product, in
red"), `mix` the share of the words; `like` and `dislike` list the products the query is
steered towards and away from (ids comma-separated; a comma or % inside an id is %-escaped).
An uploaded image is the one query a URL cannot carry.

This module is pure (no Streamlit): `parse_params` turns raw parameters into a `UrlView` and a
list of problems worth telling the user; `encode_view` does the reverse. Whether a catalogue,
model or product named in a URL exists is checked later, against the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode

#: Every parameter the app reads or writes, in the order it writes them.
PARAMS = (
    "catalog",
    "models",
    "k",
    "filter",
    "label",
    "item",
    "text",
    "mix",
    "like",
    "dislike",
    "dedup",
)
#: The parameters that make up the query (read together: a link changing one changes the query).
QUERY_PARAMS = ("item", "text", "mix", "like", "dislike")

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
    text: str | None = None  # with `item`: the words mixed into the product
    mix: float | None = None  # the share of the words in an item + text mix, 0..1
    like: list[str] | None = None  # products to find more like (checked against the data later)
    dislike: list[str] | None = None
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
        else:
            _parse_refinement(view, name, value, problems)
    _check_steering(view, problems)
    return view, problems


def _parse_refinement(view: UrlView, name: str, value: str, problems: list[str]) -> None:
    """`mix`, `like` and `dislike`: the refinements of a query."""
    if name == "mix":
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if weight is None or not 0.0 <= weight <= 1.0:
            problems.append(
                f"mix={value!r} in the link should be the share of the words, from 0 to 1 "
                "(e.g. 0.5); the default mix is used."
            )
        else:
            view.mix = weight
    else:
        ids = decode_ids(value)
        setattr(view, name, ids)


def _check_steering(view: UrlView, problems: list[str]) -> None:
    """A product both liked and disliked is dropped from both, with a message; so is the query
    product itself when the link also likes or dislikes it (it would change nothing)."""
    for name in ("like", "dislike"):
        ids = getattr(view, name)
        if view.item is not None and ids and view.item in ids:
            problems.append(
                f"The link's product {view.item} is the query itself, and also in `{name}`: "
                "steering by the query's own product changes nothing, so it was left out of "
                f"`{name}`. Steer by other products (their tiles' more / less like this)."
            )
            setattr(view, name, [i for i in ids if i != view.item])
    both = [i for i in view.like or [] if i in set(view.dislike or [])]
    if both:
        problems.append(
            f"The link both likes and dislikes product(s) {', '.join(both)}; they were left out."
        )
        view.like = [i for i in view.like if i not in both]
        view.dislike = [i for i in view.dislike if i not in both]


def encode_ids(ids: list[str]) -> str:
    """Product ids for one parameter: comma-separated, a comma or % inside an id %-escaped."""
    return ",".join(str(i).replace("%", "%25").replace(",", "%2C") for i in ids)


def decode_ids(value: str) -> list[str]:
    """The ids `encode_ids` wrote (distinct, in order)."""
    ids = [unquote(part.strip()) for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(ids))


def encode_view(
    *,
    catalog: str | None,
    models: list[str] | None = None,
    k: int | None = None,
    filters: Mapping[str, str] | None = None,
    label: str | None = None,
    item: str | None = None,
    text: str | None = None,
    mix: float | None = None,
    like: list[str] | None = None,
    dislike: list[str] | None = None,
    dedup: bool = False,
) -> dict[str, str]:
    """The query parameters for a view, in `PARAMS` order; empty choices are left out.

    `text` with `item` is a mix (`mix` its share, written only then)."""
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
    if text is not None:
        params["text"] = text
    if item is not None and text is not None and mix is not None:
        params["mix"] = f"{float(mix):g}"
    if like:
        params["like"] = encode_ids(like)
    if dislike:
        params["dislike"] = encode_ids(dislike)
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

"""A query that composes: a base, words mixed in, and steering by liked and disliked products.

Every model builds the query in its own space (`Searcher.search` does it per model):

1. **Base**: a catalogue product's stored vector, an uploaded image's vector, or a text's vector
   (the model's own text tower, e.g. CLIP, or its text bridge for image-only models).
2. **Words mixed in** ("this, but in red"): a product or an upload *and* a text,
       q = normalise((1 - w) * image + w * text)        w = `text_weight`, 0..1
   Both vectors are unit length, so w is the share of the words.
3. **Steering** (Rocchio relevance feedback) with liked products L and disliked products D:
       q' = normalise(a * q + b * mean(L) - c * mean(D))
   with `Steering(base=a, liked=b, disliked=c)`. With no base (steering alone, e.g. "more like
   these") q is 0. A model whose vectors are several parts side by side (a fused model) mixes
   and normalises each part on its own.

The defaults (`DEFAULT_TEXT_WEIGHT`, `DEFAULT_STEERING`) were picked by measurement on the
fashion set (`bench/bench_steering.py`, `bench/bench_mix.py`; figures in the README).

This module is pure: checks and vector arithmetic, no index and no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from embeddings.errors import QueryError

#: Longest text query accepted (characters); longer ones are refused, not truncated silently.
MAX_TEXT_CHARS = 1000
#: Most liked (and most disliked) products one query takes.
MAX_STEERING = 50
#: The share of the words in a product/upload + words query: 0.6 gave the largest share of
#: results with both the asked colour and the product's articleType, averaged over
#: efficientnet-lite0, pixels and their fusion (bench/bench_mix.py; README, "Refining a search").
DEFAULT_TEXT_WEIGHT = 0.6


@dataclass(frozen=True)
class Steering:
    """Rocchio weights: q' = base * q + liked * mean(liked) - disliked * mean(disliked).

    The defaults were picked on the fashion set by bench/bench_steering.py (README, "Refining
    a search"): over a grid of liked 0..1.5 and disliked 0..1 weights (base 1), liked 1.0 and
    disliked 0.75 gave the best mean precision@10 of a simulated shopper's steered results
    (0.280 against 0.208 unsteered, efficientnet-lite0 and pixels, 300 queries each).
    """

    base: float = 1.0
    liked: float = 1.0
    disliked: float = 0.75


DEFAULT_STEERING = Steering()


@dataclass(frozen=True)
class Query:
    """What to search for. At least one of `item`, `image`, `text`, `liked` is needed; `item`
    and `image` exclude each other (both are the picture the words are mixed into).

    `exclude_steered`: leave the liked and disliked products out of the results (the query
    product itself is always left out).
    """

    item: str | None = None
    image: Image.Image | None = None
    text: str | None = None
    text_weight: float = DEFAULT_TEXT_WEIGHT
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    exclude_steered: bool = True
    steering: Steering = DEFAULT_STEERING
    image_name: str | None = None  # what people call `image` (an upload's file name)

    @property
    def kind(self) -> str:
        """'item', 'image' or 'text': what the base is (a mix is named by its picture);
        'steering' when liked/disliked products are all there is."""
        if self.item is not None:
            return "item"
        if self.image is not None:
            return "image"
        return "text" if self.text is not None else "steering"

    @property
    def excluded(self) -> set[str]:
        """Products never returned: the query product, and the steering ones when asked."""
        out = {self.item} if self.item is not None else set()
        if self.exclude_steered:
            out |= set(self.liked) | set(self.disliked)
        return out


def check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise QueryError("the text query is empty; type a few words, e.g. 'red running shoes'")
    if len(text) > MAX_TEXT_CHARS:
        raise QueryError(
            f"the text query is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}"
        )
    return text


def check_text_weight(weight) -> float:
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise QueryError(f"the text weight must be a number from 0 to 1 (got {weight!r})") from None
    if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise QueryError(f"the text weight must be from 0 to 1 (got {weight})")
    return weight


def check_query(query: Query, known_ids) -> Query:
    """`query` with its text stripped, or a `QueryError` saying what is wrong with it.

    `known_ids` answers `id in known_ids` (the catalogue): every product named must be in it
    (messages name it when it has a `name`).
    """
    if query.item is not None and query.image is not None:
        raise QueryError(
            "a query is a product or an uploaded image, not both; words can be added to either"
        )
    if query.item is None and query.image is None and query.text is None and not query.liked:
        raise QueryError(
            "the query is empty: give a product, an image or a text (or products to search like)"
        )
    text = check_text(query.text) if query.text is not None else None
    weight = check_text_weight(query.text_weight)
    liked, disliked = _ids(query.liked, "liked"), _ids(query.disliked, "disliked")
    both = sorted(set(liked) & set(disliked))
    if both:
        raise QueryError(
            f"product(s) {', '.join(both)} are both liked and disliked; keep each on one side"
        )
    if query.item is not None and str(query.item) in set(liked) | set(disliked):
        side = "liked" if str(query.item) in liked else "disliked"
        raise QueryError(
            f"product {query.item} is the query and also {side}: steering by the query's own "
            "product changes nothing (the query is already that product); steer by other products"
        )
    name = getattr(known_ids, "name", None)
    where = f"catalogue {name!r}" if name else "this catalogue"
    for role, ids in (("query", [query.item] if query.item is not None else []), *_roles(query)):
        for item_id in ids:
            if item_id not in known_ids:
                raise QueryError(f"no product with id {item_id!r} ({role}) in {where}")
    return Query(
        item=None if query.item is None else str(query.item),
        image=query.image,
        text=text,
        text_weight=weight,
        liked=liked,
        disliked=disliked,
        exclude_steered=query.exclude_steered,
        steering=query.steering,
    )


def _roles(query: Query):
    return (("liked", query.liked), ("disliked", query.disliked))


def _ids(ids: Sequence[str], role: str) -> tuple[str, ...]:
    """Distinct ids as strings, in order; at most `MAX_STEERING`."""
    if isinstance(ids, str):
        ids = [ids]
    out = tuple(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))
    if len(out) > MAX_STEERING:
        raise QueryError(f"{len(out)} {role} products; a query takes at most {MAX_STEERING}")
    return out


# -- vector arithmetic ------------------------------------------------------------------------
def normalise_segments(vector: np.ndarray, segments: Sequence[int]) -> np.ndarray:
    """`vector` with each of its parts (widths `segments`) scaled to unit length."""
    vector = np.asarray(vector, dtype=np.float32).copy()
    start = 0
    for width in segments:
        part = vector[start : start + width]
        norm = float(np.linalg.norm(part))
        if norm > 1e-12:
            vector[start : start + width] = part / norm
        start += width
    return vector


def mix_text(
    picture: np.ndarray, text: np.ndarray, weight: float, segments: Sequence[int]
) -> np.ndarray:
    """normalise((1 - weight) * picture + weight * text), part by part."""
    picture = normalise_segments(picture, segments)
    text = normalise_segments(text, segments)
    return normalise_segments((1.0 - weight) * picture + weight * text, segments)


def steer(
    base: np.ndarray | None,
    liked: np.ndarray,
    disliked: np.ndarray,
    steering: Steering,
    segments: Sequence[int],
) -> np.ndarray:
    """Rocchio: normalise(a * base + b * mean(liked) - c * mean(disliked)), part by part.

    `liked` and `disliked` are (n, dim) stored vectors (n may be 0); `base` None counts as 0.
    """
    dim = int(sum(segments))
    total = np.zeros(dim, dtype=np.float64)
    if base is not None:
        total += steering.base * normalise_segments(base, segments)
    if len(liked):
        total += steering.liked * np.asarray(liked, dtype=np.float64).mean(axis=0)
    if len(disliked):
        total -= steering.disliked * np.asarray(disliked, dtype=np.float64).mean(axis=0)
    return normalise_segments(total.astype(np.float32), segments)

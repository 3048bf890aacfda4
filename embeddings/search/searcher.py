"""Search: ranked items with cosine scores, for one model or several side by side.

`Searcher` is the orchestrator. It is given the catalogue and loaders (callables) for a model's
index and its query encoders, so the app can cache them (`st.cache_resource`) and tests can
inject fakes. It returns data; printing is elsewhere. Every query path checks that the encoder
was made with the weights the index was built with: vectors of other weights would answer,
wrongly, without complaint.

One method answers every query, `Searcher.search(Query, models, k, filters)`: a product, an
upload or words, words mixed into a product or an upload, steered by liked and disliked
products (`embeddings.search.query`). `search_item`, `search_text` and `search_image` are thin
wrappers. A model id may be a fused one (`a+b`, `embeddings.index.fused`): its index is a
`FusedIndex` and its encoders the parts' encoders side by side.

`open_snapshot` opens a catalogue and its indexes under the catalogue's commit lock, so they
belong to the same build even while another process rebuilds the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import cache
from typing import Protocol

import numpy as np
from PIL import Image

from embeddings.catalogue import Catalogue
from embeddings.config import MANIFEST_FILE
from embeddings.errors import (
    CatalogueError,
    EmbeddingsError,
    QueryError,
)
from embeddings.index.base import ModelIndex
from embeddings.index.fused import (
    FusedEncoder,
    FusedIndex,
    fused_encoder,
    fused_parts,
    is_fused,
)
from embeddings.index.opening import built_models, open_index
from embeddings.locks import commit_lock
from embeddings.search.hits import Hit, distinct_top_k
from embeddings.search.query import (
    MAX_TEXT_CHARS,
    Query,
    check_query,
    check_text,
    mix_text,
    steer,
)

__all__ = [
    "MAX_K",
    "MAX_TEXT_CHARS",
    "Hit",
    "Query",
    "Searcher",
    "check_text",
    "make_searcher",
    "rank",
]

#: Largest k the core answers (the app's slider stops at 50).
MAX_K = 1000
#: Text queries encoded and searched together by `Searcher.search_texts`.
TEXT_BATCH = 256


class TextEncoder(Protocol):
    """Anything that maps texts into a model's image space (a text tower, or a bridge)."""

    kind: str  # "native" (the model's own text tower) or "bridge" (learnt from titles)
    weights_id: str  # the weights of the image space it maps into

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class ImageEncoder(Protocol):
    weights_id: str

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def rank(
    index: ModelIndex,
    query: np.ndarray,
    k: int,
    *,
    exclude: str | Collection[str] | None = None,
    rows: np.ndarray | None = None,
    filters: dict[str, str] | None = None,
) -> list[Hit]:
    """Top-k hits of one query vector.

    `exclude` (an item id, or several) never appears in the result. `rows` (allowed row numbers)
    restricts the ranking exactly (FAISS's id selector, not a post-filter that can run dry);
    `filters` ({label: value}) go to an index that evaluates them itself (`index.native_filters`,
    Milvus). `Searcher` works out which of the two a label filter becomes.
    """
    excluded = {exclude} if isinstance(exclude, str) else set(exclude or ())
    skip = {index.row_of[i] for i in excluded if i in index.row_of}
    if filters and index.native_filters:
        scores, found = index.search(query, k + len(skip), filters=filters)
    else:
        scores, found = index.search(query, k + len(skip), rows=rows)
    hits = [
        Hit(index.ids[row], float(score))
        for score, row in zip(scores[0], found[0], strict=True)
        if row >= 0 and row not in skip
    ]
    return hits[:k]


def rank_many(
    index: ModelIndex,
    queries: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    filters: dict[str, str] | None = None,
) -> list[list[Hit]]:
    """Top-k hits of each query vector (n, d) in one search call; `rank` for many queries."""
    if filters and index.native_filters:
        scores, found = index.search(queries, k, filters=filters)
    else:
        scores, found = index.search(queries, k, rows=rows)
    return [
        [Hit(index.ids[row], float(score)) for score, row in zip(s, f, strict=True) if row >= 0]
        for s, f in zip(scores, found, strict=True)
    ]


def check_k(k: int) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise QueryError(f"k must be a whole number (got {k!r})") from None
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K} (got {k})")
    return k


def check_encoder(model_id: str, encoder, index: ModelIndex) -> None:
    """Refuse an encoder made with other weights than the index was built with (for a fused
    model, each part's encoder against that part's index)."""
    if isinstance(index, FusedIndex) and isinstance(encoder, FusedEncoder):
        for part_id, part_encoder, part_index in zip(
            index.part_ids, encoder.parts, index.parts, strict=True
        ):
            check_encoder(part_id, part_encoder, part_index)
        return
    weights = getattr(encoder, "weights_id", None)
    if weights != index.weights_id:
        raise QueryError(
            f"model {model_id!r} is loaded with weights {weights!r} but its index was "
            f"built with {index.weights_id!r}; load the same weights or rebuild"
        )


def _stored_vectors(index: ModelIndex) -> Callable[[list[str]], np.ndarray]:
    """The stored vectors of catalogue ids, in order (what folding compares)."""
    return lambda ids: index.reconstruct_batch([index.row_of[i] for i in ids])


class Searcher:
    """Runs one query over several models of one catalogue.

    `index_loader(model_id)` returns that model's `ModelIndex`; `text_encoder_loader(model_id)`
    returns a `TextEncoder` (or raises `QueryError`), `image_encoder_loader(model_id)` an
    `ImageEncoder`. Item queries touch only the indexes (no model, no torch).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        index_loader: Callable[[str], ModelIndex],
        text_encoder_loader: Callable[[str], TextEncoder] | None = None,
        image_encoder_loader: Callable[[str], ImageEncoder] | None = None,
    ):
        self.catalogue = catalogue
        self.index_loader = index_loader
        self.text_encoder_loader = text_encoder_loader
        self.image_encoder_loader = image_encoder_loader

    def _check_filters(self, filters: dict[str, str] | None) -> dict[str, str] | None:
        """`filters` with string values, refusing fields the catalogue does not have."""
        if not filters:
            return None
        for field_name in filters:
            if field_name not in self.catalogue.label_fields:
                raise CatalogueError(
                    f"no label field {field_name!r} in catalogue {self.catalogue.name!r}; "
                    f"label fields: {', '.join(self.catalogue.label_fields) or 'none'}"
                )
        return {str(f): str(v) for f, v in filters.items()}

    def _restriction(self, index: ModelIndex, filters: dict[str, str] | None) -> dict:
        """`rank` keywords applying `filters` to `index`: the filters themselves for an index that
        evaluates them (Milvus), else the allowed row numbers."""
        if not filters:
            return {}
        if index.native_filters:
            return {"filters": filters}
        allowed = self.catalogue.ids_matching(filters)
        rows = np.fromiter((index.row_of[i] for i in allowed if i in index.row_of), dtype=np.int64)
        return {"rows": np.sort(rows)}

    def search(
        self,
        query: Query,
        models: Sequence[str],
        k: int,
        *,
        filters: dict[str, str] | None = None,
        fold: Callable[[str], float | None] | None = None,
    ) -> dict[str, list[Hit]]:
        """Top-k products per model for a composed `Query` (see `embeddings.search.query`).

        Each model builds the query in its own space: the product's stored vector or the
        upload's, the words through its text tower or text bridge, mixed with
        `query.text_weight`, then steered by the liked and disliked products' stored vectors.
        The query product (and, with `query.exclude_steered`, the steering products) never
        appear. `filters` ({label field: value}) keeps only matching products. With `fold`
        (a model id to its near-duplicate threshold, or None), each model's k results are k
        different products: near-duplicates fold into the higher-ranked hit (`Hit.folded`);
        fused models have no vectors of their own and are never folded.
        """
        k = check_k(k)
        filters = self._check_filters(filters)
        query = check_query(query, self.catalogue)
        results = {}
        for model_id in models:
            index = self.index_loader(model_id)
            vector = self.query_vector(query, model_id, index)
            restriction = self._restriction(index, filters)

            def top(n: int, index=index, vector=vector, restriction=restriction) -> list[Hit]:
                return rank(index, vector, n, exclude=query.excluded, **restriction)

            threshold = None if fold is None or is_fused(model_id) else fold(model_id)
            if threshold is None:
                results[model_id] = top(k)
            else:
                results[model_id] = distinct_top_k(
                    top, _stored_vectors(index), k, threshold, most=MAX_K
                )
        return results

    def query_vector(self, query: Query, model_id: str, index: ModelIndex) -> np.ndarray:
        """`query` (already checked) as one vector in `model_id`'s space."""
        segments = index.segments
        if query.item is not None:
            base = self._stored(model_id, index, [query.item], "query")[0]
        elif query.image is not None:
            encoder = self._image_encoder(model_id)
            check_encoder(model_id, encoder, index)
            base = encoder.encode_images([query.image])[0]
        else:
            base = None
        if query.text is not None:
            encoder = self._text_encoder(model_id)
            check_encoder(model_id, encoder, index)
            words = encoder.encode_texts([query.text])[0]
            base = words if base is None else mix_text(base, words, query.text_weight, segments)
        if not (query.liked or query.disliked):
            return base
        return steer(
            base,
            self._stored(model_id, index, query.liked, "liked"),
            self._stored(model_id, index, query.disliked, "disliked"),
            query.steering,
            segments,
        )

    def _stored(
        self, model_id: str, index: ModelIndex, ids: Sequence[str], role: str
    ) -> np.ndarray:
        """The stored vectors of catalogue products; a `QueryError` for one without a vector."""
        for item_id in ids:
            if item_id not in index.row_of:
                what = "product" if role == "query" else f"{role} product"
                raise QueryError(
                    f"{what} {item_id!r} has no {model_id!r} vector (its image could not "
                    "be read when the index was built)"
                )
        if not ids:
            return np.zeros((0, index.dim), dtype=np.float32)
        return index.reconstruct_batch([index.row_of[i] for i in ids])

    def _text_encoder(self, model_id: str) -> TextEncoder:
        if self.text_encoder_loader is None:
            raise QueryError("text search is not available here")
        if is_fused(model_id):
            return fused_encoder(model_id, self.text_encoder_loader)
        return self.text_encoder_loader(model_id)

    def _image_encoder(self, model_id: str) -> ImageEncoder:
        if self.image_encoder_loader is None:
            raise QueryError("image search is not available here")
        if is_fused(model_id):
            return fused_encoder(model_id, self.image_encoder_loader)
        return self.image_encoder_loader(model_id)

    # The three plain queries, as the app, the CLI, tests and benchmarks call them.
    def search_item(
        self, item_id: str, models: Sequence[str], k: int, *, filters: dict[str, str] | None = None
    ) -> dict[str, list[Hit]]:
        """Products most like catalogue item `item_id`, per model; the item itself is excluded.

        `filters` ({label field: value}) keeps only matching products, in every method here.
        """
        if item_id not in self.catalogue:  # checked first: the message names the catalogue
            raise QueryError(f"no product with id {item_id!r} in catalogue {self.catalogue.name!r}")
        return self.search(Query(item=item_id), models, k, filters=filters)

    def search_text(
        self, text: str, models: Sequence[str], k: int, *, filters: dict[str, str] | None = None
    ) -> dict[str, list[Hit]]:
        """Text-to-image per model (native text tower or text bridge)."""
        return self.search(Query(text=text), models, k, filters=filters)

    def search_texts(
        self,
        texts: Sequence[str],
        models: Sequence[str],
        k: int,
        *,
        filters: dict[str, str] | None = None,
        batch_size: int = TEXT_BATCH,
    ) -> list[dict[str, list[Hit]]]:
        """Many text queries at once: one {model: hits} per text, in order.

        The same answers as `search_text` for each text, but each model's encoder is loaded
        once and the texts are encoded and searched `batch_size` at a time. Every text is checked
        before any work is done.
        """
        k, texts = check_k(k), [check_text(t) for t in texts]
        filters = self._check_filters(filters)
        if self.text_encoder_loader is None:
            raise QueryError("text search is not available here")
        results: list[dict[str, list[Hit]]] = [{} for _ in texts]
        for model_id in models:
            encoder, index = self.text_encoder_loader(model_id), self.index_loader(model_id)
            check_encoder(model_id, encoder, index)
            restriction = self._restriction(index, filters)
            for start in range(0, len(texts), batch_size):
                vectors = encoder.encode_texts(texts[start : start + batch_size])
                for offset, hits in enumerate(rank_many(index, vectors, k, **restriction)):
                    results[start + offset][model_id] = hits
        return results

    def search_image(
        self,
        image: Image.Image,
        models: Sequence[str],
        k: int,
        *,
        filters: dict[str, str] | None = None,
    ) -> dict[str, list[Hit]]:
        """Image-to-image per model for an image from outside the catalogue (an upload)."""
        return self.search(Query(image=image), models, k, filters=filters)


def fused_text_kind(model_id: str, capable: dict[str, str]) -> str | None:
    """How a model answers text given `capable` (from `text_capable_models`): a fused model
    answers when every part does, 'bridge' when any part needs its bridge; None: it cannot."""
    kinds = [capable.get(part) for part in fused_parts(model_id)]
    if None in kinds:
        return None
    return "bridge" if "bridge" in kinds else "native"


def text_capable_models(catalogue: Catalogue, built: Sequence[str] | None = None) -> dict[str, str]:
    """Built models that can answer text in this catalogue: id -> 'native' or 'bridge'
    (`built`: the catalogue's `built_models`, when the caller has listed them already)."""
    from embeddings.models import get_spec

    capable = {}
    for model_id in built_models(catalogue) if built is None else built:
        try:
            spec = get_spec(model_id)
        except EmbeddingsError:
            continue
        if spec.has_text:
            capable[model_id] = "native"
        elif _bridge_is_usable(catalogue, model_id):
            capable[model_id] = "bridge"
    return capable


def _bridge_is_usable(catalogue: Catalogue, model_id: str) -> bool:
    """A bridge exists and maps into the space of the model's current index."""
    from embeddings.bridge import check_bridge_manifest, read_bridge_manifest

    manifest = read_bridge_manifest(catalogue.bridge_dir(model_id))
    if manifest is None:
        return False
    try:
        check_bridge_manifest(manifest, catalogue=catalogue, model_id=model_id)
    except EmbeddingsError:
        return False
    return True


class NativeText:
    """A model's own text tower as a `TextEncoder`."""

    kind = "native"

    def __init__(self, embedder):
        self._embedder = embedder
        self.weights_id = embedder.weights_id

    def encode_texts(self, texts):
        return self._embedder.encode_texts(texts)


def default_text_encoder(
    catalogue: Catalogue, model_id: str, load_embedder: Callable[[str], object]
) -> TextEncoder:
    """The model's own text tower when it has one, else its text bridge, else a `QueryError`.

    For a fused model, its parts' encoders side by side."""
    from embeddings.models import get_spec

    if is_fused(model_id):
        return fused_encoder(
            model_id, lambda part: default_text_encoder(catalogue, part, load_embedder)
        )

    if get_spec(model_id).has_text:
        return NativeText(load_embedder(model_id))
    bridge_dir = catalogue.bridge_dir(model_id)
    with commit_lock(catalogue.directory):  # a build may be swapping a new bridge in
        if (bridge_dir / MANIFEST_FILE).is_file():
            from embeddings.bridge import load_bridge

            return load_bridge(bridge_dir, catalogue=catalogue, model_id=model_id)
    capable = text_capable_models(catalogue)
    names = ", ".join(f"{m} ({kind})" for m, kind in capable.items()) or "none yet"
    raise QueryError(
        f"model {model_id!r} cannot take text queries in this catalogue (no text tower and no "
        f"text bridge); models that can: {names}. Train a bridge with "
        f"`python -m embeddings bridge --catalog {catalogue.directory} --models {model_id}`."
    )


def make_searcher(
    catalogue: Catalogue,
    *,
    model_options: dict[str, dict] | None = None,
    indexes: dict[str, ModelIndex | EmbeddingsError] | None = None,
) -> Searcher:
    """A `Searcher` with plain per-process caches (the CLI's; the app wraps its own).

    `indexes` (from `open_snapshot`) are used as they are; other models open on first use.
    """
    from embeddings.models import load_model

    model_options = model_options or {}
    opened = dict(indexes or {})

    @cache
    def load_embedder(model_id: str):
        return load_model(model_id, **model_options.get(model_id, {}))

    @cache
    def load_index(model_id: str) -> ModelIndex:
        found = opened.get(model_id)
        if isinstance(found, EmbeddingsError):
            raise found
        if found is None and is_fused(model_id):  # its parts from the snapshot, or opened now
            return FusedIndex(model_id, [load_index(p) for p in fused_parts(model_id)])
        return found if found is not None else open_index(catalogue, model_id)

    @cache
    def load_text(model_id: str) -> TextEncoder:
        return default_text_encoder(catalogue, model_id, load_embedder)

    return Searcher(catalogue, load_index, load_text, load_embedder)

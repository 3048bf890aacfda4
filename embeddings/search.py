"""Search: ranked items with cosine scores, for one model or several side by side.

`Searcher` is the orchestrator. It is given the catalogue and two loaders (callables), one
for a model's index and one for its query encoders, so the app can cache them
(`st.cache_resource`) and tests can inject fakes. It returns data; printing is elsewhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import numpy as np
from PIL import Image

from embeddings.catalog import Catalogue
from embeddings.errors import CatalogueError, EmbeddingsError, QueryError
from embeddings.index import ModelIndex, load_model_index, read_manifest

#: Longest text query accepted (characters); longer ones are refused, not truncated silently.
MAX_TEXT_CHARS = 1000
MAX_K = 1000


@dataclass(frozen=True)
class Hit:
    """One result: a catalogue id and its cosine similarity to the query."""

    id: str
    score: float


class TextEncoder(Protocol):
    """Anything that maps texts into a model's image space (a text tower, or a bridge)."""

    kind: str  # "native" (the model's own text tower) or "bridge" (learnt from titles)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class ImageEncoder(Protocol):
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def rank(index: ModelIndex, query: np.ndarray, k: int, *, exclude: str | None = None,
         allowed: set[str] | None = None, rows: np.ndarray | None = None,
         filters: dict[str, str] | None = None) -> list[Hit]:
    """Top-k hits of one query vector.

    `exclude` (an item id) never appears in the result; with `allowed` (a set of ids) only
    those items are ranked, exactly (FAISS's id selector, not a post-filter that can run dry).
    `rows` (the allowed row numbers) does the same without mapping ids. `filters` ({label:
    value}) are passed to an index that evaluates them itself (`index.native_filters`, Milvus);
    other indexes need `allowed` or `rows` (`Searcher` works out which).
    """
    extra = 1 if exclude is not None and exclude in index.row_of else 0
    if filters and getattr(index, "native_filters", False):
        scores, found = index.search(query, k + extra, filters=filters)
    else:
        if rows is None and allowed is not None:
            rows = np.fromiter((index.row_of[i] for i in allowed if i in index.row_of), dtype=np.int64)
        scores, found = index.search(query, k + extra, rows=rows)
    skip = index.row_of.get(exclude, -2) if exclude is not None else -2
    hits = [Hit(index.ids[row], float(score)) for score, row in zip(scores[0], found[0], strict=True)
            if row >= 0 and row != skip]
    return hits[:k]


def built_models(catalogue: Catalogue) -> list[str]:
    """Ids of the models with an index in this catalogue (whatever its state), sorted."""
    models_dir = catalogue.directory / "models"
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and "." not in p.name
                  and read_manifest(p) is not None)


def check_k(k: int) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise QueryError(f"k must be a whole number (got {k!r})") from None
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K} (got {k})")
    return k


def check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise QueryError("the text query is empty; type a few words, e.g. 'red running shoes'")
    if len(text) > MAX_TEXT_CHARS:
        raise QueryError(f"the text query is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}")
    return text


class Searcher:
    """Runs one query over several models of one catalogue.

    `index_loader(model_id)` returns that model's `ModelIndex`; `text_encoder_loader(model_id)`
    returns a `TextEncoder` (or raises `QueryError`), `image_encoder_loader(model_id)` an
    `ImageEncoder`. Item queries touch only the indexes (no model, no torch).
    """

    def __init__(self, catalogue: Catalogue, index_loader: Callable[[str], ModelIndex],
                 text_encoder_loader: Callable[[str], TextEncoder] | None = None,
                 image_encoder_loader: Callable[[str], ImageEncoder] | None = None):
        self.catalogue = catalogue
        self.index_loader = index_loader
        self.text_encoder_loader = text_encoder_loader
        self.image_encoder_loader = image_encoder_loader
        # (index identity, filters) -> allowed row numbers: a label filter costs a pandas scan
        # and an id->row mapping, so repeated queries under one filter reuse the result.
        self._filter_rows: dict[tuple, np.ndarray] = {}
        self._filter_lock = threading.Lock()

    def _check_filters(self, filters: dict[str, str] | None) -> dict[str, str] | None:
        """`filters` with string values, refusing fields the catalogue does not have."""
        if not filters:
            return None
        for field_name in filters:
            if field_name not in self.catalogue.items.columns or field_name in ("id", "path"):
                raise CatalogueError(f"no label field {field_name!r} in catalogue {self.catalogue.name!r}; "
                                     f"label fields: {', '.join(self.catalogue.label_fields) or 'none'}")
        return {str(f): str(v) for f, v in filters.items()}

    def _restriction(self, index: ModelIndex, filters: dict[str, str] | None) -> dict:
        """`rank` keywords applying `filters` to `index`: the filters themselves for an index that
        evaluates them (Milvus), else the allowed row numbers (cached per index and filter)."""
        if not filters:
            return {}
        if getattr(index, "native_filters", False):
            return {"filters": filters}
        key = (index.model_id, index.manifest.get("built_at"), len(index), tuple(sorted(filters.items())))
        with self._filter_lock:
            rows = self._filter_rows.get(key)
        if rows is None:
            allowed = self.catalogue.rows_matching(filters)
            rows = np.sort(np.fromiter((index.row_of[i] for i in allowed if i in index.row_of), dtype=np.int64))
            with self._filter_lock:
                if len(self._filter_rows) >= 64:
                    self._filter_rows.pop(next(iter(self._filter_rows)))
                self._filter_rows[key] = rows
        return {"rows": rows}

    def search_item(self, item_id: str, models: Sequence[str], k: int, *,
                    filters: dict[str, str] | None = None) -> dict[str, list[Hit]]:
        """Products most like catalogue item `item_id`, per model; the item itself is excluded.

        `filters` ({label field: value}) keeps only matching products, in every method here.
        """
        k = check_k(k)
        filters = self._check_filters(filters)
        if item_id not in self.catalogue:
            raise QueryError(f"no product with id {item_id!r} in catalogue {self.catalogue.name!r}")
        results = {}
        for model_id in models:
            index = self.index_loader(model_id)
            if item_id not in index.row_of:
                raise QueryError(f"product {item_id!r} has no {model_id!r} vector (its image could not "
                                 "be read when the index was built)")
            results[model_id] = rank(index, index.vector(item_id), k, exclude=item_id,
                                     **self._restriction(index, filters))
        return results

    def search_text(self, text: str, models: Sequence[str], k: int, *,
                    filters: dict[str, str] | None = None) -> dict[str, list[Hit]]:
        """Text-to-image per model (native text tower or text bridge)."""
        k, text = check_k(k), check_text(text)
        filters = self._check_filters(filters)
        if self.text_encoder_loader is None:
            raise QueryError("text search is not available here")
        results = {}
        for model_id in models:
            encoder, index = self.text_encoder_loader(model_id), self.index_loader(model_id)
            results[model_id] = rank(index, encoder.encode_texts([text])[0], k, **self._restriction(index, filters))
        return results

    def search_image(self, image: Image.Image, models: Sequence[str], k: int, *,
                     filters: dict[str, str] | None = None) -> dict[str, list[Hit]]:
        """Image-to-image per model for an image from outside the catalogue (an upload)."""
        k = check_k(k)
        filters = self._check_filters(filters)
        if self.image_encoder_loader is None:
            raise QueryError("image search is not available here")
        results = {}
        for model_id in models:
            encoder, index = self.image_encoder_loader(model_id), self.index_loader(model_id)
            weights = getattr(encoder, "weights_id", None)
            if weights is not None and weights != index.weights_id:
                raise QueryError(f"model {model_id!r} is loaded with weights {weights!r} but its index was "
                                 f"built with {index.weights_id!r}; load the same weights or rebuild")
            results[model_id] = rank(index, encoder.encode_images([image])[0], k, **self._restriction(index, filters))
        return results


def open_index(catalogue: Catalogue, model_id: str, *, mmap: bool = True) -> ModelIndex:
    """Load and validate a model's index in a catalogue, on the backend its build recorded.

    A FAISS index is memory-mapped by default (`mmap`): opening costs no copy of the vectors,
    pages come in on first use and stay shared with the page cache (measured: scans as fast as
    from a private copy). A Milvus build returns a `MilvusIndex` connected to its collection.
    """
    manifest = read_manifest(catalogue.model_dir(model_id)) or {}
    backend = " --backend milvus" if manifest.get("backend") == "milvus" else ""
    return load_model_index(
        catalogue.model_dir(model_id), catalogue_fingerprint=catalogue.fingerprint, model_id=model_id,
        mmap=mmap, rebuild_hint=(f"rebuild it: python -m embeddings build --source {catalogue.info.get('source')} "
                                 f"--out {catalogue.directory} --models {model_id}{backend}"))


def text_capable_models(catalogue: Catalogue) -> dict[str, str]:
    """Built models that can answer text in this catalogue: id -> 'native' or 'bridge'."""
    from embeddings.models import get_spec

    capable = {}
    for model_id in built_models(catalogue):
        try:
            spec = get_spec(model_id)
        except EmbeddingsError:
            continue
        if spec.has_text:
            capable[model_id] = "native"
        elif _bridge_is_current(catalogue, model_id):
            capable[model_id] = "bridge"
    return capable


def _bridge_is_current(catalogue: Catalogue, model_id: str) -> bool:
    """A bridge exists and matches the model's current index (a stale one cannot answer)."""
    from embeddings.bridge import check_bridge_manifest, read_bridge_manifest

    manifest = read_bridge_manifest(catalogue.bridge_dir(model_id))
    if manifest is None:
        return False
    try:
        check_bridge_manifest(manifest, catalogue=catalogue, model_id=model_id)
    except EmbeddingsError:
        return False
    return True


class _NativeText:
    kind = "native"

    def __init__(self, embedder):
        self._embedder = embedder

    def encode_texts(self, texts):
        return self._embedder.encode_texts(texts)


def default_text_encoder(catalogue: Catalogue, model_id: str, load_embedder: Callable[[str], object]) -> TextEncoder:
    """The model's own text tower when it has one, else its text bridge, else a `QueryError`."""
    from embeddings.models import get_spec

    if get_spec(model_id).has_text:
        return _NativeText(load_embedder(model_id))
    bridge_dir = catalogue.bridge_dir(model_id)
    if (bridge_dir / "manifest.json").is_file():
        from embeddings.bridge import load_bridge

        return load_bridge(bridge_dir, catalogue=catalogue, model_id=model_id)
    capable = text_capable_models(catalogue)
    names = ", ".join(f"{m} ({kind})" for m, kind in capable.items()) or "none yet"
    raise QueryError(f"model {model_id!r} cannot take text queries in this catalogue (no text tower and no "
                     f"text bridge); models that can: {names}. Build a bridge with "
                     f"`python -m embeddings build ... --models {model_id} --bridge`.")


def make_searcher(catalogue: Catalogue, *, model_options: dict[str, dict] | None = None) -> Searcher:
    """A `Searcher` with plain per-process caches (the CLI's; the app wraps its own)."""
    from embeddings.models import load_model

    model_options = model_options or {}

    @cache
    def load_embedder(model_id: str):
        return load_model(model_id, **model_options.get(model_id, {}))

    @cache
    def load_index(model_id: str) -> ModelIndex:
        return open_index(catalogue, model_id)

    @cache
    def load_text(model_id: str) -> TextEncoder:
        return default_text_encoder(catalogue, model_id, load_embedder)

    return Searcher(catalogue, load_index, load_text, load_embedder)

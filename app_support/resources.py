"""What the app loads once per process: catalogues, indexes, models and text encoders.

Everything here is behind `st.cache_resource`, keyed by what makes it valid (the catalogue's
folder and fingerprint, the index manifest's modification time, the model's weights), so a
rerun reuses it and a rebuild from the Catalogue page is picked up without a restart. Nothing
returned from these caches is mutated: a `Catalogue` and a `ModelIndex` are read-only, and the
encoders are used through a lock (one query at a time per model, so one session's batch never
waits behind another's on a few cores).

Serving imports no torch: indexes load with FAISS alone, and a model's ONNX export is loaded
(ONNX Runtime, `embeddings.models.onnx_loader`) only for a text or upload query.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from embeddings.bundle.open import BUNDLE_ENV, SHA256_ENV, OpenedBundle, open_bundle
from embeddings.catalogue import Catalogue
from embeddings.catalogue.base import CATALOG_FILE, ITEMS_FILE
from embeddings.config import MANIFEST_FILE, list_catalogue_dirs
from embeddings.index import opening
from embeddings.index.fused import FusedIndex, fused_parts, is_fused
from embeddings.index.store import ModelIndex
from embeddings.models.onnx_cache import add_read_only_home
from embeddings.search import searcher as core_search
from embeddings.search.searcher import Searcher

#: `EMBEDDINGS_WEIGHTS="clip=/models/clip,resnet50=/models/r50.pth"`: local weights per model,
#: like the CLI's `--weights MODEL=PATH` (CLIP also reads `EMBEDDINGS_CLIP_MODEL`).
WEIGHTS_ENV = "EMBEDDINGS_WEIGHTS"


#: `EMBEDDINGS_READ_ONLY=1`: a public deployment that only serves pre-built catalogues (no
#: building from server folders on the Catalogue page, no evaluation written by the Compare page).
READ_ONLY_ENV = "EMBEDDINGS_READ_ONLY"


def read_only() -> bool:
    """No building or measuring here: `EMBEDDINGS_READ_ONLY=1`, or a published bundle is served."""
    flagged = os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes")
    return flagged or bool(os.environ.get(BUNDLE_ENV, "").strip())


# -- a published bundle (`EMBEDDINGS_BUNDLE`) ---------------------------------------------------
# Opened once per process. Not an `st.cache_resource`: the first opening downloads and unpacks,
# and draws its progress on the page of the session that triggered it, which a cached function
# must not do; later sessions wait on the lock, then share the result (an immutable value).
_bundle_lock = threading.Lock()
_bundles: dict[str, OpenedBundle] = {}


def bundle_source() -> str:
    return os.environ.get(BUNDLE_ENV, "").strip()


def opened_bundle() -> OpenedBundle | None:
    """The bundle this process serves, if it is open already (else None)."""
    return _bundles.get(bundle_source())


def open_served_bundle(progress=None) -> OpenedBundle:
    """Open (download, check, unpack) the bundle named by `EMBEDDINGS_BUNDLE`, once per process.

    Raises `BundleError`; a failed opening is not remembered, so a later session tries again.
    """
    source = bundle_source()
    with _bundle_lock:
        if source not in _bundles:
            opened = open_bundle(
                source, expected_sha256=os.environ.get(SHA256_ENV), progress=progress
            )
            # Text and upload queries find the bundle's ONNX encoders before the models cache.
            add_read_only_home(opened.encoders_dir)
            _bundles[source] = opened
        return _bundles[source]


def catalogue_dirs() -> dict[str, Path]:
    """Catalogue name -> folder: the served bundle's, else every catalogue in the data folder."""
    served = opened_bundle()
    if served is not None:
        return {served.name: served.folder}
    return {path.name: path for path in list_catalogue_dirs()}


def _stamp(*paths: Path) -> int:
    """A number that changes when any of the files is replaced (0 for a missing file)."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_mtime_ns
    return total


@st.cache_resource(max_entries=16, show_spinner=False)
def _open_catalogue(directory: str, stamp: int) -> Catalogue:
    return Catalogue.open(directory)


def catalogue(directory: str | Path) -> Catalogue:
    """The catalogue in `directory`, opened once (and again after it is rebuilt)."""
    directory = Path(directory)
    return _open_catalogue(str(directory), _stamp(directory / CATALOG_FILE, directory / ITEMS_FILE))


class ProductTable:
    """Fast per-product lookups (title, labels) for one catalogue: a pandas `.loc` row costs
    ~0.1 ms and a page shows ~50 products per rerun; this costs about a microsecond.

    Read-only after construction: the column arrays are never written.
    """

    def __init__(self, cat: Catalogue):
        self.fields = ["title", *cat.label_fields]
        self._position = {item_id: row for row, item_id in enumerate(cat.items.index)}
        self._columns = {name: cat.items[name].to_numpy(dtype=object) for name in self.fields}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._position

    def get(self, item_id: str, field_name: str) -> str:
        """A product's value of `field_name` ("" when the product or the field is unknown)."""
        row = self._position.get(item_id)
        column = self._columns.get(field_name)
        return "" if row is None or column is None else str(column[row])

    def title(self, item_id: str) -> str:
        return self.get(item_id, "title")

    def labels(self, item_id: str) -> dict[str, str]:
        """The product's non-empty labels, in the catalogue's field order."""
        values = {name: self.get(item_id, name) for name in self.fields[1:]}
        return {name: value for name, value in values.items() if value}


@st.cache_resource(max_entries=16, show_spinner=False)
def _product_table(directory: str, stamp: int) -> ProductTable:
    return ProductTable(catalogue(directory))


def products(cat: Catalogue) -> ProductTable:
    """The `ProductTable` of `cat`, built once per process and per version of the catalogue."""
    return _product_table(
        str(cat.directory), _stamp(cat.directory / CATALOG_FILE, cat.directory / ITEMS_FILE)
    )


@st.cache_resource(max_entries=32, show_spinner="Loading the index…")
def _open_index(directory: str, fingerprint: str, model_id: str, stamp: int) -> ModelIndex:
    return opening.open_index(catalogue(directory), model_id)


@st.cache_resource(max_entries=16, show_spinner=False)
def _fused_index(directory: str, fingerprint: str, model_id: str, stamp: int) -> FusedIndex:
    cat = catalogue(directory)
    return FusedIndex(model_id, [index(cat, part) for part in fused_parts(model_id)])


def index(cat: Catalogue, model_id: str) -> ModelIndex:
    """A model's index in `cat`, loaded once per process and per build of the index; a fused
    model's (`a+b`) over its parts' cached indexes."""
    if is_fused(model_id):
        stamp = _stamp(*(cat.model_dir(p) / MANIFEST_FILE for p in fused_parts(model_id)))
        return _fused_index(str(cat.directory), cat.fingerprint, model_id, stamp)
    return _open_index(
        str(cat.directory),
        cat.fingerprint,
        model_id,
        _stamp(cat.model_dir(model_id) / MANIFEST_FILE),
    )


def weights_options() -> dict[str, dict]:
    """`$EMBEDDINGS_WEIGHTS` as `load_model` options: {model id: {"weights": path}}."""
    options = {}
    for pair in os.environ.get(WEIGHTS_ENV, "").split(","):
        model_id, sep, path = pair.partition("=")
        if sep and model_id.strip() and path.strip():
            options[model_id.strip()] = {"weights": path.strip()}
    return options


class LockedEncoder:
    """An embedder or text encoder that serves one call at a time (shared by all sessions)."""

    def __init__(self, encoder, kind: str | None = None):
        self._encoder = encoder
        self._lock = threading.Lock()
        self.kind = kind or getattr(encoder, "kind", "native")
        self.weights_id = getattr(encoder, "weights_id", None)

    def encode_images(self, images: Sequence) -> np.ndarray:
        with self._lock:
            return self._encoder.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._encoder.encode_texts(texts)


@st.cache_resource(max_entries=8, show_spinner="Loading the model's weights (once per server)…")
def _load_embedder(model_id: str, weights: str | None) -> LockedEncoder:
    from embeddings.models import load_model

    return LockedEncoder(load_model(model_id, **({"weights": weights} if weights else {})))


def embedder(model_id: str) -> LockedEncoder:
    """A model's image embedder (with its text tower, if any), loaded once per process."""
    weights = weights_options().get(model_id, {}).get("weights")
    return _load_embedder(model_id, weights)


@st.cache_resource(max_entries=16, show_spinner="Loading the text encoder (once per server)…")
def _load_text_encoder(
    directory: str, fingerprint: str, model_id: str, stamp: int
) -> LockedEncoder:
    encoder = core_search.default_text_encoder(
        catalogue(directory), model_id, lambda m: embedder(m)
    )
    return LockedEncoder(encoder)


def text_encoder(cat: Catalogue, model_id: str) -> LockedEncoder:
    """What turns a text into `model_id`'s image space: its text tower, or its text bridge."""
    return _load_text_encoder(
        str(cat.directory),
        cat.fingerprint,
        model_id,
        _stamp(cat.bridge_dir(model_id) / MANIFEST_FILE, cat.model_dir(model_id) / MANIFEST_FILE),
    )


def searcher(cat: Catalogue) -> Searcher:
    """A `Searcher` over the cached loaders (cheap: build one per run)."""
    return Searcher(cat, lambda m: index(cat, m), lambda m: text_encoder(cat, m), embedder)


@st.cache_data(max_entries=64, show_spinner=False)
def _listing(directory: str, fingerprint: str, stamp: int) -> tuple[list[str], dict[str, str]]:
    cat = catalogue(directory)
    built = opening.built_models(cat)
    return built, core_search.text_capable_models(cat, built)


def _listed(cat: Catalogue) -> tuple[list[str], dict[str, str]]:
    """(built models, text-capable ones), read once per change of the catalogue's models or
    bridges: a build swaps whole folders in, which changes the folders' modification times."""
    stamp = _stamp(cat.directory / "models", cat.directory / "bridges")
    return _listing(str(cat.directory), cat.fingerprint, stamp)


def text_capable(cat: Catalogue) -> dict[str, str]:
    """Built models that answer text here: id -> 'native' or 'bridge'."""
    return _listed(cat)[1]


def built_models(cat: Catalogue) -> list[str]:
    """Ids of the models with an index in this catalogue, sorted."""
    return _listed(cat)[0]

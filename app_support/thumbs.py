"""Product thumbnails as `data:` URIs, for the tile grids and the query card.

Small web images (the fashion set's 60x80 JPEGs) are sent as their own bytes, without decoding;
anything larger, or in a format browsers may not show, is decoded safely (`open_rgb`) and shrunk
to a JPEG. An unreadable image becomes a grey placeholder, never an error.

Thumbnails are cached per process, keyed by catalogue folder, fingerprint and item, in a small
LRU rather than `st.cache_data`: a page asks for up to ~50 per rerun, and `st.cache_data` costs
about 0.2 ms per hit (it hashes the arguments and unpickles a copy) where the LRU costs a
microsecond. The values are immutable strings, shared safely by all sessions. A catalogue whose
products change gets a new fingerprint, hence new keys.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from embeddings.errors import EmbeddingsError
from embeddings.images import open_rgb

#: Longest side of a thumbnail, in pixels (tiles show them at about 100-150 CSS pixels).
THUMB_SIZE = 200
#: Files up to this size in a web format are sent as they are.
PASS_THROUGH_BYTES = 48_000
WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}

PLACEHOLDER = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="60" height="80" viewBox="0 0 60 80">'
        b'<rect width="60" height="80" fill="#e5e7eb"/><path d="M18 52l9-12 7 9 5-6 8 9z" '
        b'fill="#9ca3af"/>'
        b"</svg>"
    ).decode()
)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_data_uri(data: bytes, *, size: int = THUMB_SIZE) -> str:
    """A data URI for an image file's bytes: as is when small and web-ready, else a JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            mime = WEB_FORMATS.get(probe.format or "")
            upright = not probe.getexif().get(0x0112)  # no EXIF rotation to apply
            fits = max(probe.size) <= size
    except Exception:  # not an image at all: let open_rgb say so below
        mime, upright, fits = None, False, False
    if mime and upright and fits and len(data) <= PASS_THROUGH_BYTES:
        return _data_uri(data, mime)
    image = open_rgb(data, name="thumbnail")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return _data_uri(buffer.getvalue(), "image/jpeg")


def item_thumbnail(image_path: str | Path, size: int = THUMB_SIZE) -> str:
    """The data URI of an image file (a placeholder when it is missing or broken); not cached."""
    try:
        return image_data_uri(Path(image_path).read_bytes(), size=size)
    except (OSError, EmbeddingsError):
        return PLACEHOLDER


_cache: OrderedDict[tuple[str, str, str, int], str] = OrderedDict()
_cache_lock = threading.Lock()
MAX_CACHED = 20_000


def thumbnail(catalogue, item_id: str, size: int = THUMB_SIZE) -> str:
    """The thumbnail of a catalogue item, cached per process (see the module docstring)."""
    key = (str(catalogue.directory), catalogue.fingerprint, item_id, size)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    try:
        uri = item_thumbnail(catalogue.image_path(item_id), size)
    except (KeyError, EmbeddingsError):
        uri = PLACEHOLDER
    with _cache_lock:
        _cache[key] = uri
        if len(_cache) > MAX_CACHED:
            _cache.popitem(last=False)
    return uri

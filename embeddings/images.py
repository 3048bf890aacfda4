"""Decoding images safely into RGB.

Every image the project reads (catalogue files and uploads) goes through `open_rgb`. It turns
the odd modes real catalogues contain (CMYK, 16-bit, palette, alpha, greyscale, EXIF rotation,
animated GIF) into plain 8-bit RGB, and turns everything it cannot read (not an image, zero
bytes, truncated, a decompression bomb) into an `ImageError` that names the file.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from embeddings.errors import ImageError

#: Largest image accepted, in pixels (width x height): 64 MP covers any camera photo and keeps a
#: single decoded image under ~200 MB. Larger images are refused before their pixels are decoded.
MAX_IMAGE_PIXELS = 64_000_000

#: Pillow's own guard stays on: it refuses above this from the header alone (a warning, which
#: `open_rgb` turns into an error) and above twice this outright. `open_rgb` words both as ours.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Truncated files must fail loudly, not decode as grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Background that transparent pixels are composited onto (product photos are shot on white).
BACKGROUND = (255, 255, 255)


def open_rgb(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode `source` (a path or the bytes of a file) into an 8-bit RGB image, upright.

    `name` is what error messages call the image (defaults to the path). Raises `ImageError`
    for anything that is not a decodable image of at most `max_pixels` pixels; an image over
    the limit is refused from its header, before its pixels are decoded, with a message that
    names the limit (whichever of ours or Pillow's own guard notices it first).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    stream = _open_stream(source, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(_too_large(label, f"{width}x{height} pixels", max_pixels))
                if width < 1 or height < 1:
                    raise ImageError(f"{label}: the image has no pixels ({width}x{height}).")
                if getattr(image, "is_animated", False):
                    image.seek(0)  # the first frame stands for an animation
                image.load()
                return to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"{label}: not an image Pillow can read (is it a JPEG, PNG, WebP or GIF?)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_too_large(label, _pillow_pixel_count(exc), max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label}: the image is damaged or truncated ({exc}).") from None
    finally:
        stream.close()


def _open_stream(source: str | os.PathLike | bytes, label: str) -> io.BufferedIOBase:
    """A binary stream over `source`; `ImageError` for empty input, a folder or a missing file."""
    if isinstance(source, bytes):
        if not source:
            raise ImageError(
                f"{label}: the file is empty (0 bytes); upload a JPEG, PNG, WebP or GIF image."
            )
        return io.BytesIO(source)
    path = Path(source)
    if path.is_dir():
        raise ImageError(
            f"{label}: is a folder, not an image; pass the path of an image file "
            "(JPEG, PNG, WebP or GIF)."
        )
    if not path.is_file():
        raise ImageError(f"{label}: no such file; check the path or rebuild the catalogue.")
    if path.stat().st_size == 0:
        raise ImageError(f"{label}: the file is empty (0 bytes); replace it with a real image.")
    try:
        return path.open("rb")
    except OSError as exc:
        raise ImageError(
            f"{label}: cannot be opened ({exc.strerror or exc}); check its permissions."
        ) from None


def _too_large(label: str, size: str, max_pixels: int) -> str:
    """The message for an image over the pixel limit (the smaller of ours and Pillow's guard)."""
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    return (
        f"{label}: {size} is larger than the {limit:,}-pixel limit (a possible decompression "
        "bomb); resize it first."
    )


def _pillow_pixel_count(exc: Exception) -> str:
    """'N pixels' from Pillow's decompression-bomb message, or a vaguer phrase if it changes."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else "the image"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to upright 8-bit RGB (alpha over white)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image.copy() if image.readonly else image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_grey_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK (Pillow undoes Adobe's inverted CMYK JPEGs while decoding), L, 1, YCbCr, LAB, HSV.
    return image.convert("RGB")


def _high_depth_grey_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit greyscale to 8-bit RGB by scaling, not clipping (which turns it white)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:
        top = 65535.0 if values.size and values.max() > 255 else 255.0
    scaled = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")

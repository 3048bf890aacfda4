"""Image preprocessing in numpy and PIL alone, as an export's `preprocess.json` describes it.

Two recipes, each the one its torch path uses (so ONNX and torch see the same pixels):

- `pad_square` (the CNNs): pad to a white square, resize to `size` (bilinear), divide by 255,
  subtract `mean` and divide by `std` per channel.
- `resize_crop` (CLIP, as its image processor does): resize the shortest edge to
  `shortest_edge` (bicubic; the other edge is `int(shortest_edge * long / short)`), crop the
  centre (`crop` = [height, width], top-left at `int((size - crop) / 2)`), scale by `rescale`,
  normalise with `mean`/`std`.

- `resize` (the model zoo's families, each read from its library's own config): resize the
  shortest edge to `shortest_edge` as above, or squash to `size` = [height, width] (SigLIP,
  open_clip's `squash`); then crop the centre to `crop` when given, its top-left offset floored
  (transformers) or rounded (`crop_offset: "round"`, torchvision's `CenterCrop`, as open_clip and
  timm use); scale by `rescale`, normalise with `mean`/`std`.

All return a float32 (3, H, W) array (NCHW once batched). No torch, no transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial

import numpy as np
from PIL import Image, ImageOps

from embeddings.errors import ModelLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

Prepare = Callable[[Image.Image], np.ndarray]


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Pad to a square with white, then resize: the whole product stays in view.

    A centre crop (torchvision's default) cuts the top and bottom off tall product photos
    such as the fashion set's 60x80 images; padding keeps them, on the white they were shot on.
    """
    return ImageOps.pad(
        image, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255)
    )


def _channels(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


@lru_cache(maxsize=8)
def _byte_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: (byte / 255 - mean) / std per channel, by the same float32 operations
    as applying the formula to every pixel, so a lookup gives identical values."""
    values = np.arange(256, dtype=np.float32)[None, :] / 255.0
    return (values - _channels(mean)[:, :, 0]) / _channels(std)[:, :, 0]


def pad_square(image: Image.Image, *, size: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The CNN recipe: `fit_square`, then (pixels / 255 - mean) / std, as (3, size, size).

    Each channel's bytes index a table of their normalised values: a quarter of the CPU time of
    computing the formula over the pixels (what the build's decoding threads spend most on)."""
    pixels = np.asarray(fit_square(image, size))
    table = _byte_table(tuple(np.ravel(mean).tolist()), tuple(np.ravel(std).tolist()))
    out = np.empty((3, size, size), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])
    return out


def resize_crop(
    image: Image.Image,
    *,
    shortest_edge: int,
    crop: tuple[int, int],
    mean: np.ndarray,
    std: np.ndarray,
    scale: float,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> np.ndarray:
    """The CLIP recipe: shortest edge to `shortest_edge`, centre crop, rescale, normalise."""
    width, height = image.size
    if width <= height:
        size = (shortest_edge, int(shortest_edge * height / width))
    else:
        size = (int(shortest_edge * width / height), shortest_edge)
    if size != image.size:
        image = image.resize(size, resample)
    crop_height, crop_width = crop
    if crop_width > size[0] or crop_height > size[1]:  # smaller than the crop: pad with black
        canvas = Image.new("RGB", (max(crop_width, size[0]), max(crop_height, size[1])))
        canvas.paste(image, (max(0, crop_width - size[0]) // 2, max(0, crop_height - size[1]) // 2))
        image, size = canvas, canvas.size
    top, left = int((size[1] - crop_height) / 2.0), int((size[0] - crop_width) / 2.0)
    pixels = np.asarray(image, dtype=np.float32)[top : top + crop_height, left : left + crop_width]
    return (pixels.transpose(2, 0, 1) * np.float32(scale) - mean) / std


def resize(
    image: Image.Image,
    *,
    shortest_edge: int | None,
    size: tuple[int, int] | None,
    crop: tuple[int, int] | None,
    round_offset: bool,
    mean: np.ndarray,
    std: np.ndarray,
    scale: float,
    resample: Image.Resampling,
) -> np.ndarray:
    """The `resize` recipe (see the module docstring)."""
    width, height = image.size
    if shortest_edge:
        if width <= height:
            target = (shortest_edge, int(shortest_edge * height / width))
        else:
            target = (int(shortest_edge * width / height), shortest_edge)
    else:
        target = (size[1], size[0])
    if target != image.size:
        image = image.resize(target, resample)
    pixels = np.asarray(image, dtype=np.float32)
    if crop is not None:
        pixels = _centre_crop(pixels, crop, round_offset)
    return (pixels.transpose(2, 0, 1) * np.float32(scale) - mean) / std


def _centre_crop(pixels: np.ndarray, crop: tuple[int, int], round_offset: bool) -> np.ndarray:
    """(crop height, crop width) from the centre, padding with black when smaller."""
    crop_height, crop_width = crop
    height, width = pixels.shape[:2]
    if crop_height > height or crop_width > width:
        canvas = np.zeros((max(crop_height, height), max(crop_width, width), 3), np.float32)
        top, left = (canvas.shape[0] - height) // 2, (canvas.shape[1] - width) // 2
        canvas[top : top + height, left : left + width] = pixels
        pixels, height, width = canvas, canvas.shape[0], canvas.shape[1]
    offset = (lambda n: int(round(n / 2.0))) if round_offset else (lambda n: int(n / 2.0))
    top, left = offset(height - crop_height), offset(width - crop_width)
    return pixels[top : top + crop_height, left : left + crop_width]


def _resize_recipe(settings: Mapping, mean: np.ndarray, std: np.ndarray) -> Prepare:
    crop = settings.get("crop")
    size = settings.get("size")
    if not settings.get("shortest_edge") and not size:
        raise KeyError("shortest_edge or size")
    return partial(
        resize,
        shortest_edge=int(settings["shortest_edge"]) if settings.get("shortest_edge") else None,
        size=(int(size[0]), int(size[1])) if size else None,
        crop=(int(crop[0]), int(crop[1])) if crop else None,
        round_offset=settings.get("crop_offset", "floor") == "round",
        mean=mean,
        std=std,
        scale=float(settings["rescale"]),
        resample=RESAMPLE[settings.get("resample", "bicubic")],
    )


def image_recipe(settings: Mapping) -> Prepare:
    """The `prepare` function an export's image settings describe (see the module docstring).

    Raises `ModelLoadError` for settings it does not know (an export made by a newer version).
    """
    kind = settings.get("kind")
    try:
        mean, std = _channels(settings["mean"]), _channels(settings["std"])
        if kind == "pad_square":
            return partial(pad_square, size=int(settings["size"]), mean=mean, std=std)
        if kind == "resize_crop":
            return partial(
                resize_crop,
                shortest_edge=int(settings["shortest_edge"]),
                crop=(int(settings["crop"][0]), int(settings["crop"][1])),
                mean=mean,
                std=std,
                scale=float(settings["rescale"]),
                resample=RESAMPLE[settings.get("resample", "bicubic")],
            )
        if kind == "resize":
            return _resize_recipe(settings, mean, std)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelLoadError(
            f"image preprocessing settings {dict(settings)} are invalid: {exc}"
        ) from exc
    raise ModelLoadError(f"unknown image preprocessing {kind!r} (an export from a newer version?)")

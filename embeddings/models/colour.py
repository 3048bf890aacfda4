"""`colour`: a colour histogram in CIE Lab, the product's white background removed.

A classic content-based retrieval feature, cheap (numpy only, no torch, no weights), and the
column that sees colour where raw pixels see layout and a CNN sees shape:

1. the image is shrunk to at most 64 pixels on its longer side (product photos are small);
2. sRGB is converted to CIE L*a*b* (D65), a space where distances follow perceived colour;
3. the background is the near-white region (L* > 90, chroma < 8) connected to the border,
   grown from the border pixel by pixel, so a white shirt's inside (fenced by its shaded edge)
   is kept; if less than 3% of the picture is left, every pixel counts;
4. the remaining pixels are spread over a 6 x 9 x 9 grid of (L*, a*, b*) bins with linear
   (soft) assignment: a colour between two bin centres counts half in each;
5. the histogram is normalised to sum 1 and square-rooted (Hellinger): the vector then has unit
   L2 norm and the cosine of two vectors is their Bhattacharyya coefficient.

486 dimensions. The recipe is the model's weights: `weights_id` names its version, so indexes of
an earlier recipe are refused and rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from embeddings.models.base import Embedder, ModelSpec, l2_normalise

MAX_SIDE = 64
L_BINS, A_BINS, B_BINS = 6, 9, 9
L_RANGE, AB_RANGE = (0.0, 100.0), (-64.0, 64.0)
WHITE_L, WHITE_CHROMA = 90.0, 8.0
MIN_FOREGROUND = 0.03

SPEC = ModelSpec(
    id="colour",
    description="Colour histogram: CIE Lab 6x9x9 soft bins, white background removed, "
    "Hellinger-normalised (numpy only)",
    dim=L_BINS * A_BINS * B_BINS,
    weights_id="colour-lab-6x9x9-v1",
    has_text=False,
    needs_torch=False,
)

# sRGB (D65) -> XYZ, and the D65 white point.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float32,
)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB values in [0, 1]: float32 (..., 3)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _RGB_TO_XYZ.T) / _WHITE
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1).astype(np.float32)


def background_mask(lab: np.ndarray) -> np.ndarray:
    """bool (h, w): the near-white region connected to the picture's border."""
    whiteish = (lab[..., 0] > WHITE_L) & (np.hypot(lab[..., 1], lab[..., 2]) < WHITE_CHROMA)
    grown = np.zeros_like(whiteish)
    grown[0, :], grown[-1, :], grown[:, 0], grown[:, -1] = (
        whiteish[0, :],
        whiteish[-1, :],
        whiteish[:, 0],
        whiteish[:, -1],
    )
    for _ in range(sum(whiteish.shape)):
        spread = grown.copy()
        spread[1:, :] |= grown[:-1, :]
        spread[:-1, :] |= grown[1:, :]
        spread[:, 1:] |= grown[:, :-1]
        spread[:, :-1] |= grown[:, 1:]
        spread &= whiteish
        if np.array_equal(spread, grown):
            break
        grown = spread
    return grown


def _soft_bins(values: np.ndarray, low: float, high: float, bins: int):
    """Each value's two neighbouring bin centres and their weights (linear interpolation)."""
    position = np.clip((values - low) / (high - low) * bins - 0.5, 0, bins - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, bins - 1)
    weight_above = position - below
    return below, above, 1 - weight_above, weight_above


def lab_histogram(lab: np.ndarray) -> np.ndarray:
    """The Hellinger-normalised soft histogram (L_BINS * A_BINS * B_BINS,) of Lab pixels (n, 3)."""
    axes = [
        _soft_bins(lab[:, 0], *L_RANGE, L_BINS),
        _soft_bins(lab[:, 1], *AB_RANGE, A_BINS),
        _soft_bins(lab[:, 2], *AB_RANGE, B_BINS),
    ]
    histogram = np.zeros(L_BINS * A_BINS * B_BINS, dtype=np.float64)
    for corner in range(8):
        index = np.zeros(len(lab), dtype=np.int64)
        weight = np.ones(len(lab), dtype=np.float64)
        for axis, size in enumerate((L_BINS, A_BINS, B_BINS)):
            below, above, w_below, w_above = axes[axis]
            upper = (corner >> axis) & 1
            index = index * size + (above if upper else below)
            weight = weight * (w_above if upper else w_below)
        histogram += np.bincount(index, weights=weight, minlength=len(histogram))
    total = histogram.sum()
    if total > 0:
        histogram = np.sqrt(histogram / total)
    return histogram.astype(np.float32)


class ColourEmbedder(Embedder):
    spec = SPEC

    def prepare(self, image: Image.Image) -> np.ndarray:
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        lab = rgb_to_lab(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        keep = ~background_mask(lab)
        if keep.mean() < MIN_FOREGROUND:
            keep[:] = True
        return lab_histogram(lab[keep])

    def embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return l2_normalise(np.stack(batch))


def load() -> ColourEmbedder:
    return ColourEmbedder()

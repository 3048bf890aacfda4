"""The tutorial's baseline: flattened raw pixels (no learning at all)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from embeddings.models.base import Embedder, ModelSpec, l2_normalise

#: The tutorial resizes every image to 60 wide by 80 high (the fashion dataset's own size).
WIDTH, HEIGHT = 60, 80

SPEC = ModelSpec(
    id="pixels",
    description="Raw pixels: RGB resized to 60x80, divided by 255, flattened (the "
    "tutorial's baseline)",
    dim=WIDTH * HEIGHT * 3,
    weights_id="none",
    has_text=False,
    needs_torch=False,
    byte_valued=True,
)


class PixelsEmbedder(Embedder):
    spec = SPEC

    def prepare(self, image: Image.Image) -> np.ndarray:
        if image.size != (WIDTH, HEIGHT):
            image = image.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32).reshape(-1) / 255.0

    def embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return l2_normalise(np.stack(batch))


def load() -> PixelsEmbedder:
    return PixelsEmbedder()

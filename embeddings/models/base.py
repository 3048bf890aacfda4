"""The one embedder interface every model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from embeddings.errors import QueryError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before loading it (no heavy import needed)."""

    id: str
    description: str
    dim: int
    weights_id: str
    has_text: bool
    needs_torch: bool = True
    weights_env: str | None = None  # an environment variable that names other weights
    onnx: bool = False  # runs on ONNX Runtime by default (exported from its torch loader)
    byte_valued: bool = False  # vectors are bytes over their norm: stored exactly as uint8


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; zero rows stay zero (no NaN)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder(ABC):
    """Turns images (and, when `spec.has_text`, texts) into L2-normalised float32 vectors.

    Image embedding is split in two so a build can overlap decoding with inference:
    `prepare` runs per image in worker threads (resize, normalise: pure CPU work that releases
    the GIL), `embed_prepared` runs a batch through the model. `encode_images` does both.
    """

    spec: ModelSpec
    runtime: str = "numpy"  # what runs the model: "numpy", "onnx" or "torch"

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def weights_id(self) -> str:
        return self.spec.weights_id

    @property
    def inference_threads(self) -> int:
        """Threads `embed_prepared` keeps busy besides the caller's (0: none; numpy models)."""
        return 0

    @abstractmethod
    def prepare(self, image: Image.Image) -> Any:
        """Per-image preprocessing of an RGB image; thread-safe."""

    @abstractmethod
    def embed_prepared(self, batch: Sequence[Any]) -> np.ndarray:
        """Embed a batch of `prepare` outputs: float32 (len(batch), dim), L2-normalised."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 (n, dim), L2-normalised, one row per image."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_prepared([self.prepare(image) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim), L2-normalised; only for models with a text tower."""
        raise QueryError(f"model {self.id!r} has no text tower")

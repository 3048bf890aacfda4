"""Shared plumbing for the torch CNN backends (imported only by their loaders)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from embeddings.models.base import Embedder, ModelSpec
from embeddings.runtime import tune_allocator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Pad to a square with white, then resize: the whole product stays in view.

    A centre crop (torchvision's default) cuts the top and bottom off tall product photos
    such as the fashion set's 60x80 images; padding keeps them, on the white they were shot on.
    """
    return ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255))


class TorchCNNEmbedder(Embedder):
    """A CNN whose forward pass returns pooled features (n, dim)."""

    def __init__(self, spec: ModelSpec, network: torch.nn.Module, *, size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        tune_allocator()
        self.spec = spec
        self.size = size
        self._mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        # channels_last lets oneDNN pick its fastest convolution kernels on CPU.
        self.network = network.eval().to(memory_format=torch.channels_last)

    def prepare(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(fit_square(image, self.size), dtype=np.float32) / 255.0
        return (pixels.transpose(2, 0, 1) - self._mean) / self._std

    @torch.inference_mode()
    def embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        inputs = torch.from_numpy(np.stack(batch)).contiguous(memory_format=torch.channels_last)
        features = self.network(inputs)
        features = torch.nn.functional.normalize(features.float(), dim=1)
        return features.numpy().astype(np.float32, copy=False)


def load_state_dict_file(path: str | Path) -> dict:
    """A state dict from disk, without running pickled code (`weights_only=True`)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)

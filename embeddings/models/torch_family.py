"""The torch embedder every model family gives (imported only by the families' loaders).

A family loader (`hf`, `open_clip_family`, `timm_family`) hands over:

- `image_module`: a `torch.nn.Module` from `pixel_values` (n, 3, H, W) to features (n, dim);
- `prepare`: the library's own image processing of one PIL image (the reference the ONNX
  path's numpy recipe is checked against), and `recipe`, that numpy recipe's settings
  (`embeddings.models.preprocess`);
- for a text tower, a `TextTower`: the module (token tensors -> features), the library's own
  tokenizing, a `tokenizers.Tokenizer` for torch-free serving and its settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from embeddings.models.allocator import tune_allocator
from embeddings.models.base import Embedder, ModelSpec


@dataclass
class TextTower:
    """A family's text tower, its library's tokenizing and its `tokenizers` counterpart."""

    module: torch.nn.Module  # forward(*[tokens[name] for name in settings["inputs"]])
    tokenize: Callable[[list[str]], dict[str, torch.Tensor]]  # the library's own tokenizer
    tokenizer: object  # a `tokenizers.Tokenizer` giving the same ids (saved as tokenizer.json)
    settings: dict  # max_length, pad_id, pad_token, pad_to, inputs, lowercase

    def inputs(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        tokens = self.tokenize(texts)
        return tuple(tokens[name].to(torch.int64) for name in self.settings["inputs"])


class TorchFamilyEmbedder(Embedder):
    """A family model on torch: the reference the ONNX export is checked against."""

    runtime = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        image_module: torch.nn.Module,
        prepare: Callable[[Image.Image], np.ndarray],
        recipe: dict,
        text: TextTower | None = None,
    ):
        tune_allocator()
        self.spec = spec
        self.image_module = image_module.eval()
        self._prepare = prepare
        self.recipe = recipe
        self.text = text

    @property
    def inference_threads(self) -> int:
        return torch.get_num_threads()

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self._prepare(image), dtype=np.float32)

    @torch.inference_mode()
    def embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        features = self.image_module(torch.from_numpy(np.stack(batch)))
        return torch.nn.functional.normalize(features.float(), dim=1).numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.text is None:
            return super().encode_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self.text.module(*self.text.inputs(list(texts)))
        return torch.nn.functional.normalize(features.float(), dim=1).numpy()


def probe_dim(module: torch.nn.Module, size: tuple[int, int]) -> int:
    """The feature dimension of an image module, from one blank image of `size` (H, W)."""
    with torch.inference_mode():
        return int(module.eval()(torch.zeros(1, 3, *size)).reshape(1, -1).shape[1])

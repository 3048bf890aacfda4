"""ResNet-50 backends: torchvision's ImageNet weights, and the tutorial's SimCLR checkpoint.

Both produce the 2048-d penultimate (global-pooled) features of a torchvision `resnet50`.
Weights download into torch's hub cache (`$TORCH_HOME/hub/checkpoints`) on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from embeddings.errors import ModelLoadError
from embeddings.models import get_spec
from embeddings.models.identity import local_weights_id
from embeddings.models.torch_common import TorchCNNEmbedder, load_into, read_state_dict

#: The tutorial's SimCLR ResNet-50 ImageNet checkpoint, published by lightning-bolts.
SIMCLR_URL = (
    "https://pl-bolts-weights.s3.us-east-2.amazonaws.com/"
    "simclr/bolts_simclr_imagenet/simclr_imagenet.ckpt"
)


def _headless_resnet50() -> torch.nn.Module:
    from torchvision.models import resnet50

    network = resnet50(weights=None)
    network.fc = torch.nn.Identity()
    return network


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_resnet50(weights: str | Path | None = None) -> TorchCNNEmbedder:
    """torchvision ResNet-50 with `IMAGENET1K_V2` weights (or a local state dict at `weights`)."""
    spec = get_spec("resnet50")
    if weights is not None:
        state = read_state_dict(weights, "resnet50")
        spec = replace(spec, weights_id=local_weights_id("resnet50", weights))
    else:
        from torchvision.models import ResNet50_Weights

        weights = ResNet50_Weights.IMAGENET1K_V2
        target = _checkpoint_dir() / os.path.basename(weights.url)
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # network errors come in many types (URLError, socket, ssl...)
            raise ModelLoadError(
                f"model 'resnet50' could not load its ImageNet weights: looked for {target} and "
                f"tried to download {weights.url} ({type(exc).__name__}: {exc}). Put the file "
                "there by hand, or run once with network access."
            ) from exc
    network = _headless_resnet50()
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    load_into(network, state, "resnet50", weights, "a ResNet-50")
    return TorchCNNEmbedder(spec, network, size=224)


def simclr_state_to_torchvision(checkpoint: Mapping) -> dict:
    """Convert a lightning-bolts SimCLR checkpoint into a torchvision resnet50 state dict.

    Bolts keeps the backbone under `encoder.` (same layer names as torchvision) and the
    projection head under `projection.`; the head and any `fc.` layer are dropped. Raises
    `ValueError` when there is no `encoder.` backbone.
    """
    state = checkpoint.get("state_dict", checkpoint)
    converted = {
        key[len("encoder.") :]: value
        for key, value in getattr(state, "items", dict)()
        if isinstance(key, str) and key.startswith("encoder.") and not key.startswith("encoder.fc.")
    }
    if not converted:
        raise ValueError(
            "no 'encoder.' weights in the checkpoint; is it a lightning-bolts SimCLR checkpoint?"
        )
    return converted


def load_simclr(weights: str | Path | None = None) -> TorchCNNEmbedder:
    """SimCLR ResNet-50: lightning-bolts' ImageNet checkpoint (downloaded once into the hub
    cache; the spec's fixed weights id), or the checkpoint at `weights` (identified by its
    content)."""
    spec = get_spec("simclr")
    path = _default_simclr_checkpoint() if weights is None else weights
    checkpoint = read_state_dict(path, "simclr")
    if weights is not None:
        spec = replace(spec, weights_id=local_weights_id("simclr", weights))
    try:
        state = simclr_state_to_torchvision(checkpoint)
    except ValueError as exc:
        raise ModelLoadError(f"model 'simclr': {path}: {exc}") from exc
    network = _headless_resnet50()
    load_into(network, state, "simclr", path, "a ResNet-50")
    return TorchCNNEmbedder(spec, network, size=224)


def _default_simclr_checkpoint() -> Path:
    """Bolts' checkpoint in the hub cache, downloaded there first when it is missing."""
    path = _checkpoint_dir() / "simclr_imagenet.ckpt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(SIMCLR_URL, str(path), progress=True)
        except Exception as exc:  # network errors come in many types
            raise ModelLoadError(
                f"model 'simclr' could not load its checkpoint: looked for {path} and "
                f"tried to download {SIMCLR_URL} ({type(exc).__name__}: {exc}). Put the file "
                "there by hand, or run once with network access."
            ) from exc
    return path

"""ResNet-50 backends: torchvision's ImageNet weights, and the tutorial's SimCLR checkpoint.

Both produce the 2048-d penultimate (global-pooled) features of a torchvision `resnet50`.
Weights download into torch's hub cache (`$TORCH_HOME/hub/checkpoints`) on first use, and every
file is read with `torch.load(weights_only=True)` (`torch_common.read_state_dict`): torchvision's
own `get_state_dict` is not used, since it loads with `weights_only=False`.

Lightning checkpoints (bolts' SimCLR file was written by PyTorch Lightning 1.0/1.1) name a few
Lightning classes beside the tensors: the callback states are keyed by the callback's class
(`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`) and the hyper-parameters may be
an `AttributeDict`. Those names are allow-listed as inert stand-ins (`LIGHTNING_STANDINS`), which
hold what was pickled and run nothing; any other class or function is still refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from embeddings.errors import ModelLoadError
from embeddings.models import get_spec
from embeddings.models.identity import local_weights_id
from embeddings.models.torch_common import TorchCNNEmbedder, load_into, read_state_dict

#: torchvision's `ResNet50_Weights.IMAGENET1K_V2` file (its name carries its SHA-256 prefix).
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
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


class _InertLightningObject:
    """Stands in for a Lightning class a checkpoint names: keeps the pickled state, runs nothing."""

    def __setstate__(self, state) -> None:
        self.pickled_state = state


class _InertAttributeDict:
    """Stands in for Lightning's `AttributeDict` (a dict of hyper-parameters): unpickled as a
    plain dict (torch's safe unpickler fills only plain dicts)."""

    def __new__(cls, *args, **kwargs):
        return {}


#: (stand-in, the Lightning name it answers to) for `read_state_dict(allowed=...)`.
LIGHTNING_STANDINS = (
    (_InertLightningObject, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (_InertLightningObject, "pytorch_lightning.callbacks.early_stopping.EarlyStopping"),
    (_InertAttributeDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
)


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_checkpoint(url: str, model_id: str) -> Path:
    """The file of `url` in the hub cache, downloaded there first when missing (its SHA-256
    checked against the prefix in its name, as torch.hub does); nothing is read here."""
    target = _checkpoint_dir() / os.path.basename(url)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.search(torch.hub.HASH_REGEX, target.name)
    try:
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=prefix.group(1) if prefix else None, progress=True
        )
    except Exception as exc:  # network errors come in many types (URLError, socket, ssl...)
        raise ModelLoadError(
            f"model {model_id!r} could not load its weights: looked for {target} and tried to "
            f"download {url} ({type(exc).__name__}: {exc}). Put the file there by hand, or run "
            "once with network access."
        ) from exc
    return target


def load_resnet50(weights: str | Path | None = None) -> TorchCNNEmbedder:
    """torchvision ResNet-50 with `IMAGENET1K_V2` weights (or a local state dict at `weights`)."""
    spec = get_spec("resnet50")
    if weights is not None:
        state = read_state_dict(weights, "resnet50")
        spec = replace(spec, weights_id=local_weights_id("resnet50", weights))
    else:
        weights = download_checkpoint(RESNET50_URL, "resnet50")
        state = read_state_dict(weights, "resnet50")
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
    checkpoint = read_state_dict(path, "simclr", allowed=LIGHTNING_STANDINS)
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
    return download_checkpoint(SIMCLR_URL, "simclr")

"""`timm:NAME`, `timm:hf-hub:REPO`, `timm:local-dir:FOLDER`: a timm image model's pooled
features (`num_classes=0`: the classifier removed, the model's own global pooling kept).

timm's own names: `NAME` (`convnext_tiny.fb_in22k_ft_in1k`) is fetched from the hub repo its
pretrained config names; `hf-hub:` and `local-dir:` are folders as `timm.models.save_for_hf`
writes them (`config.json` and `model.safetensors`). The image recipe is timm's data config
(`resolve_data_config`): resize to `input size / crop_pct` (shortest edge, or squashed for
`crop_mode: squash`), crop the centre, normalise. No text tower: text goes through a bridge.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from embeddings.errors import ModelLoadError
from embeddings.models.naming import HF_HUB, LOCAL_DIR
from embeddings.models.torch_family import TorchFamilyEmbedder, probe_dim


def hub_repo_for(family_id: str) -> str:
    """The hub repo holding the weights of `timm:NAME`."""
    from timm.models import get_pretrained_cfg, is_model

    name = family_id.partition(":")[2]
    if name.startswith((HF_HUB, LOCAL_DIR)):
        raise ModelLoadError(f"model {family_id!r}: no hub repo to look up")
    architecture = name.partition(".")[0]
    if not is_model(architecture):
        raise ModelLoadError(
            f"model {family_id!r}: timm has no architecture {architecture!r} "
            "(timm.list_models() names them)"
        )
    config = get_pretrained_cfg(name, allow_unregistered=False)
    repo = getattr(config, "hf_hub_id", None) if config is not None else None
    if not repo:
        raise ModelLoadError(
            f"model {family_id!r}: timm has no hub weights under that name; name a pretrained "
            f"tag (timm.list_pretrained('{architecture}*')) or pass --weights {family_id}=FILE"
        )
    return repo.strip("/")


def _create(family_id: str, source):
    import timm

    path = Path(source.path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"no timm config.json in {path} (timm.models.save_for_hf)")
        if not any(path.glob("*.safetensors")) and not (path / "pytorch_model.bin").is_file():
            raise ModelLoadError(f"no timm weights (model.safetensors) in {path}")
        return timm.create_model(LOCAL_DIR + str(path), pretrained=True, num_classes=0)
    name = family_id.partition(":")[2]
    return timm.create_model(
        name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)}
    )


def image_recipe_of(config: dict) -> dict:
    """The `resize` recipe of a timm data config (`timm.data.resolve_data_config`)."""
    height, width = (int(v) for v in config["input_size"][-2:])
    crop_pct = config.get("crop_pct") or 0.875
    scale = [math.floor(height / crop_pct), math.floor(width / crop_pct)]
    mode = config.get("crop_mode") or "center"
    interpolation = config.get("interpolation") or "bilinear"
    if interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
        raise ModelLoadError(f"timm interpolation {interpolation!r} is not supported")
    recipe = {
        "kind": "resize",
        "resample": interpolation,
        "rescale": 1 / 255,
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
        "crop": [height, width],
        "crop_offset": "round",
    }
    if mode == "squash":
        return {**recipe, "size": scale}
    if mode == "center" and scale[0] == scale[1]:
        return {**recipe, "shortest_edge": scale[0]}
    raise ModelLoadError(f"timm crop mode {mode!r} at {height}x{width} is not supported")


def load(model_id: str, family_id: str, spec, source) -> TorchFamilyEmbedder:
    """The torch embedder of a timm model from `source`."""
    from timm.data import create_transform, resolve_data_config

    model = _create(family_id, source).eval()
    config = resolve_data_config({}, model=model)
    transform = create_transform(**config, is_training=False)
    recipe = image_recipe_of(config)
    spec = replace(
        spec,
        dim=probe_dim(model, tuple(recipe["crop"])),
        weights_id=source.weights_id,
        has_text=False,
    )
    return TorchFamilyEmbedder(spec, model, lambda picture: transform(picture).numpy(), recipe)

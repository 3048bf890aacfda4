"""`open_clip:ARCH/PRETRAINED`, `open_clip:hf-hub:REPO`, `open_clip:local-dir:FOLDER`.

open_clip's own names: `ARCH/PRETRAINED` is one of `open_clip.list_pretrained()` (its weights
come from the hub repo its pretrained config names); `hf-hub:` and `local-dir:` are folders
holding `open_clip_config.json` (model and preprocess config) and the weights
(`open_clip_model.safetensors`, or a `.bin` read with `weights_only`). Images are embedded by
`encode_image`, texts by `encode_text` (padded to the model's context length, as open_clip does);
the image recipe is the model's `preprocess_cfg` (`shortest`: resize and crop the centre;
`squash`: resize to the square, SigLIP's way).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from embeddings.errors import ModelLoadError
from embeddings.models.naming import HF_HUB, LOCAL_DIR
from embeddings.models.torch_family import TextTower, TorchFamilyEmbedder, probe_dim

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
NAMING = (
    "name it open_clip:ARCH/PRETRAINED (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k), "
    "open_clip:hf-hub:REPO or open_clip:local-dir:FOLDER"
)


def _arch_and_tag(family_id: str) -> tuple[str, str]:
    name = family_id.partition(":")[2]
    arch, sep, tag = name.partition("/")
    if not sep or not arch or not tag or name.startswith((HF_HUB, LOCAL_DIR)):
        raise ModelLoadError(f"model {family_id!r}: {NAMING}")
    return arch, tag


def hub_repo_for(family_id: str) -> str:
    """The hub repo holding the weights of `open_clip:ARCH/PRETRAINED`."""
    import open_clip

    arch, tag = _arch_and_tag(family_id)
    config = open_clip.get_pretrained_cfg(arch, tag)
    if not config:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none: unknown ARCH"
        raise ModelLoadError(
            f"model {family_id!r}: open_clip has no weights {tag!r} for {arch!r} (its tags: {tags})"
        )
    repo = (config.get("hf_hub") or "").strip("/")
    if not repo:
        raise ModelLoadError(
            f"model {family_id!r}: open_clip fetches these weights from outside the Hugging Face "
            f"hub; download them and pass --weights {family_id}=FILE"
        )
    return repo


class _Image(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode_image(pixel_values)


class _Text(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.encode_text(input_ids)


def _weights_file(folder: Path) -> Path:
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelLoadError(f"no open_clip weights ({' or '.join(WEIGHTS_FILES)}) in {folder}")


def _create(family_id: str, source):
    """(model, eval transform, tokenizer) from a local folder or a weights file."""
    import open_clip

    path = Path(source.path)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        _weights_file(path)  # open_clip would go on with random weights without one
        name = LOCAL_DIR + str(path)
        model, _, transform = open_clip.create_model_and_transforms(name, weights_only=True)
        return model, transform, open_clip.get_tokenizer(name)
    arch, tag = _arch_and_tag(family_id)
    weights = _weights_file(path) if path.is_dir() else path
    config = open_clip.get_pretrained_cfg(arch, tag) or {}
    preprocess = {
        f"image_{key}": config[key]
        for key in ("mean", "std", "interpolation", "resize_mode")
        if config.get(key) is not None
    }
    model, _, transform = open_clip.create_model_and_transforms(
        arch, pretrained=str(weights), weights_only=True, **preprocess
    )
    return model, transform, open_clip.get_tokenizer(arch)


def image_recipe_of(config: dict) -> dict:
    """The `resize` recipe of an open_clip `preprocess_cfg`."""
    size = config["size"]
    size = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size[-2:]]
    mode = config.get("resize_mode") or "shortest"
    recipe = {
        "kind": "resize",
        "resample": "bilinear" if config.get("interpolation") == "bilinear" else "bicubic",
        "rescale": 1 / 255,
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
    }
    if mode == "squash":
        return {**recipe, "size": size}
    if mode == "shortest" and size[0] == size[1]:
        return {**recipe, "shortest_edge": size[0], "crop": size, "crop_offset": "round"}
    raise ModelLoadError(f"open_clip resize mode {mode!r} at {size} is not supported for serving")


def _text_tower(model, tokenizer) -> TextTower:
    from embeddings.models.tokenizer_files import open_clip_tokenizer

    if getattr(tokenizer, "strip_sep_token", False):
        raise ModelLoadError("its tokenizer strips separator tokens, which serving cannot do")
    length = int(tokenizer.context_length)
    inner = getattr(tokenizer, "tokenizer", None)
    pad_id = int(inner.pad_token_id) if inner is not None else 0
    pad_token = str(inner.pad_token) if inner is not None else tokenizer.decoder[0]
    settings = {
        "max_length": length,
        "pad_id": pad_id,
        "pad_token": pad_token,
        "pad_to": length,
        "inputs": ["input_ids"],
        "lowercase": False,
    }
    return TextTower(
        _Text(model),
        lambda texts: {"input_ids": tokenizer(texts)},
        open_clip_tokenizer(tokenizer),
        settings,
    )


def load(model_id: str, family_id: str, spec, source) -> TorchFamilyEmbedder:
    """The torch embedder of an open_clip model from `source`."""
    model, transform, tokenizer = _create(family_id, source)
    model.eval()
    recipe = image_recipe_of(dict(model.visual.preprocess_cfg))
    image = _Image(model)
    size = tuple(recipe.get("crop") or recipe["size"])
    spec = replace(spec, dim=probe_dim(image, size), weights_id=source.weights_id, has_text=True)

    def prepare(picture):
        return transform(picture).numpy()

    return TorchFamilyEmbedder(spec, image, prepare, recipe, _text_tower(model, tokenizer))

"""`hf:REPO_OR_FOLDER`: a transformers model, embedded as its model type calls for.

- `clip`, `siglip` (SigLIP, and SigLIP 2 at a fixed resolution such as
  `google/siglip2-base-patch16-224`, whose config says `siglip`): `get_image_features` and
  `get_text_features`, images and texts in one space. SigLIP's texts are padded to the model's
  64 tokens and given without an attention mask, as it was trained.
- `dinov2`: the pooled output, the final layer-normed CLS token.
- `vit`, `deit`: the final layer-normed CLS token (`last_hidden_state[:, 0]`; their pooler is
  not part of every checkpoint).
- other vision backbones (ConvNeXt, ResNet, EfficientNet, ...): their `pooler_output`, flattened.
- `siglip2` (NaFlex, variable patches) is refused: its inputs depend on each image's shape.

Images go through the model's own image processor (`preprocessor_config.json`) on torch; the
ONNX path runs its numpy twin (`embeddings.models.preprocess`, kind `resize`). Weights load from
safetensors (a `.bin` only with `weights_only`), never with remote code.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from embeddings.errors import ModelLoadError
from embeddings.models.torch_family import TextTower, TorchFamilyEmbedder, probe_dim

#: Types whose CLS token (after the final norm) is the image feature.
CLS_TYPES = frozenset({"vit", "deit"})
TEXT_TYPES = frozenset({"clip", "siglip"})
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


class _ImageFeatures(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model.get_image_features(pixel_values=pixel_values)
        return getattr(out, "pooler_output", out)


class _TextFeatures(torch.nn.Module):
    def __init__(self, model, with_mask: bool):
        super().__init__()
        self.model = model
        self.with_mask = with_mask

    def forward(self, input_ids, attention_mask=None):
        mask = attention_mask if self.with_mask else None
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=mask)
        return getattr(out, "pooler_output", out)


class _Pooled(torch.nn.Module):
    """A vision backbone's pooled output (or its CLS token), flattened to (n, dim)."""

    def __init__(self, model, cls_token: bool):
        super().__init__()
        self.model = model
        self.cls_token = cls_token

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        pooled = out.last_hidden_state[:, 0] if self.cls_token else out.pooler_output
        return pooled.flatten(1)


def _value(settings, key):
    return settings.get(key) if isinstance(settings, dict) else getattr(settings, key, None)


def image_recipe_of(processor) -> dict:
    """The `resize` recipe of a transformers image processor, refusing steps it lacks."""
    size = processor.size
    crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None
    if not (processor.do_resize and processor.do_rescale and processor.do_normalize):
        raise ModelLoadError(f"its image processor skips resizing or normalising ({processor})")
    recipe = {
        "kind": "resize",
        "resample": RESAMPLE_NAMES.get(int(processor.resample), "bicubic"),
        "rescale": float(processor.rescale_factor),
        "mean": [float(v) for v in processor.image_mean],
        "std": [float(v) for v in processor.image_std],
    }
    if _value(size, "shortest_edge"):
        recipe["shortest_edge"] = int(_value(size, "shortest_edge"))
    elif _value(size, "height") and _value(size, "width"):
        recipe["size"] = [int(_value(size, "height")), int(_value(size, "width"))]
    else:
        raise ModelLoadError(f"its image processor resizes as {size}, which is not supported")
    if crop is not None:
        recipe["crop"] = [int(_value(crop, "height")), int(_value(crop, "width"))]
    return recipe


def _output_size(recipe: dict) -> tuple[int, int]:
    if "crop" in recipe:
        return tuple(recipe["crop"])
    if "size" in recipe:
        return tuple(recipe["size"])
    return (recipe["shortest_edge"], recipe["shortest_edge"])


def _text_tower(model, folder, model_type: str, config) -> TextTower:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    siglip = model_type == "siglip"
    positions = int(config.text_config.max_position_embeddings)
    length = min(positions, int(tokenizer.model_max_length or positions))

    def tokenize(texts):
        return tokenizer(
            texts,
            padding="max_length" if siglip else True,
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )

    from embeddings.models.tokenizer_files import serving_tokenizer

    settings = {
        "max_length": length,
        "pad_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "pad_to": length if siglip else None,
        "inputs": ["input_ids"] if siglip else ["input_ids", "attention_mask"],
        "lowercase": False,
    }
    return TextTower(
        _TextFeatures(model, with_mask=not siglip), tokenize, serving_tokenizer(tokenizer), settings
    )


def load(model_id: str, family_id: str, spec, source) -> TorchFamilyEmbedder:
    """The torch embedder of an `hf:` model from `source.path` (a save_pretrained folder)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    folder = source.path
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    model_type = config.model_type
    if model_type == "siglip2":
        raise ModelLoadError(
            f"model {model_id!r} is a SigLIP 2 NaFlex model (variable patches per image), which "
            "cannot be exported to one ONNX graph; use a fixed-resolution SigLIP 2 such as "
            "hf:google/siglip2-base-patch16-224"
        )
    safetensors = any(folder.glob("*.safetensors"))
    model = AutoModel.from_pretrained(
        folder, trust_remote_code=False, use_safetensors=safetensors or None
    ).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
    recipe = image_recipe_of(processor)
    text = None
    if model_type in TEXT_TYPES:
        image = _ImageFeatures(model)
        text = _text_tower(model, folder, model_type, config)
    else:
        image = _Pooled(model, cls_token=model_type in CLS_TYPES)

    def prepare(picture):
        return processor(images=[picture], return_tensors="np")["pixel_values"][0]

    dim = probe_dim(image, _output_size(recipe))
    spec = replace(spec, dim=dim, weights_id=source.weights_id, has_text=text is not None)
    return TorchFamilyEmbedder(spec, image, prepare, recipe, text)

"""Named presets: the models people ask for, each a short id for a family id, with its facts.

Plain data (fastembed's model list style): `python -m embeddings models` shows them with whether
their weights are already here. `download_mb` is the weights file's approximate size on the hub
(what a first build downloads); `dim` and `input_size` are the published model's;
`gmacs` is the image tower's cost per image at its input size, in billions of
multiply-accumulates as timm lists them: the app scales the images/s this machine measured
building another model by it, for its time estimate before a build.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    id: str
    family_id: str
    source: str
    licence: str
    download_mb: int
    dim: int
    input_size: int
    has_text: bool
    description: str
    gmacs: float


PRESETS: tuple[Preset, ...] = (
    Preset(
        "fashion-clip",
        "hf:patrickjohncyh/fashion-clip",
        "https://huggingface.co/patrickjohncyh/fashion-clip",
        "MIT",
        605,
        512,
        224,
        True,
        "FashionCLIP: CLIP ViT-B/32 fine-tuned on 800k Farfetch products",
        4.4,
    ),
    Preset(
        "marqo-fashion-siglip",
        "open_clip:hf-hub:Marqo/marqo-fashionSigLIP",
        "https://huggingface.co/Marqo/marqo-fashionSigLIP",
        "Apache-2.0",
        813,
        768,
        224,
        True,
        "Marqo-FashionSigLIP: SigLIP ViT-B/16 fine-tuned for fashion search (open_clip)",
        17.6,
    ),
    Preset(
        "siglip2-base",
        "hf:google/siglip2-base-patch16-224",
        "https://huggingface.co/google/siglip2-base-patch16-224",
        "Apache-2.0",
        1500,
        768,
        224,
        True,
        "SigLIP 2 ViT-B/16, 224 px, Gemma tokenizer",
        17.6,
    ),
    Preset(
        "siglip-base",
        "hf:google/siglip-base-patch16-224",
        "https://huggingface.co/google/siglip-base-patch16-224",
        "Apache-2.0",
        813,
        768,
        224,
        True,
        "SigLIP ViT-B/16, 224 px (resized, not cropped)",
        17.6,
    ),
    Preset(
        "dinov2-small",
        "hf:facebook/dinov2-small",
        "https://huggingface.co/facebook/dinov2-small",
        "Apache-2.0",
        88,
        384,
        224,
        False,
        "DINOv2 ViT-S/14, self-supervised image features (no text tower: a text bridge)",
        6.1,
    ),
    Preset(
        "clip-vit-b-32-laion",
        "open_clip:ViT-B-32/laion2b_s34b_b79k",
        "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "MIT",
        605,
        512,
        224,
        True,
        "open_clip ViT-B/32 trained on LAION-2B",
        4.4,
    ),
    Preset(
        "convnext-tiny-in22k",
        "timm:convnext_tiny.fb_in22k_ft_in1k",
        "https://huggingface.co/timm/convnext_tiny.fb_in22k_ft_in1k",
        "Apache-2.0",
        114,
        768,
        224,
        False,
        "timm ConvNeXt-Tiny, ImageNet-22k then 1k, pooled features (a text bridge)",
        4.5,
    ),
)

BY_ID = {preset.id: preset for preset in PRESETS}


def get_preset(model_id: str) -> Preset | None:
    return BY_ID.get(model_id)

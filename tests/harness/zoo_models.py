"""Tiny random models of every family of the open model zoo, each saved in its library's own
local layout, so the real loading, exporting and serving code runs on them with no network:

- transformers: a CLIP (`tiny_models.make_tiny_clip`), a SigLIP with a SentencePiece model
  trained here, a DINOv2 (position embeddings interpolated, as the real one's are), each
  written with `save_pretrained`;
- open_clip: a `local-dir:` folder (`open_clip_config.json` + `open_clip_model.safetensors`),
  tokenised by the package's own BPE;
- timm: a `local-dir:` folder written by `timm.models.save_for_hf` (safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness.tiny_models import TINY_VIT, make_tiny_clip

#: Text the SentencePiece model is trained on: product words, so titles tokenise into pieces.
CORPUS = [
    "red running shoes for men",
    "navy blue slim fit jeans with five pockets",
    "women's white cotton t-shirt, short sleeves",
    "black leather handbag with a gold buckle",
    "green summer dress; floral print",
    "kids' yellow rain jacket (hooded)",
    "grey wool socks, pack of three",
    "brown suede boots & laces",
] * 20


def make_tiny_siglip(folder: Path, seed: int = 0) -> Path:
    """A random SigLIP (32 px images, 32-d) with a SentencePiece tokenizer trained
    here on product words, and its image processor (resize to 32 x 32, no crop)."""
    import sentencepiece as spm
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder.parent / f"{folder.name}-corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder.parent / f"{folder.name}-spiece"),
        vocab_size=64,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    tokenizer = SiglipTokenizer(
        vocab_file=str(folder.parent / f"{folder.name}-spiece.model"), model_max_length=16
    )
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=16,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(TINY_VIT),  # a copy: the config may add keys
    )
    SiglipModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A random DINOv2 (32-d) trained for 48 px but fed 32 px crops from 36 px, as the real one
    is fed 224 from 256 with 518 px position embeddings (interpolated)."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=48,
        patch_size=8,
    )
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        do_convert_rgb=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


def make_tiny_open_clip(folder: Path, seed: int = 0) -> Path:
    """An open_clip `local-dir:` folder: a random 16-d CLIP (32 px, open_clip's BPE)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "patch_size": 8,
            "head_width": 8,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 4,
            "layers": 2,
        },
    }
    preprocess_cfg = {
        "size": 32,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


def make_tiny_timm(folder: Path, seed: int = 0) -> Path:
    """A timm `local-dir:` folder: a random 2-block ViT (32-d, 32 px crops at crop_pct 0.9)."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model_args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        pretrained_cfg_overlay=dict(input_size=(3, 32, 32), crop_pct=0.9),
        **model_args,
    )
    save_for_hf(model, str(folder), model_args=model_args, safe_serialization=True)
    return Path(folder)


def make_zoo(root: Path) -> dict[str, Path]:
    """family id -> folder, one tiny model of every family."""
    root = Path(root)
    return {
        f"hf:{make_tiny_clip(root / 'clip', seed=11)}": root / "clip",
        f"hf:{make_tiny_siglip(root / 'siglip', seed=12)}": root / "siglip",
        f"hf:{make_tiny_dinov2(root / 'dinov2', seed=13)}": root / "dinov2",
        f"open_clip:local-dir:{make_tiny_open_clip(root / 'open_clip', seed=14)}": root
        / "open_clip",
        f"timm:local-dir:{make_tiny_timm(root / 'timm', seed=15)}": root / "timm",
    }


def cached_zoo() -> dict[str, Path]:
    """`make_zoo` made once per version of this file under `$EMBEDDINGS_TEST_CACHE` (default:
    the system's temp folder), so the family ids (which hold the folders' paths) and their ONNX
    exports are the same across test modules and runs (`EMBEDDINGS_TEST_MODELS`)."""
    import fcntl
    import hashlib
    import os
    import shutil
    import tempfile

    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    root = Path(os.environ.get("EMBEDDINGS_TEST_CACHE") or tempfile.gettempdir())
    root = root / "embeddings-test-cache"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"zoo-{key}"
    with open(root / f"zoo-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            make_zoo(folder)
            (folder / "complete").write_text("")
    return {
        f"hf:{folder / 'clip'}": folder / "clip",
        f"hf:{folder / 'siglip'}": folder / "siglip",
        f"hf:{folder / 'dinov2'}": folder / "dinov2",
        f"open_clip:local-dir:{folder / 'open_clip'}": folder / "open_clip",
        f"timm:local-dir:{folder / 'timm'}": folder / "timm",
    }

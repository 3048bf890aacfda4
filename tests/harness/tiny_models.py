"""Tiny, randomly initialised models that tests make on the spot, so each backend's real
loading code runs with no network: a CLIP saved with `save_pretrained`, a ResNet-50 state dict,
and a lightning-bolts-style SimCLR checkpoint."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

# The image tower of every tiny transformers model here (CLIP, SigLIP): a 2-layer ViT on 32 px.
TINY_VIT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    image_size=32,
    patch_size=8,
)


def make_tiny_clip(folder: Path, seed: int = 0, model_max_length: int | None = 77) -> Path:
    """Save a random CLIP (16-d projection, 32x32 images) with tokenizer and image processor
    (`model_max_length=None`: a tokenizer config that does not say, as some hub models)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A byte-level BPE vocabulary with no merges: every character is a token.
    chars = list(_bytes_to_unicode())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    limit = {} if model_max_length is None else {"model_max_length": model_max_length}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], **limit)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(TINY_VIT),  # a copy: the config may add keys
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for the bytes 0..255."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(chr(byte))
        else:
            codes.append(chr(256 + extra))
            extra += 1
    return codes


def make_resnet50_state_dict(path: Path, seed: int = 0) -> Path:
    """A torchvision resnet50 state dict with random weights, saved with torch.save."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    torch.save(resnet50(weights=None).state_dict(), path)
    return Path(path)


#: The Lightning modules a Lightning 1.0/1.1 checkpoint names, and the classes it pickles.
LIGHTNING_CLASSES = {
    "pytorch_lightning.callbacks.model_checkpoint": "ModelCheckpoint",
    "pytorch_lightning.utilities.parsing": "AttributeDict",
}


@contextlib.contextmanager
def lightning_classes():
    """Stand-in `pytorch_lightning` modules in `sys.modules` while a checkpoint is saved, so
    that pickle writes the real Lightning names (Lightning itself is not installed here)."""
    added = []
    for module_name, class_name in LIGHTNING_CLASSES.items():
        parts = module_name.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        base = dict if class_name == "AttributeDict" else object
        cls = type(class_name, (base,), {"__module__": module_name, "__qualname__": class_name})
        setattr(sys.modules[module_name], class_name, cls)
    try:
        yield {
            name: getattr(sys.modules[module], name) for module, name in LIGHTNING_CLASSES.items()
        }
    finally:
        for name in added:
            sys.modules.pop(name, None)


def make_bolts_simclr_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint laid out as lightning-bolts' ImageNet SimCLR file (written by PyTorch
    Lightning 1.0/1.1): `state_dict` with the backbone under `encoder.`, the projection head
    under `projection.` and the online evaluator under `non_linear_evaluator.`; the callback
    states keyed by the callback's class (`pytorch_lightning.callbacks.model_checkpoint.
    ModelCheckpoint`, pickled by name); `optimizer_states`, `lr_schedulers` and the
    hyper-parameters as Lightning's `AttributeDict`."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    backbone = resnet50(weights=None).state_dict()
    state = {f"encoder.{key}": value for key, value in backbone.items()}
    state["projection.model.0.weight"] = torch.randn(2048, 2048)
    state["projection.model.0.bias"] = torch.zeros(2048)
    state["projection.model.3.weight"] = torch.randn(128, 2048)
    state["non_linear_evaluator.block_forward.2.weight"] = torch.randn(1000, 2048)
    state["non_linear_evaluator.block_forward.2.bias"] = torch.zeros(1000)
    with lightning_classes() as classes:
        hyper = classes["AttributeDict"](
            gpus=8,
            num_nodes=8,
            arch="resnet50",
            dataset="imagenet",
            batch_size=64,
            learning_rate=4.8,
            max_epochs=800,
            optimizer="lars",
            temperature=0.1,
        )
        checkpoint = {
            "epoch": 799,
            "global_step": 1,
            "pytorch-lightning_version": "1.0.8",
            "callbacks": {
                classes["ModelCheckpoint"]: {
                    "monitor": "val_loss",
                    "best_model_score": torch.tensor(4.62),
                    "best_model_path": "/checkpoints/epoch=799.ckpt",
                }
            },
            "optimizer_states": [
                {"state": {0: {"momentum_buffer": torch.zeros(4)}}, "param_groups": [{"lr": 4.8}]}
            ],
            "lr_schedulers": [{"last_epoch": 800, "lr_lambdas": [None]}],
            "state_dict": state,
            "hparams_name": "kwargs",
            "hyper_parameters": hyper,
        }
        torch.save(checkpoint, path)
    return Path(path)

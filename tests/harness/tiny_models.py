"""Tiny, randomly initialised models that tests make on the spot, so each backend's real
loading code runs with no network: a CLIP saved with `save_pretrained`, a ResNet-50 state dict,
and a lightning-bolts-style SimCLR checkpoint."""

from __future__ import annotations

from pathlib import Path


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a random CLIP (16-d projection, 32x32 images) with tokenizer and image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A byte-level BPE vocabulary with no merges: every character is a token.
    chars = list(_bytes_to_unicode())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
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
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=32,
            patch_size=8,
        ),
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


def make_bolts_simclr_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint laid out as lightning-bolts' SimCLR saves it: backbone under `encoder.`,
    a projection head under `projection.`, plus trainer bookkeeping."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    backbone = resnet50(weights=None).state_dict()
    state = {f"encoder.{key}": value for key, value in backbone.items()}
    state["projection.model.0.weight"] = torch.randn(2048, 2048)
    state["projection.model.0.bias"] = torch.zeros(2048)
    state["projection.model.3.weight"] = torch.randn(128, 2048)
    torch.save(
        {"epoch": 799, "global_step": 1, "pytorch-lightning_version": "1.0.0", "state_dict": state},
        path,
    )
    return Path(path)

"""CLIP ViT-B/32 through sentence-transformers: images and texts in one space."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from embeddings.errors import ModelLoadError
from embeddings.models import get_spec
from embeddings.models.allocator import tune_allocator
from embeddings.models.base import Embedder, l2_normalise
from embeddings.models.identity import local_weights_id

DEFAULT_NAME = "clip-ViT-B-32"


class ClipEmbedder(Embedder):
    """CLIP on torch through sentence-transformers (the ONNX path's reference and exporter)."""

    runtime = "torch"

    def __init__(self, model, spec):
        tune_allocator()
        self.model = model
        self.spec = spec

    @property
    def inference_threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def prepare(self, image: Image.Image) -> Image.Image:
        return image  # sentence-transformers' CLIP processor resizes and normalises per batch

    def embed_prepared(self, batch: Sequence[Image.Image]) -> np.ndarray:
        vectors = self.model.encode(
            list(batch),
            batch_size=max(1, len(batch)),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return l2_normalise(vectors)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        return l2_normalise(vectors)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (saves a minute of retries offline)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub.constants import ENDPOINT

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load(weights: str | Path | None = None) -> ClipEmbedder:
    """Load CLIP from the Hugging Face hub (`clip-ViT-B-32`, cached in the HF cache) or a local
    folder; see `clip_weights_id` for the weights id each gets."""
    spec = get_spec("clip")
    name = str(weights or os.environ.get("EMBEDDINGS_CLIP_MODEL") or DEFAULT_NAME)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelLoadError(f"model 'clip' needs sentence-transformers ({exc})") from exc
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        try:  # the cache first: no network round trip when the weights are already here
            model = SentenceTransformer(name, device="cpu", local_files_only=True)
        except Exception:
            if not Path(name).exists() and not _hub_reachable():
                raise OSError(
                    "huggingface.co cannot be reached (no network?) and the model is not cached"
                ) from None
            model = SentenceTransformer(name, device="cpu")
    except Exception as exc:  # hub errors, missing files, offline mode
        raise ModelLoadError(
            f"model 'clip' could not load {name!r}: looked in the Hugging Face cache "
            f"{HF_HUB_CACHE} and on the hub ({type(exc).__name__}: {str(exc)[:300]}). "
            "Run once with network access, or set EMBEDDINGS_CLIP_MODEL to a local folder."
        ) from exc
    cap_text_length(model)
    dimension_of = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    dim = dimension_of()
    if not dim:
        dim = int(model.encode(["probe"], convert_to_numpy=True).shape[1])
    return ClipEmbedder(model, replace(spec, weights_id=clip_weights_id(name), dim=int(dim)))


def cap_text_length(model) -> None:
    """Cap the texts' token length at what the text tower has positions for.

    The length comes from the hub tokenizer's `model_max_length`, which a tokenizer config
    without it sets to a huge number; sentence-transformers caps it only at a top-level
    `max_position_embeddings`, which a CLIP config keeps in its `text_config`. Uncapped, a long
    text would index past the position embeddings (and the ONNX export would record it).
    """
    module = model[0]
    config = getattr(module.auto_model, "config", None)
    text_config = getattr(config, "text_config", config)
    positions = getattr(text_config, "max_position_embeddings", None)
    if positions and (not module.max_seq_length or module.max_seq_length > positions):
        module.max_seq_length = int(positions)


def clip_weights_id(name: str) -> str:
    """The weights id of CLIP loaded from `name`: for a local folder (or file), the content hash
    of its files (`identity.weights_id_for_path`); for the default hub model, the spec's id as
    before; for another hub name, that name."""
    if Path(name).exists():
        return local_weights_id("clip", name)
    return get_spec("clip").weights_id if name == DEFAULT_NAME else name

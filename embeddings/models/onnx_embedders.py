"""Embedders that run an export through ONNX Runtime: numpy, PIL and `tokenizers`, no torch.

- `OnnxImageEmbedder`: `prepare` is the export's image recipe (`embeddings.models.preprocess`),
  per image in the build's worker threads; `embed_prepared` runs a batch through the session.
- `OnnxTextTower`: texts -> token ids with the export's `tokenizer.json` (the `tokenizers`
  library, as transformers uses it: same vocabulary, normaliser, special tokens), padded to the
  longest text and truncated at the export's `max_length`, then the session. Used for CLIP's
  text tower and for the bridges' sentence encoder.
- `OnnxClipEmbedder`: both towers of one CLIP export.

Every output row is L2-normalised float32, like the torch embedders'.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from embeddings.errors import ModelLoadError
from embeddings.models.base import Embedder, ModelSpec, l2_normalise
from embeddings.models.onnx_cache import OnnxExport
from embeddings.models.onnx_session import OnnxSession
from embeddings.models.preprocess import image_recipe


def configure_tokenizer(tokenizer, settings: dict):
    """Truncate at `max_length`; pad to the longest text, or to `pad_to` tokens when the model
    expects a fixed length (SigLIP, open_clip)."""
    tokenizer.enable_truncation(int(settings["max_length"]))
    pad_to = settings.get("pad_to")
    tokenizer.enable_padding(
        pad_id=int(settings["pad_id"]),
        pad_token=settings["pad_token"],
        length=int(pad_to) if pad_to else None,
    )
    return tokenizer


def token_feeds(tokenizer, settings: dict, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The text graph's inputs for `texts`: `input_ids` and, unless `settings["inputs"]` leaves
    it out (SigLIP), `attention_mask`, int64 (n, tokens)."""
    texts = [t.lower() if settings.get("lowercase") else t for t in texts]
    encodings = tokenizer.encode_batch(list(texts))
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    return {name: feeds[name] for name in settings.get("inputs", feeds)}


class OnnxTextTower:
    """Texts -> L2-normalised vectors through a tokenizer file and an ONNX text graph."""

    def __init__(self, export: OnnxExport, settings: dict, *, hint: str = ""):
        self.settings = settings
        self.session = OnnxSession(export.path(settings["file"]), hint=hint)
        self._tokenizer_path = export.path(settings["tokenizer"])
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.settings["dim"])

    def tokenizer(self):
        """The `tokenizers.Tokenizer`, truncating and padding as the torch path does."""
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                try:
                    tokenizer = Tokenizer.from_file(str(self._tokenizer_path))
                except Exception as exc:  # tokenizers raises a bare Exception on bad files
                    raise ModelLoadError(f"cannot read {self._tokenizer_path}: {exc}") from exc
                self._tokenizer = configure_tokenizer(tokenizer, self.settings)
            return self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim), L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self.session.run(token_feeds(self.tokenizer(), self.settings, texts)))


class OnnxImageEmbedder(Embedder):
    """An image model (a CNN, or CLIP's image tower) run by ONNX Runtime."""

    runtime = "onnx"

    def __init__(self, spec: ModelSpec, export: OnnxExport, *, hint: str = ""):
        settings = export.preprocess["image"]
        self.spec = spec
        self.export = export
        self._prepare = image_recipe(settings)
        self._input = settings.get("input", "pixel_values")
        self.session = OnnxSession(export.path(settings["file"]), hint=hint)

    @property
    def inference_threads(self) -> int:
        return self.session.threads

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self._prepare(image)

    def embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self.session.run({self._input: np.stack(batch)}))


class OnnxClipEmbedder(OnnxImageEmbedder):
    """CLIP's image and text towers from one export (each session made on first use)."""

    def __init__(self, spec: ModelSpec, export: OnnxExport, *, hint: str = ""):
        super().__init__(spec, export, hint=hint)
        self.text_tower = OnnxTextTower(export, export.preprocess["text"], hint=hint)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_tower.encode(list(texts))


def embedder_for_export(spec: ModelSpec, export: OnnxExport, *, hint: str = "") -> Embedder:
    """The embedder an export's manifest calls for, with the spec's weights id and dimension."""
    manifest = export.manifest
    spec = replace(spec, weights_id=manifest["weights_id"], dim=int(manifest["dim"]))
    kind = manifest.get("kind")
    if kind == "image":
        return OnnxImageEmbedder(spec, export, hint=hint)
    if kind == "clip":
        return OnnxClipEmbedder(spec, export, hint=hint)
    raise ModelLoadError(f"the export in {export.folder} is of unknown kind {kind!r}")

"""torch as the exporter: a torch embedder written out as ONNX, checked against torch first.

The one module of the serving-free side that imports torch at the top (its callers import it
only when an export must be made). `export_embedder` and `export_sentence_encoder` write into a
folder (a staging folder that `embeddings.models.onnx_export.ensure_export` swaps in):

- `image.onnx` (a CNN's pooled features, or CLIP's image embeds): input `pixel_values`, float32
  (batch, 3, H, W), batch dynamic;
- `text.onnx` (CLIP's text embeds, or MiniLM's mean-pooled token embeddings): inputs
  `input_ids`, `attention_mask` int64 (batch, tokens), both dynamic, and `tokenizer.json`;
- `preprocess.json`: the image recipe (`embeddings.models.preprocess`) and the text settings.

Like rclip's converter, an export whose outputs drift from torch's on a fixed batch (largest
absolute difference of the L2-normalised vectors >= `MAX_ABS_DRIFT`, or smallest cosine <
`MIN_COSINE`) is refused: `ExportDriftError`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from embeddings.errors import ModelLoadError
from embeddings.models.base import Embedder, l2_normalise
from embeddings.models.onnx_cache import PREPROCESS_FILE, TOKENIZER_FILE
from embeddings.models.onnx_session import OnnxSession

#: ONNX opset of every export (the torch exporter's own; ONNX Runtime >= 1.14 runs it).
OPSET = 18
MAX_ABS_DRIFT = 1e-4
MIN_COSINE = 0.9999
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
#: The fixed texts the text towers are checked on: short, long, cased, accented, CJK, empty.
PROBE_TEXTS = (
    "Red running shoes",
    "navy blue slim-fit jeans with five pockets and a button fly, for men",
    "Ünïcödé façade — 東京 スニーカー",
    "",
    " ".join(["a very long product title"] * 60),
)


class ExportDriftError(ModelLoadError):
    """The exported graph's outputs differ from torch's beyond the tolerance."""


def probe_images(count: int = 6) -> list:
    """Deterministic product-like RGB images of several sizes and shapes (no file needed)."""
    from PIL import Image

    sizes = [(60, 80), (80, 60), (224, 224), (31, 47), (300, 200), (64, 64)]
    images = []
    for number in range(count):
        rng = np.random.default_rng(number)
        width, height = sizes[number % len(sizes)]
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        pixels = ramp * rng.uniform(0.2, 1.0, size=(1, 1, 3)) + rng.normal(
            0, 30, (height, width, 3)
        )
        top, left = height // 4, width // 4
        pixels[top : 3 * top, left : 3 * left] = rng.uniform(0, 255, size=3)
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"))
    return images


def measure_drift(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Largest absolute difference and smallest cosine between the L2-normalised rows."""
    reference, candidate = l2_normalise(reference), l2_normalise(candidate)
    return {
        "max_abs": float(np.abs(reference - candidate).max()),
        "min_cosine": float((reference * candidate).sum(axis=1).min()),
    }


def check_drift(drift: dict, what: str) -> None:
    if drift["max_abs"] >= MAX_ABS_DRIFT or drift["min_cosine"] < MIN_COSINE:
        raise ExportDriftError(
            f"the ONNX export of {what} drifts from torch (largest difference "
            f"{drift['max_abs']:.2e}, smallest cosine {drift['min_cosine']:.7f}; the limits are "
            f"{MAX_ABS_DRIFT:g} and {MIN_COSINE}); it was not kept. Use the torch runtime "
            "(EMBEDDINGS_RUNTIME=torch) for this model"
        )


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_onnx(
    module: torch.nn.Module,
    inputs: tuple,
    path: Path,
    names: list[str],
    output: str,
    *,
    tokens: bool = True,
) -> None:
    """`torch.onnx.export` (the dynamo exporter) with every input's first axis dynamic, and a
    text input's second (tokens) too unless the model takes a fixed length (`tokens=False`);
    its progress lines and warnings are kept quiet."""
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("tokens", max=4096)
    shapes = tuple(
        {0: batch, 1: length} if tensor.dim() == 2 and tokens else {0: batch} for tensor in inputs
    )
    with (
        torch.inference_mode(False),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            inputs,
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )


def _torch_outputs(module: torch.nn.Module, inputs: tuple) -> np.ndarray:
    with torch.inference_mode():
        return module(*inputs).float().numpy()


def _exported_outputs(path: Path, names: list[str], inputs: tuple) -> np.ndarray:
    session = OnnxSession(path)
    return session.run({name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)})


def _export_checked(module, inputs: tuple, path: Path, names: list[str], output: str, what: str):
    """Export `module`, run the file on `inputs` and compare with torch; returns the drift."""
    export_onnx(module, inputs, path, names, output)
    drift = measure_drift(_torch_outputs(module, inputs), _exported_outputs(path, names, inputs))
    check_drift(drift, what)
    return drift


class _ImageFeatures(torch.nn.Module):
    """CLIP's projected image embedding (transformers returns it in an output object)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values):
        out = self.clip.get_image_features(pixel_values=pixel_values)
        return getattr(out, "pooler_output", out)


class _TextFeatures(torch.nn.Module):
    """CLIP's projected text embedding."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids, attention_mask):
        out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return getattr(out, "pooler_output", out)


class _MeanPooled(torch.nn.Module):
    """A BERT-like encoder's token embeddings averaged over the real tokens (sentence-
    transformers' mean pooling); the caller L2-normalises."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def export_embedder(embedder: Embedder, folder: Path) -> dict:
    """Export a torch embedder (a CNN or CLIP) into `folder`; returns the manifest's fields."""
    from embeddings.models.clip import ClipEmbedder
    from embeddings.models.torch_common import TorchCNNEmbedder

    if isinstance(embedder, TorchCNNEmbedder):
        return _export_cnn(embedder, Path(folder))
    if isinstance(embedder, ClipEmbedder):
        return _export_clip(embedder, Path(folder))
    raise ModelLoadError(f"model {embedder.id!r} has no ONNX exporter")


def _export_cnn(embedder, folder: Path) -> dict:
    network = copy.deepcopy(embedder.network).to(memory_format=torch.contiguous_format)
    pixels = torch.from_numpy(np.stack([embedder.prepare(image) for image in probe_images()]))
    drift = _export_checked(
        network, (pixels,), folder / IMAGE_FILE, ["pixel_values"], "features", embedder.id
    )
    image = {
        "file": IMAGE_FILE,
        "input": "pixel_values",
        "kind": "pad_square",
        "size": embedder.size,
        "resample": "bilinear",
        "fill": [255, 255, 255],
        "mean": embedder.mean,
        "std": embedder.std,
    }
    (folder / PREPROCESS_FILE).write_text(json.dumps({"image": image}, indent=2))
    return {
        "kind": "image",
        "dim": embedder.dim,
        "input_size": [embedder.size, embedder.size],
        "drift": {"image": drift},
    }


def _export_clip(embedder, folder: Path) -> dict:
    module = embedder.model[0]
    clip, processor = module.auto_model, module.processor
    image = clip_image_settings(processor.image_processor)
    pixels = processor.image_processor(images=probe_images(), return_tensors="pt")["pixel_values"]
    drift = {
        "image": _export_checked(
            _ImageFeatures(clip),
            (pixels,),
            folder / IMAGE_FILE,
            ["pixel_values"],
            "image_embeds",
            "CLIP's image tower",
        )
    }
    text, drift["text"] = _export_text(_TextFeatures(clip), module, folder, "CLIP's text tower")
    (folder / PREPROCESS_FILE).write_text(json.dumps({"image": image, "text": text}, indent=2))
    return {
        "kind": "clip",
        "dim": embedder.dim,
        "input_size": image["crop"],
        "max_tokens": text["max_length"],
        "drift": drift,
    }


def clip_image_settings(image_processor) -> dict:
    """The `resize_crop` recipe of a transformers CLIP image processor (refusing others)."""
    size, crop = image_processor.size, image_processor.crop_size
    shortest = size.get("shortest_edge") if hasattr(size, "get") else size.shortest_edge
    steps = (image_processor.do_resize, image_processor.do_center_crop, image_processor.do_rescale)
    if not shortest or not all(steps) or not image_processor.do_normalize:
        raise ModelLoadError(
            "this CLIP's image processor does not resize the shortest edge, crop the centre, "
            f"rescale and normalise ({image_processor}); the ONNX path cannot reproduce it: "
            "use the torch runtime (EMBEDDINGS_RUNTIME=torch)"
        )
    height = crop.get("height") if hasattr(crop, "get") else crop.height
    width = crop.get("width") if hasattr(crop, "get") else crop.width
    return {
        "file": IMAGE_FILE,
        "input": "pixel_values",
        "kind": "resize_crop",
        "shortest_edge": int(shortest),
        "crop": [int(height), int(width)],
        "resample": "bicubic" if int(image_processor.resample) == 3 else "bilinear",
        "rescale": float(image_processor.rescale_factor),
        "mean": [float(v) for v in image_processor.image_mean],
        "std": [float(v) for v in image_processor.image_std],
    }


def _export_text(module, source, folder: Path, what: str):
    """Export a text graph and the tokenizer of `source` (a sentence-transformers module);
    returns (text settings, drift)."""
    tokenizer = source.tokenizer
    batch = tokenizer(list(PROBE_TEXTS), padding=True, truncation=True, return_tensors="pt")
    inputs = (batch["input_ids"], batch["attention_mask"])
    drift = _export_checked(
        module, inputs, folder / TEXT_FILE, ["input_ids", "attention_mask"], "text_embeds", what
    )
    tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    settings = {
        "file": TEXT_FILE,
        "tokenizer": TOKENIZER_FILE,
        "max_length": int(source.max_seq_length),
        "pad_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "lowercase": bool(getattr(source, "do_lower_case", False)),
        "dim": int(_torch_outputs(module, inputs).shape[1]),
    }
    return settings, drift


def export_sentence_encoder(model, folder: Path) -> dict:
    """Export a sentence-transformers mean-pooling text encoder (all-MiniLM-L6-v2) into
    `folder`: `text.onnx`, `tokenizer.json`, `preprocess.json`; returns the manifest's fields."""
    module = model[0]
    folder = Path(folder)
    text, drift = _export_text(
        _MeanPooled(module.auto_model), module, folder, "the sentence encoder"
    )
    (folder / PREPROCESS_FILE).write_text(json.dumps({"text": text}, indent=2))
    return {
        "kind": "text",
        "dim": text["dim"],
        "max_tokens": text["max_length"],
        "drift": {"text": drift},
    }

"""A family model (`TorchFamilyEmbedder`) written out as ONNX, checked against torch first.

The same folder layout and checks as the built-ins (`embeddings.models.export`): `image.onnx`,
and for a text tower `text.onnx` and `tokenizer.json`, each refused when its vectors drift from
torch's (cosine < 0.9999). Before the text graph is kept, `tokenizer.json` (with the padding and
truncation the model expects) must give the very token ids the library's own tokenizer gives on
the probe texts, else the export is refused: served text queries would silently differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from embeddings.errors import ModelLoadError
from embeddings.models.export import (
    IMAGE_FILE,
    PROBE_TEXTS,
    TEXT_FILE,
    _exported_outputs,
    _torch_outputs,
    check_drift,
    export_onnx,
    measure_drift,
    probe_images,
)
from embeddings.models.onnx_cache import PREPROCESS_FILE, TOKENIZER_FILE
from embeddings.models.onnx_embedders import configure_tokenizer, token_feeds
from embeddings.models.torch_family import TextTower, TorchFamilyEmbedder


def _checked(module, inputs, path: Path, names, output: str, what: str, *, tokens=True) -> dict:
    export_onnx(module, inputs, path, names, output, tokens=tokens)
    drift = measure_drift(_torch_outputs(module, inputs), _exported_outputs(path, names, inputs))
    check_drift(drift, what)
    return drift


def check_tokenizer(model_id: str, text: TextTower) -> None:
    """Refuse a `tokenizers` file that does not give the library's token ids."""
    tokenizer = configure_tokenizer(text.tokenizer, text.settings)
    ours = token_feeds(tokenizer, text.settings, PROBE_TEXTS)
    theirs = text.tokenize(list(PROBE_TEXTS))
    for name in text.settings["inputs"]:
        want = theirs[name].to(torch.int64).numpy()
        if ours[name].shape != want.shape or not np.array_equal(ours[name], want):
            raise ModelLoadError(
                f"model {model_id!r}: its tokenizer converted for serving gives other {name} than "
                f"the library's on {PROBE_TEXTS[0]!r}...: {ours[name][0][:12].tolist()} against "
                f"{want[0][:12].tolist()}; nothing was exported (use EMBEDDINGS_RUNTIME=torch)"
            )


def export_family(embedder: TorchFamilyEmbedder, folder: Path) -> dict:
    """Export `embedder` into `folder`; returns the manifest's fields."""
    folder = Path(folder)
    pixels = torch.from_numpy(np.stack([embedder.prepare(image) for image in probe_images()]))
    drift = {
        "image": _checked(
            embedder.image_module,
            (pixels,),
            folder / IMAGE_FILE,
            ["pixel_values"],
            "image_embeds",
            f"{embedder.id}'s image tower",
        )
    }
    preprocess = {"image": {**embedder.recipe, "file": IMAGE_FILE, "input": "pixel_values"}}
    fields = {"kind": "image", "dim": embedder.dim, "input_size": list(pixels.shape[2:])}
    if embedder.text is not None:
        text = embedder.text
        check_tokenizer(embedder.id, text)
        drift["text"] = _checked(
            text.module,
            text.inputs(list(PROBE_TEXTS)),
            folder / TEXT_FILE,
            list(text.settings["inputs"]),
            "text_embeds",
            f"{embedder.id}'s text tower",
            tokens=not text.settings.get("pad_to"),
        )
        text.tokenizer.save(str(folder / TOKENIZER_FILE))
        preprocess["text"] = {
            **text.settings,
            "file": TEXT_FILE,
            "tokenizer": TOKENIZER_FILE,
            "dim": embedder.dim,
        }
        fields.update(kind="clip", max_tokens=int(text.settings["max_length"]))
    (folder / PREPROCESS_FILE).write_text(json.dumps(preprocess, indent=2))
    return {**fields, "drift": drift}

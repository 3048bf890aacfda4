"""Shared plumbing for the torch CNN backends (imported only by their loaders)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from embeddings.errors import ModelLoadError
from embeddings.models.allocator import tune_allocator
from embeddings.models.base import Embedder, ModelSpec
from embeddings.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, pad_square


class TorchCNNEmbedder(Embedder):
    """A CNN whose forward pass returns pooled features (n, dim); `prepare` is the `pad_square`
    recipe its ONNX export also uses (`embeddings.models.preprocess`)."""

    runtime = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        network: torch.nn.Module,
        *,
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        tune_allocator()
        self.spec = spec
        self.size = size
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self._mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        # channels_last lets oneDNN pick its fastest convolution kernels on CPU.
        self.network = network.eval().to(memory_format=torch.channels_last)

    @property
    def inference_threads(self) -> int:
        return torch.get_num_threads()

    def prepare(self, image: Image.Image) -> np.ndarray:
        return pad_square(image, size=self.size, mean=self._mean, std=self._std)

    @torch.inference_mode()
    def embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        inputs = torch.from_numpy(np.stack(batch)).contiguous(memory_format=torch.channels_last)
        features = self.network(inputs)
        features = torch.nn.functional.normalize(features.float(), dim=1)
        return features.numpy().astype(np.float32, copy=False)


#: What to do about weights that cannot be used, appended to each loading error.
WEIGHTS_HINT = "pass a PyTorch state dict saved with torch.save(model.state_dict())"
#: Paragraphs of torch's `weights_only` refusal that are advice, not the reason (one of them
#: suggests `weights_only=False`, which would run the file's code).
TORCH_ADVICE = (
    "Weights only load failed",
    "Please file an issue",
    "Check the documentation",
    "(1)",
    "(2)",
)
#: Terminal colour codes torch puts around its advice.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_state_dict(
    path: str | Path, model_id: str, *, allowed: Sequence[tuple[type, str]] = ()
) -> Mapping:
    """The dict saved in the weights file at `path`, read without running pickled code.

    Always `torch.load(weights_only=True)`, never `weights_only=False`. `allowed`: (inert
    stand-in class, "module.Name") pairs the file may name beside tensors (e.g. a training
    framework's bookkeeping classes), passed to `torch.serialization.safe_globals`; a stand-in
    must run nothing when it is built or given its state.

    Every failure is a `ModelLoadError` naming the model and the file: "no weights file at
    PATH" when nothing is there, else "could not read PATH as safe weights: ..." (a text file,
    pickled code that `weights_only=True` refuses, named with the class or function it asked
    for, a truncated or empty file, a folder, or a file that holds something other than a dict
    of tensors).
    """
    if not Path(path).exists():
        raise ModelLoadError(f"model {model_id!r}: no weights file at {path}; check the path")
    unsafe = f"model {model_id!r} could not read {path} as safe weights"
    try:
        with torch.serialization.safe_globals(list(allowed)):
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # every way torch.load fails: pickle, zip, EOF, OS errors...
        raise ModelLoadError(f"{unsafe}: {_load_failure(exc)}; {WEIGHTS_HINT}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
        raise ModelLoadError(
            f"{unsafe}: it holds a {type(state).__name__}, not a dict of named "
            f"tensors; {WEIGHTS_HINT}"
        )
    return state


def load_into(
    network: torch.nn.Module, state: Mapping, model_id: str, source: str | Path, architecture: str
) -> None:
    """`network.load_state_dict(state, strict=True)`; a mismatch is a `ModelLoadError`."""
    try:
        network.load_state_dict(state, strict=True)
    except Exception as exc:  # missing or unexpected keys, shapes, values that are not tensors
        raise ModelLoadError(
            f"model {model_id!r}: the weights in {source} do not fit "
            f"{architecture} ({_shorten(str(exc))}); pass weights saved from "
            f"{architecture}"
        ) from exc


def _load_failure(exc: Exception) -> str:
    """A short reason for a failed `torch.load`, without torch's advice to turn safety off.

    torch's refusal is paragraphs of advice around the reason, on lines that may start with a
    tab ("\tWeightsUnpickler error: Unsupported global: GLOBAL pkg.Class was not an allowed
    global by default. Please use ..."): the reason's line is kept up to that advice, so the
    message names the class or function the file asked for.
    """
    text = str(exc).strip()
    if not text:
        return f"the file is empty or cut short ({type(exc).__name__})"
    if not text.startswith("Weights only load failed"):
        return f"{type(exc).__name__}: {_shorten(text)}"
    reasons = []
    for line in _ANSI.sub("", text).splitlines():
        line = line.strip()
        if not line or line.startswith(TORCH_ADVICE):
            continue
        line = line.removeprefix("WeightsUnpickler error:").strip()
        reasons.append(line.split(" Please use", 1)[0].split(" Please file", 1)[0])
    detail = " ".join(reasons)
    return "not a PyTorch weights file, or it holds pickled code, which is never run" + (
        f" ({_shorten(detail)})" if detail else ""
    )


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

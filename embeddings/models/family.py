"""Loading any model named by a family id or a preset (no torch imported here).

A family id (`embeddings.models.naming`) or a preset (`embeddings.models.presets`) resolves to a
`Source`: a local folder or file holding the weights, and the weights id recorded in manifests:

- a local folder or file (the id's own `local-dir:` / `hf:FOLDER`, or `--weights ID=PATH`): the
  content hash of its files (`embeddings.models.identity`), so no path of this machine is kept;
- a hub repo: `REPO@COMMIT`, the revision's commit hash, from the Hugging Face cache, else
  downloaded (safetensors, configs and tokenizer files; a `.bin` only when the repo has no
  safetensors, read with `weights_only`).

On ONNX Runtime (the default) the model's export is found in the models cache (or a bundle's
encoders) for that weights id, or made once from the torch model by
`embeddings.models.family_export` with the parity check. Serving without torch and without the
hub cache, a hub-named model is served from the one export of it found in a bundle or the cache.
Every failure is a `ModelLoadError` naming the id and what was tried.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from embeddings.errors import EmbeddingsError, ModelLoadError
from embeddings.models.base import Embedder, ModelSpec
from embeddings.models.naming import FAMILIES, hub_repo, local_path, split_family_id
from embeddings.models.presets import get_preset

#: transformers model types with a text tower (`get_text_features`).
HF_TEXT_TYPES = frozenset({"clip", "siglip", "siglip2"})
#: Files fetched from a hub repo besides the weights: configs and tokenizer files.
HUB_CONFIGS = ["*.json", "*.txt", "*.model", "*.spm", "*.tiktoken"]
#: family -> (its safetensors weights, the pickled file fetched only when those are absent and
#: read with weights_only). A repo may hold several libraries' weights (Marqo's holds
#: transformers' and open_clip's): only the family's own are fetched.
HUB_WEIGHTS = {
    "hf": ("*.safetensors", "pytorch_model.bin"),
    "open_clip": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    "timm": ("model.safetensors", "pytorch_model.bin"),
}
UNRESOLVED = "unresolved"

#: Specs learned by loading (dimension, text tower), so later `get_spec` calls are exact.
_loaded_specs: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class Source:
    """Where a model's weights are on this machine, and their id."""

    path: Path
    weights_id: str
    origin: str  # for messages: "hub repo R at commit C" or "local folder/file"


def family_id_of(model_id: str) -> str | None:
    """The family id a preset or family id stands for; None for any other id."""
    preset = get_preset(model_id)
    if preset is not None:
        return preset.family_id
    prefix, sep, _ = model_id.partition(":")
    return model_id if sep and prefix in FAMILIES else None


def family_spec(model_id: str) -> ModelSpec:
    """The spec of a preset or family id, without loading (the dimension is 0 until a family
    model is loaded; its text tower is known from the family, or an `hf:` config when here)."""
    if model_id in _loaded_specs:
        return _loaded_specs[model_id]
    preset = get_preset(model_id)
    family_id = family_id_of(model_id)
    family, name = split_family_id(family_id)
    if preset is not None:
        has_text, dim, description = preset.has_text, preset.dim, preset.description
    else:
        has_text, dim = _has_text(family, family_id), 0
        description = f"{family} model {name}"
    return ModelSpec(
        id=model_id,
        description=description,
        dim=dim,
        weights_id=UNRESOLVED,
        has_text=has_text,
        onnx=True,
    )


def _has_text(family: str, family_id: str) -> bool:
    if family != "hf":
        return family == "open_clip"
    config = _hf_config_here(family_id)
    return bool(config) and config.get("model_type") in HF_TEXT_TYPES


def _hf_config_here(family_id: str) -> dict | None:
    """An `hf:` model's config.json when it is on this machine (its folder or the hub cache)."""
    folder = local_path(family_id)
    path = folder / "config.json" if folder is not None else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(hub_repo(family_id), "config.json")
        except Exception:  # noqa: BLE001 - no hub library, a malformed name: unknown here
            return None
        path = Path(found) if isinstance(found, str) else None
    try:
        return json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def _library_repo(model_id: str, family_id: str) -> str:
    """The hub repo a library name maps to (open_clip `ARCH/TAG`, timm `NAME`)."""
    family, _ = split_family_id(family_id)
    backend = importlib.import_module(FAMILIES[family].partition(":")[0])
    try:
        return backend.hub_repo_for(family_id)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's own refusal, reported with the id
        raise ModelLoadError(
            f"model {model_id!r}: {family} does not know {family_id!r} "
            f"({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc


def resolve_source(
    model_id: str, weights: str | os.PathLike | None = None, *, download: bool = False
) -> Source | None:
    """The weights of `model_id` on this machine (downloading them when `download`); None when
    they are on the hub only and `download` is false."""
    from embeddings.models.identity import local_weights_id

    family_id = family_id_of(model_id)
    path = Path(weights).expanduser() if weights else local_path(family_id)
    if path is not None:
        if not path.exists():
            raise ModelLoadError(
                f"model {model_id!r}: no folder or file at {path}; check the path"
                + (" given with --weights" if weights else "")
            )
        return Source(path, local_weights_id(model_id, path), f"local {path.name!r}")
    repo = hub_repo(family_id) or _library_repo(model_id, family_id)
    found = hub_snapshot(model_id, repo, family_id.partition(":")[0], download=download)
    if found is None:
        return None
    folder, commit = found
    return Source(folder, f"{repo}@{commit}", f"hub repo {repo} at commit {commit[:12]}")


def hub_snapshot(
    model_id: str, repo: str, family: str, *, download: bool
) -> tuple[Path, str] | None:
    """(snapshot folder, commit) of `repo` from the HF cache; when `download`, whatever of its
    configs, tokenizer files and the family's safetensors weights (else its pickled weights) the
    cache lacks is fetched first."""
    from huggingface_hub import snapshot_download

    safe, pickled = HUB_WEIGHTS[family]
    patterns = [*HUB_CONFIGS, safe]
    try:
        folder = Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (huggingface_hub's own errors)
        folder = None
    if not download:
        return (folder, folder.name) if folder is not None else None
    if folder is None or not any(folder.glob(safe)):
        folder = _download(model_id, repo, patterns)
    if not any(folder.glob(safe)) and not (folder / pickled).is_file():
        folder = _download(model_id, repo, [pickled])  # read with weights_only
    return folder, folder.name


def _download(model_id: str, repo: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    from embeddings.models.clip import _hub_reachable

    if not _hub_reachable():
        raise ModelLoadError(
            f"model {model_id!r}: looked for {repo} in the Hugging Face cache {HF_HUB_CACHE} "
            "(not there) and on the hub (huggingface.co cannot be reached: no network?). "
            f"Run once with network access, or pass a local copy: --weights {model_id}=PATH"
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - hub errors: unknown repo, gated, network
        raise ModelLoadError(
            f"model {model_id!r}: could not download {', '.join(patterns[-1:])} of {repo} "
            f"from the hub ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc


def expected_weights_id(model_id: str, weights=None) -> str:
    """The weights id loading would give, without downloading (`unresolved` when the weights
    are on the hub only)."""
    try:
        source = resolve_source(model_id, weights, download=False)
    except EmbeddingsError:
        return UNRESOLVED
    return source.weights_id if source is not None else UNRESOLVED


def load_torch(model_id: str, source: Source) -> Embedder:
    """The torch embedder of `model_id` from `source` (its family's loader)."""
    family, _ = split_family_id(family_id_of(model_id))
    module_name, _, function = FAMILIES[family].partition(":")
    spec = family_spec(model_id)
    try:
        loader = getattr(importlib.import_module(module_name), function)
        return loader(model_id, family_id_of(model_id), spec, source)
    except ModelLoadError as exc:
        if repr(model_id) in str(exc):
            raise
        raise ModelLoadError(
            f"model {model_id!r} could not load from the {source.origin}: {exc}"
        ) from exc
    except ImportError as exc:
        raise ModelLoadError(
            f"model {model_id!r} needs a package that is not installed ({exc}); "
            "install the project's requirements.txt"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the library's failure, with what was tried
        raise ModelLoadError(
            f"model {model_id!r} could not load with {family} from the {source.origin} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:400]})"
        ) from exc


def load_family(
    model_id: str,
    *,
    runtime: str,
    weights=None,
    messages: Callable[[str], None] | None = None,
) -> Embedder:
    """`load_model` for presets and family ids (see the module docstring)."""
    from embeddings.models.onnx_loader import ensure_export

    spec = family_spec(model_id)
    try:
        source, problem = resolve_source(model_id, weights, download=False), None
    except (ImportError, ModelLoadError) as exc:  # no timm/open_clip here, a name unknown
        source, problem = None, exc
    if runtime == "onnx" and source is None and weights is None:
        served = _only_export(model_id)
        if served is not None:
            return _from_export(spec, served)
    if isinstance(problem, ImportError):
        raise ModelLoadError(
            f"model {model_id!r} needs a package that is not installed ({problem}) and no "
            "export of it was found; install requirements.txt, or serve a bundle holding it"
        ) from problem
    if problem is not None:
        raise problem
    if source is None:
        source = resolve_source(model_id, weights, download=True)
    if runtime == "torch":
        return _remember(load_torch(model_id, source))

    def make(folder: Path) -> dict:
        from embeddings.models.family_export import export_family

        return export_family(load_torch(model_id, source), folder)

    export = ensure_export(model_id, source.weights_id, make, messages=messages)
    return _from_export(spec, export, hint=f"delete {export.folder} to make the export again")


def _from_export(spec: ModelSpec, export, hint: str = "") -> Embedder:
    """The export's embedder; whether it has a text tower is the export's to say (a server
    without the model's config knows it only from there)."""
    from embeddings.models.onnx_embedders import embedder_for_export

    spec = replace(spec, has_text=export.manifest.get("kind") == "clip")
    return _remember(embedder_for_export(spec, export, hint=hint))


def _remember(embedder: Embedder) -> Embedder:
    _loaded_specs[embedder.id] = embedder.spec
    return embedder


def _only_export(model_id: str):
    """The export of `model_id` in a bundle's encoders, else the one in the models cache, when
    there is exactly one (how a server without the hub cache finds a hub model's encoder)."""
    from embeddings.config import models_home
    from embeddings.models.onnx_cache import (
        MANIFEST_FILE,
        StaleExport,
        _read_only_homes,
        export_dir,
        open_export,
    )

    for home in [*_read_only_homes, models_home()]:
        folders = sorted(export_dir(model_id, "x", home).parent.glob(f"*/{MANIFEST_FILE}"))
        if len(folders) != 1:
            continue
        try:
            weights_id = json.loads(folders[0].read_text())["weights_id"]
            return open_export(folders[0].parent, model_id, weights_id)
        except (StaleExport, OSError, ValueError, KeyError, TypeError):
            continue
    return None


def cache_status(model_id: str) -> str:
    """ "cached" when a preset's or family model's weights are in the hub cache (or a local
    folder) or its export is in the models cache; else "downloads N MB" (a preset) or
    "downloads on first use"."""
    from embeddings.models.onnx_cache import MANIFEST_FILE, export_dir

    if any(export_dir(model_id, "x").parent.glob(f"*/{MANIFEST_FILE}")):
        return "cached"
    preset = get_preset(model_id)
    hub = "https://huggingface.co/"
    try:  # a preset's repo is in its source: no library import to map its name
        if preset is not None and preset.source.startswith(hub):
            repo, family = preset.source[len(hub) :], preset.family_id.partition(":")[0]
            found = hub_snapshot(model_id, repo, family, download=False)
        else:
            found = resolve_source(model_id, download=False)
    except (ImportError, EmbeddingsError):
        found = None
    if found is not None:
        return "cached"
    return f"downloads {preset.download_mb:,} MB" if preset else "downloads on first use"

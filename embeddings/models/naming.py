"""Model ids: the built-in short ids, presets, and family ids naming any model in its library's
own words (no heavy import here).

Family ids:

- `hf:REPO_OR_FOLDER`: a transformers model (hub repo or a folder saved with `save_pretrained`);
- `open_clip:ARCH/PRETRAINED`, `open_clip:hf-hub:REPO`, `open_clip:local-dir:FOLDER`;
- `timm:NAME`, `timm:hf-hub:REPO`, `timm:local-dir:FOLDER`.

An id may not hold `,` `+` or `=`: the command line uses them to separate model lists, fused
models and `--weights ID=PATH`. Catalogue and export folders are named by `folder_name(id)`: the
id itself when it is a plain short id (so today's catalogues keep their folders), else a readable
slug and a hash of the whole id (never two ids in one folder, never a `/`, `.` or `:` in a name).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from embeddings.errors import EmbeddingsError

#: family prefix -> "module:function" of its torch loader (imported only to load or export).
FAMILIES = {
    "hf": "embeddings.models.hf:load",
    "open_clip": "embeddings.models.open_clip_family:load",
    "timm": "embeddings.models.timm_family:load",
}
#: Characters the command line uses between ids: never part of one.
SEPARATORS = ",+="
HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"
_PLAIN = re.compile(r"[a-z0-9][a-z0-9_-]*")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def family_of(model_id: str) -> str | None:
    """The family prefix of a family id (`hf`, `open_clip`, `timm`), else None."""
    prefix, sep, _ = model_id.partition(":")
    return prefix if sep and prefix in FAMILIES else None


def split_family_id(model_id: str) -> tuple[str, str]:
    """(family, the library's own name), refusing ids the command line could not carry."""
    family = family_of(model_id)
    if family is None:
        raise EmbeddingsError(
            f"model {model_id!r} is not a family id; name one as "
            + ", ".join(f"{name}:..." for name in FAMILIES)
        )
    name = model_id[len(family) + 1 :]
    bad = sorted(set(SEPARATORS) & set(model_id))
    if bad:
        raise EmbeddingsError(
            f"model {model_id!r} holds {' '.join(repr(c) for c in bad)}, which the command line "
            "uses between ids (, lists models, + fuses them, = gives --weights ID=PATH); "
            "rename or move the folder so its path holds none of them"
        )
    if not name.strip() or name.strip() != name:
        raise EmbeddingsError(f"model {model_id!r}: name the model after {family + ':'!r}")
    return family, name


def local_path(model_id: str) -> Path | None:
    """The local folder a family id names itself (`hf:FOLDER`, `...:local-dir:FOLDER`), else
    None (a hub name). An `hf:` name is local when it exists or is written as a path."""
    family, name = split_family_id(model_id)
    if family in ("open_clip", "timm"):
        return Path(name[len(LOCAL_DIR) :]).expanduser() if name.startswith(LOCAL_DIR) else None
    looks_like_path = name.startswith(("/", "./", "../", "~")) or not _REPO.fullmatch(name)
    return Path(name).expanduser() if looks_like_path or Path(name).exists() else None


def hub_repo(model_id: str) -> str | None:
    """The Hugging Face hub repo a family id names directly (`hf:ORG/NAME`, `...:hf-hub:REPO`);
    None for local folders and for names the library maps to a repo itself."""
    family, name = split_family_id(model_id)
    if local_path(model_id) is not None:
        return None
    if family == "hf":
        return name
    return name[len(HF_HUB) :] if name.startswith(HF_HUB) else None


def folder_name(model_id: str) -> str:
    """A safe, collision-free folder name for a model id (see the module docstring)."""
    if all(_PLAIN.fullmatch(part) for part in model_id.split("+")):
        return model_id  # a short id, or short ids fused (`a+b`): their folders as before
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", model_id).strip("_-")[:60]
    return f"{readable}-{hashlib.sha256(model_id.encode('utf-8')).hexdigest()[:10]}"

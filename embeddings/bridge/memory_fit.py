"""Building a bridge's memory (`bridge.memory`) from its training products.

The memory's texts are the distinct training titles and the label sentences of the training
products (`memory.label_sentences`); their MiniLM vectors come from the catalogue's title cache
and a cache of label sentences beside it (`<catalogue>/text/label-sentences.{npy,json}`), so a
second bridge of the same catalogue (or a rebuild) encodes nothing again.
"""

from __future__ import annotations

import io
import json

import numpy as np

from embeddings.atomic import write_atomic
from embeddings.bridge.memory import Memory, build_memory, label_sentences
from embeddings.bridge.recipes import MemoryOptions
from embeddings.bridge.sentences import TEXT_CACHE_DIR, TEXT_DIM, TEXT_MODEL_ID, encode_sentences
from embeddings.bridge.training import head_basis
from embeddings.catalogue import Catalogue

LABEL_CACHE_NAME = "label-sentences"


def fit_memory(
    catalogue: Catalogue,
    ids: list[str],
    vectors: np.ndarray,
    titles: np.ndarray,
    train_rows: np.ndarray,
    cache,
    options: MemoryOptions,
    seed: int,
) -> tuple[Memory, np.ndarray | None]:
    """The memory of the products at `train_rows` (rows of `ids`/`vectors`/`titles`) and the
    basis its prototypes are stored in (None: the image space itself)."""
    groups: dict[str, list[int]] = {}
    for row in train_rows:
        groups.setdefault(str(titles[row]), []).append(int(row))
    title_count = len(groups)
    if options.label_fields > 0 and catalogue.label_fields:
        items = catalogue.items.reindex(ids)
        for sentence, rows in label_sentences(
            items, train_rows, catalogue.label_fields, options.label_fields
        ).items():
            groups.setdefault(sentence, rows)  # a title equal to a label sentence keeps its own
    texts = list(groups)
    title_texts = texts[:title_count]
    sentences = texts[title_count:]
    text_vectors = np.concatenate(
        [cache.for_titles(title_texts), sentence_vectors(catalogue, sentences)]
    )
    basis = head_basis(vectors, seed)
    return build_memory(groups, text_vectors, vectors, basis, options.__dict__), basis


def sentence_vectors(catalogue: Catalogue, sentences: list[str]) -> np.ndarray:
    """MiniLM vectors of label sentences, through the catalogue's cache (new ones are added)."""
    folder = catalogue.directory / TEXT_CACHE_DIR
    vectors_path = folder / f"{LABEL_CACHE_NAME}.npy"
    key_path = folder / f"{LABEL_CACHE_NAME}.json"
    known: dict[str, np.ndarray] = {}
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
        cached = np.load(vectors_path, allow_pickle=False)
        if key.get("text_model") == TEXT_MODEL_ID and len(key["sentences"]) == len(cached):
            known = dict(zip(key["sentences"], cached, strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        known = {}
    missing = [s for s in sentences if s not in known]
    if missing:
        known.update(zip(missing, encode_sentences(missing), strict=True))
        _save_cache(vectors_path, key_path, known)
    if not sentences:
        return np.zeros((0, TEXT_DIM), np.float32)
    return np.stack([known[s] for s in sentences]).astype(np.float32)


def _save_cache(vectors_path, key_path, known: dict) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.stack(list(known.values())).astype(np.float32))
    try:
        write_atomic(vectors_path, buffer.getvalue())
        write_atomic(key_path, json.dumps({"text_model": TEXT_MODEL_ID, "sentences": list(known)}))
    except OSError:
        pass  # a read-only catalogue: the vectors serve this call, uncached

"""A bridge's memory: the texts it trained on, each with the image vectors they describe.

The `memory` recipe (see `bridge.recipes`) adds to the learnt head a non-parametric part: every
distinct training text (each title, and each *label sentence*: the values of one or two label
fields of a training product, e.g. "Navy Blue", "Men Shirts", "Shirts Navy Blue") is kept with
its *prototype*, the normalised mean of the image vectors of the training products it describes.
A query looks up its `neighbours` nearest memory texts, by a mix of MiniLM cosine and the cosine
of TF-IDF word vectors (brand and style names the sentence encoder blurs), weighs them by a
softmax at `temperature`, and the weighted mean of their prototypes is mixed with the head's
output. Only the products the bridge trains on reach the memory: held-out and excluded products
never do.

Everything is plain numpy at query time (no torch): MiniLM vectors and prototypes as float16,
the TF-IDF vectors of the memory texts as a sparse row matrix (CSR arrays) with the vocabulary
and its IDF. For image spaces wider than 2,048 dimensions (raw pixels) the prototypes are stored
in the top principal directions the head trains in (`basis`), which is where the head's output
lives too.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOKEN = re.compile(r"[^\W_]+")
MEMORY_FILES = (
    "memory_texts.json",
    "memory_text_vectors.npy",
    "memory_prototypes.npy",
    "memory_tfidf.npz",
)


def tokens(text: str) -> list[str]:
    """Lower-case words and numbers of a text (any script)."""
    return TOKEN.findall(str(text).casefold())


def label_sentences(items, rows: np.ndarray, fields: Sequence[str], max_fields: int) -> dict:
    """{sentence: rows} for every combination of up to `max_fields` label fields (catalogue
    order) whose values are all set, over the products at `rows`."""
    groups: dict[str, list[int]] = {}
    values = {f: items[f].fillna("").astype(str).str.strip().to_numpy(dtype=object) for f in fields}
    for size in range(1, max_fields + 1):
        for combo in itertools.combinations(fields, size):
            for row in rows:
                parts = [values[f][row] for f in combo]
                if all(parts):
                    groups.setdefault(" ".join(parts), []).append(int(row))
    return groups


@dataclass
class Tfidf:
    """Sublinear TF-IDF word vectors, L2-normalised; a vocabulary with its IDF."""

    vocabulary: dict[str, int]
    idf: np.ndarray  # float32 (V,)

    @classmethod
    def fit(cls, texts: Sequence[str]) -> Tfidf:
        frequency: dict[str, int] = {}
        for text in texts:
            for word in set(tokens(text)):
                frequency[word] = frequency.get(word, 0) + 1
        words = sorted(frequency)
        n = len(texts)
        idf = np.array([np.log((1 + n) / (1 + frequency[w])) + 1 for w in words], np.float32)
        return cls({w: i for i, w in enumerate(words)}, idf)

    def rows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR arrays (indptr, indices, data) of the texts' normalised TF-IDF vectors."""
        indptr, indices, data = [0], [], []
        for text in texts:
            counts: dict[int, int] = {}
            for word in tokens(text):
                if word in self.vocabulary:
                    column = self.vocabulary[word]
                    counts[column] = counts.get(column, 0) + 1
            columns = np.array(sorted(counts), dtype=np.int64)
            weights = np.array(
                [(1 + np.log(counts[c])) * self.idf[c] for c in columns], dtype=np.float32
            )
            norm = float(np.linalg.norm(weights)) if len(weights) else 0.0
            indices.extend(columns.tolist())
            data.extend((weights / norm).tolist() if norm else [])
            indptr.append(len(indices))
        return (
            np.array(indptr, dtype=np.int64),
            np.array(indices, dtype=np.int64),
            np.array(data, dtype=np.float32),
        )


class Memory:
    """The memory of a bridge, loaded: `prototype_mix(texts, text_vectors)` is its query side."""

    def __init__(self, texts, text_vectors, prototypes, tfidf: Tfidf, csr, settings: dict):
        self.texts = list(texts)
        self.text_vectors = text_vectors  # float16 (n, 384)
        self.prototypes = prototypes  # float16 (n, d) or (n, rank)
        self.tfidf = tfidf
        self.settings = settings
        indptr, indices, data = csr
        # Columns -> (memory row, weight): the inverted index a query's words walk.
        order = np.argsort(indices, kind="stable")
        self._postings_rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[order]
        self._postings_data = data[order]
        self._postings_start = np.searchsorted(indices[order], np.arange(len(tfidf.idf) + 1))

    def lexical(self, texts: Sequence[str]) -> np.ndarray:
        """TF-IDF cosine of each text with every memory text: float32 (q, n)."""
        indptr, indices, data = self.tfidf.rows(texts)
        out = np.zeros((len(texts), len(self.texts)), dtype=np.float32)
        for q in range(len(texts)):
            for column, weight in zip(
                indices[indptr[q] : indptr[q + 1]], data[indptr[q] : indptr[q + 1]], strict=True
            ):
                start, stop = self._postings_start[column], self._postings_start[column + 1]
                rows = self._postings_rows[start:stop]
                np.add.at(out[q], rows, weight * self._postings_data[start:stop])
        return out

    def prototype_mix(self, texts: Sequence[str], text_vectors: np.ndarray) -> np.ndarray:
        """Softmax-weighted mean of the nearest memory texts' prototypes: float32 (q, d')."""
        s = self.settings
        similarity = np.asarray(text_vectors, np.float32) @ self.text_vectors.T.astype(np.float32)
        if s["lexical_weight"]:
            similarity = (1 - s["lexical_weight"]) * similarity + s[
                "lexical_weight"
            ] * self.lexical(texts)
        m = min(int(s["neighbours"]), len(self.texts))
        nearest = np.argpartition(-similarity, m - 1, axis=1)[:, :m]
        near = np.take_along_axis(similarity, nearest, axis=1)
        weights = np.exp((near - near.max(axis=1, keepdims=True)) / s["temperature"])
        weights /= weights.sum(axis=1, keepdims=True)
        mixed = np.einsum("qm,qmd->qd", weights, self.prototypes[nearest].astype(np.float32))
        norms = np.linalg.norm(mixed, axis=1, keepdims=True)
        return mixed / np.maximum(norms, 1e-12)


def build_memory(
    groups: dict[str, list[int]],
    text_vectors: np.ndarray,
    image_vectors: np.ndarray,
    basis: np.ndarray | None,
    settings: dict,
) -> Memory:
    """A memory from {text: training rows}, the texts' MiniLM vectors (row-aligned with the
    dict's order) and the image vectors (in `basis` coordinates when one is given)."""
    texts = list(groups)
    prototypes = np.zeros(
        (len(texts), image_vectors.shape[1] if basis is None else basis.shape[1]), np.float32
    )
    for i, text in enumerate(texts):
        mean = np.asarray(image_vectors[groups[text]], dtype=np.float32).mean(axis=0)
        prototypes[i] = mean if basis is None else mean @ basis
    prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    tfidf = Tfidf.fit(texts)
    return Memory(
        texts,
        np.asarray(text_vectors, np.float16),
        prototypes.astype(np.float16),
        tfidf,
        tfidf.rows(texts),
        settings,
    )


def save_memory(memory: Memory, folder: Path) -> None:
    folder = Path(folder)
    words = sorted(memory.tfidf.vocabulary, key=memory.tfidf.vocabulary.get)
    (folder / MEMORY_FILES[0]).write_text(
        json.dumps({"texts": memory.texts, "vocabulary": words}), encoding="utf-8"
    )
    np.save(folder / MEMORY_FILES[1], memory.text_vectors.astype(np.float16))
    np.save(folder / MEMORY_FILES[2], memory.prototypes.astype(np.float16))
    indptr, indices, data = memory.tfidf.rows(memory.texts)
    np.savez(
        folder / MEMORY_FILES[3], indptr=indptr, indices=indices, data=data, idf=memory.tfidf.idf
    )


def load_memory(folder: Path, settings: dict) -> Memory:
    """Read a memory back (`OSError`/`ValueError`/`KeyError` when damaged)."""
    folder = Path(folder)
    meta = json.loads((folder / MEMORY_FILES[0]).read_text(encoding="utf-8"))
    text_vectors = np.load(folder / MEMORY_FILES[1], allow_pickle=False)
    prototypes = np.load(folder / MEMORY_FILES[2], allow_pickle=False)
    with np.load(folder / MEMORY_FILES[3], allow_pickle=False) as arrays:
        csr = (arrays["indptr"], arrays["indices"], arrays["data"])
        idf = arrays["idf"]
    texts, words = meta["texts"], meta["vocabulary"]
    if not (len(texts) == len(text_vectors) == len(prototypes) == len(csr[0]) - 1) or len(
        words
    ) != len(idf):
        raise ValueError("the memory files disagree in length")
    tfidf = Tfidf({w: i for i, w in enumerate(words)}, idf)
    return Memory(texts, text_vectors, prototypes, tfidf, csr, settings)

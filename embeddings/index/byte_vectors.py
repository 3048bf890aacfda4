"""Exact, compact storage for models whose vectors are bytes (raw pixels).

A `pixels` vector is an image's bytes divided by their norm: v = x / ||x|| with x in 0..255. So
the index can keep x itself as uint8 (a quarter of float32) with each row's norm, and rank
exactly by cosine: cos(q, v) = <q, x> / ||x||. `unit_vectors_to_bytes` recovers x from v (the
stored unit vectors of an existing index, or a fresh build's) and checks that the recovery is
exact, so nothing is approximated silently.
"""

from __future__ import annotations

import numpy as np

#: A recovered row must give back its unit vector within this (float32 rounding is ~1e-7).
RECOVERY_TOLERANCE = 1e-6


def unit_vectors_to_bytes(
    vectors: np.ndarray, *, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(x as uint8 (n, d), ||x|| as float32 (n,)) for unit vectors v = x / ||x||, x in 0..255.

    Each row's largest byte is tried from 255 down (product photos on white: 255 at once) until
    round(v * m / max(v)) gives v back. Raises `ValueError` naming the first row that is not a
    scaled byte vector (a model whose vectors are not bytes cannot be stored this way).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    out = np.zeros(vectors.shape, dtype=np.uint8)
    for start in range(0, len(vectors), chunk):
        out[start : start + chunk] = _recover(vectors[start : start + chunk], start)
    return out, byte_norms(out)


def _recover(rows: np.ndarray, offset: int) -> np.ndarray:
    found = np.zeros(rows.shape, dtype=np.uint8)
    todo = np.flatnonzero(rows.max(axis=1) > 0)  # an all-zero row (a black image) stays zeros
    top = rows.max(axis=1)
    for largest in range(255, 0, -1):
        if not len(todo):
            return found
        scaled = rows[todo] * (largest / top[todo])[:, None]
        candidate = np.rint(scaled)
        norms = np.linalg.norm(candidate, axis=1, keepdims=True)
        error = np.abs(candidate / np.maximum(norms, 1e-12) - rows[todo]).max(axis=1)
        good = (error < RECOVERY_TOLERANCE) & (candidate.max(axis=1) <= 255)
        found[todo[good]] = candidate[good].astype(np.uint8)
        todo = todo[~good]
    if len(todo):
        raise ValueError(f"row {offset + int(todo[0])} is not a scaled vector of bytes (0..255)")
    return found


def byte_norms(byte_rows: np.ndarray) -> np.ndarray:
    """||x|| of each uint8 row, as float32 (zero rows get 1, so dividing by it is safe)."""
    norms = np.sqrt(np.einsum("ij,ij->i", byte_rows, byte_rows, dtype=np.float64))
    return np.where(norms > 0, norms, 1.0).astype(np.float32)

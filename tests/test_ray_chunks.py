"""The Ray engine's batches are keyed by row: rows coming back in any order, split across any
batches, make the same chunks (ids in chunk order, failures apart) as soon as a chunk is whole.
No cluster needed: this is the driver's side alone."""

from __future__ import annotations

import numpy as np

from embeddings.building.ray_engine import _completed_chunks


def _batch(rows, vectors):
    return {
        "chunk": np.array([c for c, _, _ in rows]),
        "pos": np.array([p for _, p, _ in rows]),
        "error": np.array([e for _, _, e in rows], dtype=object),
        "vector": np.stack([vectors[(c, p)] for c, p, _ in rows]),
    }


def test_rows_in_any_order_make_whole_chunks_in_chunk_order():
    chunks = [["a", "b", "c"], ["d", "e"], ["f"]]
    rng = np.random.default_rng(0)
    vectors = {(c, p): rng.normal(size=4).astype(np.float32)
               for c, ids in enumerate(chunks) for p in range(len(ids))}  # fmt: skip
    rows = [(c, p, "d: not an image" if (c, p) == (1, 0) else "")
            for c, ids in enumerate(chunks) for p in range(len(ids))]  # fmt: skip
    order = rng.permutation(len(rows))
    shuffled = [rows[i] for i in order]
    pending: dict = {}
    done = {}
    for start in range(0, len(shuffled), 2):  # batches of two rows, mixing chunks
        before = set(done)
        for number, got, failed, ok_ids in _completed_chunks(
            _batch(shuffled[start : start + 2], vectors), chunks, pending
        ):
            done[number] = (got, failed, ok_ids)
        for number in set(done) - before:  # yielded exactly when its last row came in
            seen = {(c, p) for c, p, _ in shuffled[: start + 2]}
            assert all((number, p) in seen for p in range(len(chunks[number])))
    assert sorted(done) == [0, 1, 2] and not pending
    got, failed, ok_ids = done[1]
    assert ok_ids == ["e"] and failed == {"d": "d: not an image"}
    assert np.array_equal(got, vectors[(1, 1)][None])
    got, failed, ok_ids = done[0]
    assert ok_ids == ["a", "b", "c"] and not failed
    assert np.array_equal(got, np.stack([vectors[(0, p)] for p in range(3)]))

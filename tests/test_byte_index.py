"""Raw pixels stored exactly as bytes: a quarter of float32, the same cosine ranking."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.build.catalogue import BuildRequest, build_catalogue
from embeddings.catalogue import Catalogue
from embeddings.index.byte_vectors import unit_vectors_to_bytes
from embeddings.index.store import load_model_index, load_vectors, write_model_index
from embeddings.search.searcher import make_searcher, open_index

MANIFEST = {"model_id": "pixels", "weights_id": "none", "catalogue_fingerprint": "f"}


def byte_images(n: int, dim: int = 480, seed: int = 0) -> np.ndarray:
    """Unit vectors of random byte images, some of them dark (largest byte below 255), some
    duplicated (identical images, as in real catalogues)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, dim)).astype(np.float32)
    pixels[::7] = np.minimum(pixels[::7], rng.integers(20, 200))  # dark images
    pixels[5] = pixels[3]
    return pixels / np.linalg.norm(pixels, axis=1, keepdims=True)


def write_both(tmp_path, vectors):
    ids = [f"p{i}" for i in range(len(vectors))]
    for name, store in (("f32", "float32"), ("u8", "uint8")):
        write_model_index(
            tmp_path / name / "models" / "pixels",
            ids=ids,
            vectors=vectors,
            manifest=MANIFEST,
            store_dtype=store,
        )
    return [
        load_model_index(
            tmp_path / name / "models" / "pixels",
            catalogue_fingerprint="f",
            model_id="pixels",
            mmap=True,
        )
        for name in ("f32", "u8")
    ]


def test_bytes_are_recovered_exactly_from_unit_vectors():
    vectors = byte_images(300)
    byte_rows, norms = unit_vectors_to_bytes(vectors)
    assert byte_rows.dtype == np.uint8 and byte_rows[::7].max(axis=1).max() < 255  # dark rows too
    np.testing.assert_allclose(byte_rows / norms[:, None], vectors, atol=1e-7)


def test_vectors_that_are_not_bytes_are_refused():
    rng = np.random.default_rng(1)
    learnt = rng.normal(size=(4, 64)).astype(np.float32)  # a CNN's vectors: not bytes
    learnt /= np.linalg.norm(learnt, axis=1, keepdims=True)
    with pytest.raises(ValueError, match="row 0 is not a scaled vector of bytes"):
        unit_vectors_to_bytes(np.abs(learnt))


def test_byte_index_ranks_like_float32_within_1e_5(tmp_path):
    vectors = byte_images(600)
    flat, compact = write_both(tmp_path, vectors)
    queries = vectors[:40]
    want_scores, want_rows = flat.search(queries, 10)
    scores, rows = compact.search(queries, 10)
    assert np.abs(scores - want_scores).max() < 1e-5
    for got, want, row_scores in zip(rows, want_rows, want_scores, strict=True):
        # The same top-10; rows may swap only where scores tie exactly (identical images).
        assert set(got) == set(want) or np.isclose(row_scores[-1], row_scores[-2])
    # ... with exact label filters too
    allowed = np.arange(0, 600, 3)
    want_scores, _ = flat.search(queries, 10, rows=allowed)
    scores, rows = compact.search(queries, 10, rows=allowed)
    assert set(rows.ravel()) <= set(allowed) and np.abs(scores - want_scores).max() < 1e-5
    np.testing.assert_allclose(compact.reconstruct_batch([0, 9]), vectors[[0, 9]], atol=1e-7)
    assert np.allclose(
        load_vectors(compact_dir := tmp_path / "u8" / "models" / "pixels")[1], vectors, atol=1e-7
    )
    sizes = {
        name: sum(p.stat().st_size for p in (tmp_path / name / "models" / "pixels").iterdir())
        for name in ("f32", "u8")
    }
    assert sizes["u8"] < sizes["f32"] / 7  # float32 keeps index + vectors.npy; bytes keep one copy
    assert not (compact_dir / "vectors.npy").exists()


def test_a_new_pixels_build_stores_bytes_and_an_existing_float32_one_keeps_float32(
    product_folder, tmp_path
):
    out = tmp_path / "cat"
    result = build_catalogue(
        BuildRequest(out=out, source=str(product_folder), models=["pixels"], bridges=False)
    )
    assert result.outcomes[0].report.manifest["vectors_dtype"] == "uint8"
    catalogue = Catalogue.open(out)
    hits = make_searcher(catalogue).search_item("red/circle_0", ["pixels"], 5)["pixels"]
    exact = load_vectors(catalogue.model_dir("pixels"))
    ids, vectors = exact
    scores = vectors @ vectors[ids.index("red/circle_0")]
    scores[ids.index("red/circle_0")] = -1
    assert [h.id for h in hits] == [ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
    # An index built as float32 keeps its storage on a rebuild unless asked otherwise.
    legacy = tmp_path / "legacy"
    build_catalogue(
        BuildRequest(
            out=legacy,
            source=str(product_folder),
            models=["pixels"],
            bridges=False,
            index=_store("float32"),
        )
    )
    rebuilt = build_catalogue(
        BuildRequest(out=legacy, models=["pixels"], bridges=False, index=_store(None, force=True))
    )
    assert rebuilt.outcomes[0].report.manifest["vectors_dtype"] == "float32"
    assert open_index(Catalogue.open(legacy), "pixels").__class__.__name__ == "FaissIndex"


def _store(store, force=False):
    from embeddings.build.catalogue import IndexOptions

    return IndexOptions(store_dtype=store, force=force)


def test_byte_index_range_search_finds_the_pairs_float32_finds(tmp_path):
    """Near-duplicates use the index's range search: on bytes, the radius is a cosine too."""
    vectors = byte_images(400)
    vectors[9] = vectors[2]  # more identical images, and a near-copy
    near = np.clip(np.round(vectors[4] / vectors[4].max() * 250) + 3, 0, 255)
    vectors[11] = near / np.linalg.norm(near)
    flat, compact = write_both(tmp_path, vectors)
    for radius in (0.999, 0.95, 0.8):
        want = set(zip(*[a.tolist() for a in flat.range_search(vectors, radius)[:2]], strict=True))
        owners, rows, scores = compact.range_search(vectors, radius)
        assert set(zip(owners.tolist(), rows.tolist(), strict=True)) == want
        exact = np.einsum("ij,ij->i", vectors[owners], vectors[rows])
        assert np.abs(scores - exact).max() < 1e-5 and scores.min() >= radius
    pairs = {(o, r) for o, r in zip(*compact.range_search(vectors, 0.999)[:2], strict=True)}
    assert {(3, 5), (2, 9), (4, 11)} <= pairs

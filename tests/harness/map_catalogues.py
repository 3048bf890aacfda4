"""Synthetic catalogues for the Map page at scale (browser tests, bench/bench_map_page.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SYNTHETIC_MODELS = ("colour", "pixels")


def synthetic_catalogue(directory: Path, count: int, seed: int = 0) -> Path:
    """A catalogue of `count` products whose two models' maps are random clusters (no images:
    thumbnails are placeholders). The index manifests are written, not the indexes: the Map page
    reads only the maps."""
    from embeddings.artefacts import index_identity
    from embeddings.catalogue.base import Catalogue, fingerprint_items
    from embeddings.derived.maps import EmbeddingMap, save_map

    if (directory / "maps" / SYNTHETIC_MODELS[-1] / "coords.npy").is_file():
        return directory
    rng = np.random.default_rng(seed)
    ids = [f"p{n:07d}" for n in range(count)]
    kinds = np.array(["shirt", "shoe", "bag", "watch", "dress", "cap", "belt", "scarf"])
    kind = kinds[rng.integers(0, len(kinds), count)]
    colours = np.array(["red", "blue", "black", "white", "green", "brown"])
    colour = colours[rng.integers(0, len(colours), count)]
    items = pd.DataFrame(
        {
            "id": ids,
            "path": [f"images/{i}.jpg" for i in ids],
            "title": [
                f"{c.title()} {k} {n}" for n, (c, k) in enumerate(zip(colour, kind, strict=True))
            ],
            "kind": kind,
            "colour": colour,
        }
    )
    info = {
        "source": "synthetic",
        "adapter": "folder",
        "root": str(directory / "images"),
        "label_fields": ["kind", "colour"],
        "main_label": "kind",
        "count": count,
        "fingerprint": fingerprint_items(items),
    }
    catalogue = Catalogue(directory, info, items)
    catalogue.save()
    for position, model_id in enumerate(SYNTHETIC_MODELS):
        manifest = {
            "format": 1, "model_id": model_id, "weights_id": "synthetic", "dim": 2,
            "count": count, "catalogue_fingerprint": info["fingerprint"],
            "catalogue_count": count, "built_at": "synthetic", "backend": "faiss",
            "index_type": "flat", "failed": [], "has_text": False,
        }  # fmt: skip
        folder = catalogue.model_dir(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        centres = rng.normal(0, 30, (len(kinds), 2))
        codes = pd.factorize(pd.Series(kind if position == 0 else colour))[0] % len(kinds)
        coords = (centres[codes] + rng.normal(0, 6, (count, 2))).astype(np.float32)
        faithful = {"neighbours": 10, "neighbours_kept": 0.0, "chance": 0.0}
        map_manifest = {
            "format": 1, "model_id": model_id, "index": index_identity(manifest),
            "method": "synthetic", "products": count, "mapped": count, "sampled": False,
            "sample_label": None, "pca": None, "faithfulness": faithful,
            "seconds": {"layout": 0.0},
        }  # fmt: skip
        save_map(catalogue, EmbeddingMap(model_id, ids, coords, map_manifest))
    return directory

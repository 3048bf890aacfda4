"""Where things are: the repository checkout, and the shared real dataset beside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_FASHION = REPO.parent / "shared" / "datasets" / "fashion-product-images-small"

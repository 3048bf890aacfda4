"""The layout of the shared fashion dataset (fashion-product-images-small), written by hand."""

from __future__ import annotations

#: The first line of its `styles.csv`.
HEADER = (
    "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
    "productDisplayName\n"
)

"""The synthetic products: coloured shapes on white, made on the spot.

`make_product_folder` writes a product folder (`<colour>/<shape>_<n>.png` plus a
`metadata.csv` sidecar): 4 colours (the folder label) x 3 shapes (a sidecar label) x 4 variants
= 48 products. `plant` adds exact and near copies of some of them (a `copies/` folder), which
any near-duplicate search must find: `EXACT` and `NEAR` list the groups planted.
"""

from __future__ import annotations

import io
import shutil
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 210, 20),
}
SHAPES = ("circle", "square", "triangle")

#: What `plant` adds: exact copies under other names (any model scores them 1.0), and
#: near-copies (re-encoded as JPEG, brightened by 4%) of other products.
EXACT = [
    {"red/circle_0", "copies/same_red_circle", "copies/same_red_circle_again"},
    {"green/triangle_3", "copies/same_green_triangle"},
]
NEAR = [
    {"blue/square_1", "copies/jpeg_blue_square"},
    {"yellow/triangle_2", "copies/brighter_yellow_triangle"},
]


def draw_product(colour: str, shape: str, variant: int, size=(60, 80)) -> Image.Image:
    """A product-like picture: a coloured shape on white, slightly shifted per variant."""
    rng = np.random.default_rng(zlib.crc32(f"{colour}/{shape}/{variant}".encode()))
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    dx, dy = (int(v) for v in rng.integers(-6, 7, size=2))
    box = (10 + dx, 18 + dy, w - 10 + dx, h - 18 + dy)
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(
            [(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=fill
        )
    return image


def make_product_folder(root: Path, variants: int = 4) -> Path:
    """`<colour>/<shape>_<n>.png` images plus a `metadata.csv` sidecar (title, shape)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,title,shape"]
    for colour in COLOURS:
        (root / colour).mkdir(exist_ok=True)
        for shape in SHAPES:
            for variant in range(variants):
                name = f"{colour}/{shape}_{variant}.png"
                draw_product(colour, shape, variant).save(root / name)
                rows.append(f"{name},{colour.title()} {shape} product {variant},{shape}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def plant(products: Path) -> Path:
    """Add the planted copies to a synthetic product folder (a `copies/` folder label)."""
    copies = products / "copies"
    copies.mkdir()
    shutil.copyfile(products / "red/circle_0.png", copies / "same_red_circle.png")
    shutil.copyfile(products / "red/circle_0.png", copies / "same_red_circle_again.png")
    shutil.copyfile(products / "green/triangle_3.png", copies / "same_green_triangle.png")
    buffer = io.BytesIO()
    Image.open(products / "blue/square_1.png").convert("RGB").save(buffer, "JPEG", quality=85)
    Image.open(buffer).save(copies / "jpeg_blue_square.png")
    yellow = Image.open(products / "yellow/triangle_2.png").convert("RGB")
    ImageEnhance.Brightness(yellow).enhance(1.04).save(copies / "brighter_yellow_triangle.png")
    return products

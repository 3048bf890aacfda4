"""The `colour` model: a Lab histogram without the white background, numpy only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

from embeddings.models import get_spec, load_model
from embeddings.models.colour import background_mask, rgb_to_lab
from tests.harness.paths import REPO
from tests.harness.products import draw_product


def test_lab_conversion_of_known_colours():
    lab = rgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32))
    assert np.allclose(lab[0], [100, 0, 0], atol=0.1)
    assert np.allclose(lab[1], [0, 0, 0], atol=0.1)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)  # sRGB red, D65


def test_same_colour_is_nearer_than_same_shape():
    model = load_model("colour")
    vectors = model.encode_images(
        [
            draw_product("red", "circle", 0),
            draw_product("red", "square", 1),
            draw_product("blue", "circle", 2),
        ]
    )
    assert vectors.shape == (3, get_spec("colour").dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > 0.1 > vectors[0] @ vectors[2]


def test_white_background_is_removed_but_a_white_product_is_kept():
    model = load_model("colour")
    small = Image.new("RGB", (60, 80), "white")
    ImageDraw.Draw(small).rectangle((20, 30, 40, 50), fill=(200, 20, 20))
    full = Image.new("RGB", (60, 80), (200, 20, 20))
    a, b = model.encode_images([small, full])
    assert a @ b > 0.9  # the white around a red patch does not count (edges blend a little)
    # A white shirt with a grey outline: its inside is not background.
    shirt = Image.new("RGB", (60, 80), "white")
    ImageDraw.Draw(shirt).rectangle((10, 10, 50, 70), fill="white", outline=(120, 120, 120))
    lab = rgb_to_lab(np.asarray(shirt, np.float32) / 255)
    mask = background_mask(lab)
    assert mask[0, 0] and not mask[40, 30]
    white_card = Image.new("RGB", (60, 80), (250, 250, 250))
    shirt_vector, card_vector = model.encode_images([shirt, white_card])
    assert shirt_vector @ card_vector > 0.9


def test_colour_needs_no_torch():
    code = (
        "import sys; from PIL import Image; from embeddings.models import load_model; "
        "v = load_model('colour').encode_images([Image.new('RGB', (60, 80), 'red')]); "
        "assert v.shape == (1, 486); assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

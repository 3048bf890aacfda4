"""Decoding odd and broken images (embeddings.images.open_rgb)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embeddings.errors import ImageError
from embeddings.images import open_rgb


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(tmp_path):
    path = save(
        Image.new("CMYK", (20, 20), (0, 255, 255, 0)), tmp_path / "red.jpg"
    )  # pure red in CMYK
    image = open_rgb(path)
    assert image.mode == "RGB"
    r, g, b = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path):
    values = np.full((10, 10), 32768, dtype=np.uint16)  # mid-grey at 16 bits
    path = save(Image.fromarray(values), tmp_path / "grey16.png")
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(open_rgb(path))
    assert pixels.shape == (10, 10, 3)
    assert 120 <= pixels.mean() <= 135


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    image.info["transparency"] = 0  # index 0 (black) is transparent
    path = save(image, tmp_path / "palette.png", transparency=0)
    assert np.asarray(open_rgb(path)).min() == 255  # transparent black -> white, not black


def test_rgba_alpha_is_composited_on_white(tmp_path):
    path = save(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), tmp_path / "clear.png")
    assert np.asarray(open_rgb(path)).min() == 255


def test_greyscale_and_la_and_1_bit_become_rgb(tmp_path):
    for mode, colour in (("L", 77), ("LA", (77, 255)), ("1", 1)):
        image = open_rgb(save(Image.new(mode, (5, 5), colour), tmp_path / f"{mode}.png"))
        assert image.mode == "RGB" and image.size == (5, 5)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(image, tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert open_rgb(path).size == (20, 40)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = np.asarray(open_rgb(path)).reshape(-1, 3).mean(axis=0)
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"hello, I am text", "not an image"),
        (b"<html><body>nope</body></html>", "not an image"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\n", "not an image"),
    ],
)
def test_non_images_are_refused_with_the_name(tmp_path, content, expected):
    path = tmp_path / "product.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=expected) as error:
        open_rgb(path)
    assert "product.jpg" in str(error.value)


def test_truncated_jpeg_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 60).convert("RGB").save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_rgb(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = save(Image.new("1", (20_000, 20_000)), tmp_path / "bomb.png")  # 400 MP, a few KB on disk
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageError, match="decompression bomb"):
        open_rgb(path)


def test_missing_file_and_bytes_input(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_rgb(tmp_path / "absent.jpg")
    buffer = io.BytesIO()
    Image.new("RGB", (3, 4), "green").save(buffer, "PNG")
    assert open_rgb(buffer.getvalue()).size == (3, 4)
    with pytest.raises(ImageError, match="uploaded image"):
        open_rgb(b"not an image")

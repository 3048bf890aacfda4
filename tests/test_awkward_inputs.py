"""Inputs found by trying to break the core: huge images, a folder given as an image,
mixed-encoding CSVs, and file names that cannot be stored as ids."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib

import pytest
from PIL import Image

from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.catalogue.adapters import decode_text
from embeddings.catalogue.base import Skipped
from embeddings.errors import ImageError
from embeddings.images import open_rgb
from tests.harness.cli import cli
from tests.harness.fashion import HEADER
from tests.harness.products import make_product_folder


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 1-bit PNG whose header claims `width` x `height` (a few hundred bytes)."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# -- images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("width, height", [(20_000, 20_000), (10_000, 7_000), (8_001, 8_000)])
def test_too_many_pixels_names_our_limit_and_the_file(tmp_path, width, height):
    """400 MP (over Pillow's hard 128 MP guard) and 70 MP (over its warning) say our 64 MP."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(width, height))
    for source, name in ((path, "huge.png"), (path.read_bytes(), "uploaded image")):
        with pytest.raises(ImageError) as caught:
            open_rgb(source)
        message = str(caught.value)
        assert name in message
        assert "larger than the 64,000,000-pixel limit" in message
        assert f"{width * height:,} pixels" in message
        assert "exceeds limit of" not in message  # not Pillow's own wording


@pytest.mark.parametrize("pillow_limit", [None, 10**12])
def test_our_limit_holds_whatever_pillows_guard_is(tmp_path, monkeypatch, pillow_limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(20_000, 20_000))
    with pytest.raises(
        ImageError,
        match=r"huge\.png: 20000x20000 pixels is larger than the "
        r"64,000,000-pixel limit",
    ):
        open_rgb(path)


def test_a_smaller_limit_of_our_own_is_named(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(200, 200))
    with pytest.raises(ImageError, match=r"big\.png: 200x200 .*larger than the 10,000-pixel limit"):
        open_rgb(path, max_pixels=10_000)


def test_a_folder_given_as_an_image_says_so(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(ImageError) as caught:
        open_rgb(folder)
    message = str(caught.value)
    assert str(folder) in message and "is a folder" in message and "image file" in message
    assert "no such file" not in message


# -- per-line decoding ---------------------------------------------------------------------------
def test_decode_text_falls_back_per_line_only():
    raw = "\ufeffa,b\nGrün,日本\n".encode() + "Caf\xe9,x\r\n".encode("cp1252") + "last ü".encode()
    recovered: list[Skipped] = []
    text = decode_text(raw, "metadata.csv", recovered)
    assert text == "a,b\nGrün,日本\nCafé,x\r\nlast ü"
    assert recovered == [Skipped("metadata.csv line 3", "not valid UTF-8; read as Windows-1252")]


def test_decode_text_bom_only_on_the_first_line():
    recovered: list[Skipped] = []
    assert decode_text("x\n\ufeffy".encode(), "f.csv", recovered) == "x\n\ufeffy"
    assert decode_text(b"", "f.csv", recovered) == "" and recovered == []


def write_sidecar_folder(root, lines: list[bytes]):
    root.mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        Image.new("RGB", (8, 8), "white").save(root / f"{name}.png")
    (root / "metadata.csv").write_bytes(b"\n".join(lines) + b"\n")
    return root


def test_one_windows_1252_line_keeps_the_utf8_titles(tmp_path):
    root = write_sidecar_folder(
        tmp_path / "products",
        [
            b"file,title,colour",
            "a.png,Grüne Jacke,grün".encode(),
            "b.png,日本 teacup,白".encode(),
            "c.png,Café mug,brun".encode("cp1252"),
            # A quoted title over two lines; its second line is valid UTF-8 again.
            'd.png,"Two-line\nüber title",blau'.encode(),
        ],
    )
    catalogue = create_catalogue(str(root), tmp_path / "cat")
    assert catalogue.item("a")["title"] == "Grüne Jacke" and catalogue.item("a")["colour"] == "grün"
    assert catalogue.item("b")["title"] == "日本 teacup" and catalogue.item("b")["colour"] == "白"
    assert catalogue.item("c")["title"] == "Café mug"
    assert catalogue.item("d")["title"] == "Two-line\nüber title"
    assert Catalogue.open(tmp_path / "cat").item("d")["title"] == "Two-line\nüber title"
    assert catalogue.info["recovered"] == [
        {"where": "metadata.csv line 4", "reason": "not valid UTF-8; read as Windows-1252"}
    ]


def test_styles_csv_decodes_per_line_too(tmp_path):
    root = tmp_path / "fashion"
    (root / "images").mkdir(parents=True)
    for item_id in ("1", "2"):
        Image.new("RGB", (8, 8), "white").save(root / "images" / f"{item_id}.jpg")
    (root / "styles.csv").write_bytes(
        HEADER.encode()
        + "1,Women,Apparel,Topwear,Tops,Grün,Summer,2012,Casual,Bluse für 日本\n".encode()
        + "2,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Caf\xe9 Shirt\n".encode("cp1252")
    )
    catalogue = create_catalogue(str(root), tmp_path / "cat")
    assert catalogue.item("1")["title"] == "Bluse für 日本"
    assert catalogue.item("1")["baseColour"] == "Grün"
    assert catalogue.item("2")["title"] == "Café Shirt"
    assert [r["where"] for r in catalogue.info["recovered"]] == ["styles.csv line 3"]


# -- names that cannot be stored ---------------------------------------------------------------
@pytest.mark.parametrize(
    "char", ["\n", "\r", "\t", "\x00", "\x1f", "\x7f", "\x85", "\u2028", "\u2029"]
)
def test_unstorable_characters_are_named(char):
    from embeddings.catalogue.base import unstorable_name_reason

    assert "rename it" in unstorable_name_reason(f"red/shirt{char}bad")


@pytest.mark.parametrize(
    "name", ["red/shirt_01", "رنگ/پیراهن\u200cها", "emoji/👨\u200d👩\u200d👧", "a b/c-d_é"]
)
def test_ordinary_names_are_storable(name):
    from embeddings.catalogue.base import unstorable_name_reason

    assert unstorable_name_reason(name) is None


def test_an_undecodable_file_name_is_named():
    from embeddings.catalogue.base import unstorable_name_reason

    undecodable = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert "not valid UTF-8" in unstorable_name_reason(undecodable)


NEWLINE_NAME = "red/shirt\nbad.png"


def newline_products(root):
    """A small product folder plus an image whose file name holds a newline (and a sidecar row)."""
    make_product_folder(root, variants=1)
    Image.new("RGB", (60, 80), "red").save(root / NEWLINE_NAME)
    with (root / "metadata.csv").open("a") as sidecar:
        sidecar.write('"red/shirt\nbad.png",A shirt,square\n')
    return root


def test_folder_scan_skips_and_reports_a_newline_in_a_file_name(tmp_path):
    catalogue = create_catalogue(str(newline_products(tmp_path / "products")), tmp_path / "cat")
    assert len(catalogue) == 12
    assert not any(
        "\n" in item_id or "\n" in path
        for item_id, path in zip(catalogue.items["id"], catalogue.items["path"], strict=True)
    )
    skipped = {s["where"]: s["reason"] for s in catalogue.info["skipped"]}
    assert skipped[repr(NEWLINE_NAME)] == (
        "file name contains a line break or control character; rename it"
    )
    assert "line break or control character" in skipped["metadata.csv line 14"]


def test_a_file_name_that_is_not_utf8_is_skipped(tmp_path):
    root = tmp_path / "products"
    root.mkdir()
    Image.new("RGB", (8, 8), "white").save(root / "ok.png")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as handle:
        handle.write((root / "ok.png").read_bytes())
    catalogue = create_catalogue(str(root), tmp_path / "cat")
    assert catalogue.ids == ["ok"]
    assert "not valid UTF-8; rename it" in catalogue.info["skipped"][0]["reason"]


def test_a_control_character_in_a_folder_name_is_skipped_by_digikala(tmp_path):
    root = tmp_path / "digikala"
    for colour in ("red", "blue\rx"):
        (root / colour).mkdir(parents=True)
        Image.new("RGB", (8, 8), "white").save(root / colour / "1.png")
    catalogue = create_catalogue(str(root), tmp_path / "cat", adapter="digikala")
    assert catalogue.ids == ["red/1"]
    assert "line break or control character" in catalogue.info["skipped"][0]["reason"]


def test_fashion_ids_with_a_line_break_are_skipped(tmp_path):
    root = tmp_path / "fashion"
    (root / "images").mkdir(parents=True)
    for item_id in ("1", "2\n3"):
        Image.new("RGB", (8, 8), "white").save(root / "images" / f"{item_id}.jpg")
    (root / "styles.csv").write_bytes(
        HEADER.encode()
        + b"1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Shirt\n"
        + b'"2\n3",Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Odd id\n'
    )
    catalogue = create_catalogue(str(root), tmp_path / "cat")
    assert catalogue.ids == ["1"]
    assert "line break or control character" in catalogue.info["skipped"][0]["reason"]


@pytest.mark.slow
def test_build_and_search_with_a_newline_file_name(tmp_path):
    source, out = newline_products(tmp_path / "products"), tmp_path / "cat"
    built = cli(
        "build", "--source", str(source), "--models", "pixels", "--out", str(out), "--no-bridge"
    )
    assert built.returncode == 0, built.stderr
    assert (out / "models" / "pixels" / "ids.txt").read_text().count("\n") == 12
    found = cli(
        "search",
        "--catalog",
        str(out),
        "--model",
        "pixels",
        "--item",
        "red/circle_0",
        "-k",
        "3",
        "--json",
    )
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3

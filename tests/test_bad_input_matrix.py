"""The bad-input matrix: every case gives a clear message naming the thing, and
nothing already built is lost (the catalogue's existing index still loads and answers).

App-level cases (uploads, URL parameters, HTML in titles) live in tests/test_app.py and
tests/test_app_security.py; this file covers the core: images, CSVs, index files, queries.
"""

from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from embeddings.building.model import build_model_index
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.errors import CatalogueError, EmbeddingsError, ImageError, QueryError
from embeddings.images import open_rgb
from embeddings.index.opening import open_index
from embeddings.models import load_model
from embeddings.search.searcher import make_searcher
from tests.harness.products import make_product_folder


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A small folder catalogue with a pixels index, copied fresh for each case."""
    root = tmp_path_factory.mktemp("matrix")
    source = make_product_folder(root / "products", variants=1)
    catalogue = create_catalogue(str(source), root / "cat")
    build_model_index(catalogue, load_model("pixels"))
    return source, catalogue.directory


@pytest.fixture
def fresh(baseline, copy_catalogue, tmp_path):
    source, directory = baseline
    shutil.copytree(source, tmp_path / "products")
    return tmp_path / "products", copy_catalogue(directory, tmp_path / "cat")


def still_serves(catalogue: Catalogue) -> None:
    """Nothing already built is lost: the index loads and an item query answers."""
    reopened = Catalogue.open(catalogue.directory)
    hits = make_searcher(reopened).search_item(reopened.ids[0], ["pixels"], 3)["pixels"]
    assert len(hits) == 3 and all(np.isfinite(h.score) for h in hits)


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return jpeg_bytes(Image.new("RGB", (30, 20), "red"), exif=exif.tobytes())


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _gif_animated() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], loop=0)
    return buffer.getvalue()


def _palette_transparent() -> bytes:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0] * 256)
    return _png(image, transparency=0)


# name, file name, bytes, expected: None = decodes to RGB, else a regex of the refusal message
IMAGE_CASES = [
    (
        "truncated",
        "cut.jpg",
        lambda: jpeg_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))[:700],
        "damaged or truncated",
    ),
    ("zero bytes", "zero.jpg", lambda: b"", "empty \\(0 bytes\\)"),
    ("text", "note.jpg", lambda: b"just some text, not pixels", "not an image"),
    (
        "html",
        "page.jpg",
        lambda: b"<!doctype html><html><script>alert(1)</script></html>",
        "not an image",
    ),
    (
        "pdf renamed",
        "doc.jpg",
        lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "not an image",
    ),
    (
        "decompression bomb",
        "bomb.png",
        lambda: _png(Image.new("1", (20_000, 20_000))),
        "decompression bomb",
    ),
    ("cmyk", "cmyk.jpg", lambda: jpeg_bytes(Image.new("CMYK", (10, 10), (0, 200, 200, 0))), None),
    ("16-bit", "deep.png", lambda: _png(Image.fromarray(np.full((9, 9), 40000, np.uint16))), None),
    ("palette + transparency", "pal.png", _palette_transparent, None),
    ("exif rotated", "turned.jpg", _exif_rotated, None),
    ("1x1", "dot.png", lambda: _png(Image.new("RGB", (1, 1), "blue")), None),
    ("animated gif", "anim.gif", _gif_animated, None),
]


@pytest.mark.parametrize(
    "name, filename, make, refusal", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES]
)
def test_image_in_a_catalogue(fresh, name, filename, make, refusal):
    source, catalogue = fresh
    (source / "red" / filename).write_bytes(make())
    grown = create_catalogue(str(source), catalogue.directory)
    report = build_model_index(grown, load_model("pixels"))
    item_id = f"red/{filename.rsplit('.', 1)[0]}"
    failed = dict(report.failed)
    if refusal is None:
        assert item_id not in failed and report.count == len(grown)
        assert open_rgb(grown.image_path(item_id)).mode == "RGB"
    else:
        assert item_id in failed and filename in failed[item_id]
        assert re.search(refusal, failed[item_id])
        assert report.count == len(grown) - 1
    still_serves(grown)


@pytest.mark.parametrize(
    "name, filename, make, refusal", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES]
)
def test_image_as_an_upload(fresh, name, filename, make, refusal):
    _, catalogue = fresh
    if refusal is None:
        hits = make_searcher(catalogue).search_image(open_rgb(make(), name=filename), ["pixels"], 3)
        assert len(hits["pixels"]) == 3
    else:
        with pytest.raises(ImageError, match=refusal) as error:
            open_rgb(make(), name=filename)
        assert filename in str(error.value)
    still_serves(catalogue)


SIDECAR_CASES = [
    (
        "unquoted commas",
        "file,title,shape\nred/circle_0.png,Shirt, blue, slim,circle\n",
        "fields where 3",
    ),
    ("missing key column", "title,shape\nA,b\n", "needs a column named file"),
    ("duplicate ids", "file,title\nred/circle_0.png,A\nred/circle_0.png,B\n", "duplicate entry"),
    ("dot-dot path", "file,title\n../../etc/passwd,x\n", "leaves the catalogue folder"),
    ("absolute path", "file,title\n/etc/passwd,x\n", "is absolute"),
    ("unknown image", "file,title\nred/nothing.png,x\n", "no such image"),
]


@pytest.mark.parametrize(
    "name, csv_text, message", SIDECAR_CASES, ids=[c[0] for c in SIDECAR_CASES]
)
def test_sidecar_csv(fresh, name, csv_text, message):
    source, catalogue = fresh
    (source / "metadata.csv").write_text(csv_text)
    try:
        rescanned = create_catalogue(str(source), catalogue.directory, write=False)
    except CatalogueError as exc:
        assert re.search(message, str(exc))
    else:
        reasons = " | ".join(s["reason"] for s in rescanned.info["skipped"])
        assert re.search(message, reasons), reasons
        assert len(rescanned) == len(catalogue)  # a bad sidecar row never drops an image
    still_serves(catalogue)


def test_sidecar_empty_titles_and_non_utf8(fresh):
    source, catalogue = fresh
    (source / "metadata.csv").write_bytes(
        "file,title\nred/circle_0.png,\nred/square_0.png,Caf\xe9\n".encode("cp1252")
    )
    rescanned = create_catalogue(str(source), catalogue.directory, write=False)
    assert rescanned.item("red/circle_0")["title"] == ""
    assert rescanned.item("red/square_0")["title"] == "Café"
    assert "not valid UTF-8" in rescanned.info["recovered"][0]["reason"]
    still_serves(catalogue)


def _damage(catalogue: Catalogue, how: str) -> None:
    model_dir = catalogue.model_dir("pixels")
    if how == "truncated index":
        data = (model_dir / "index.faiss").read_bytes()
        (model_dir / "index.faiss").write_bytes(data[: len(data) // 3])
    elif how == "manifest of another model":
        manifest = json.loads((model_dir / "manifest.json").read_text())
        (model_dir / "manifest.json").write_text(json.dumps({**manifest, "model_id": "clip"}))
    elif how == "manifest of another catalogue":
        manifest = json.loads((model_dir / "manifest.json").read_text())
        (model_dir / "manifest.json").write_text(
            json.dumps({**manifest, "catalogue_fingerprint": "0" * 16})
        )
    elif how == "dimension mismatch":
        manifest = json.loads((model_dir / "manifest.json").read_text())
        (model_dir / "manifest.json").write_text(json.dumps({**manifest, "dim": 1280}))
    elif how == "ids file missing":
        (model_dir / "ids.txt").unlink()
    elif how == "manifest not json":
        (model_dir / "manifest.json").write_text("{ not json")


INDEX_CASES = [
    ("truncated index", "damaged|disagree"),
    ("manifest of another model", "built by model 'clip', not 'pixels'"),
    ("manifest of another catalogue", "another version of the catalogue"),
    ("dimension mismatch", "disagree with the manifest"),
    ("ids file missing", "damaged"),
    ("manifest not json", "no index for model 'pixels'"),
]


@pytest.mark.parametrize("how, message", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_damaged_index_is_refused_with_a_rebuild_hint_and_rebuilds(fresh, how, message):
    _, catalogue = fresh
    _damage(catalogue, how)
    with pytest.raises(EmbeddingsError, match=message) as error:
        open_index(catalogue, "pixels")
    assert "python -m embeddings build" in str(error.value)
    build_model_index(catalogue, load_model("pixels"))  # the hinted rebuild works from the wreck
    still_serves(catalogue)


QUERY_CASES = [
    (
        "unknown id",
        lambda s, c: s.search_item("../../etc/passwd", ["pixels"], 3),
        "no product with id",
    ),
    (
        "huge k",
        lambda s, c: s.search_item(c.ids[0], ["pixels"], 10**9),
        "k must be between 1 and 1000",
    ),
    ("k not a number", lambda s, c: s.search_item(c.ids[0], ["pixels"], "ten"), "whole number"),
    (
        "script tag text on an image-only model",
        lambda s, c: s.search_text("<script>alert(1)</script>", ["pixels"], 3),
        "cannot take text queries",
    ),
    ("empty text", lambda s, c: s.search_text("", ["pixels"], 3), "empty"),
    ("very long text", lambda s, c: s.search_text("shoe " * 1000, ["pixels"], 3), "limit is 1,000"),
    (
        "unknown model",
        lambda s, c: s.search_item(c.ids[0], ["vgg16"], 3),
        "no index for model 'vgg16'",
    ),
    (
        "unknown label filter",
        lambda s, c: s.search_item(c.ids[0], ["pixels"], 3, filters={"price": "1"}),
        "no label field 'price'",
    ),
]


@pytest.mark.parametrize("name, query, message", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_bad_queries(fresh, name, query, message):
    _, catalogue = fresh
    shutil.rmtree(catalogue.directory / "bridges", ignore_errors=True)
    with pytest.raises((QueryError, EmbeddingsError), match=message):
        query(make_searcher(catalogue), catalogue)
    still_serves(catalogue)

"""A model that sees every product as the same picture cannot be mapped: it is reported, with a
message, for that model alone (CLI and Map page); the other models are still mapped."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from embeddings.catalogue import create_catalogue
from embeddings.derived.maps import load_map, make_maps
from tests.harness.apptest import make_app, messages
from tests.harness.cli import cli

MODELS = ["pixels", "colour"]


def same_colours_folder(root: Path, count: int = 10) -> Path:
    """`count` pictures of one red square at different places on white: every picture has the
    same colours (so `colour` gives one vector for all), but not the same pixels."""
    root.mkdir(parents=True)
    for i in range(count):
        image = Image.new("RGB", (48, 48), (255, 255, 255))
        x, y = 4 + 3 * i, 28 - 2 * i
        ImageDraw.Draw(image).rectangle((x, y, x + 15, y + 15), fill=(210, 20, 30))
        image.save(root / f"square_{i}.png")
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("same")
    catalogue = create_catalogue(str(same_colours_folder(root / "src")), root / "data" / "same")
    for model_id in MODELS:
        build_model_index(catalogue, load_model(model_id))
    return catalogue.directory


@pytest.fixture
def data(pristine, tmp_path) -> Path:
    import shutil

    shutil.copytree(pristine, tmp_path / "data" / "same")
    return tmp_path / "data"


def test_the_model_that_cannot_be_mapped_is_reported_and_the_other_is_mapped(data):
    from embeddings.catalogue import Catalogue

    pixels, colour = make_maps(data / "same", MODELS)
    assert pixels.status == "computed", pixels.message
    assert colour.status == "failed"
    assert "'colour' cannot be mapped" in colour.message
    assert "all 10 of its vectors are the same" in colour.message
    assert load_map(Catalogue.open(data / "same"), "pixels").coords.shape == (10, 2)


def test_ten_copies_of_one_picture_are_refused_with_a_message(tmp_path):
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    source = tmp_path / "copies"
    source.mkdir()
    picture = Image.new("RGB", (40, 50), (30, 90, 200))
    for i in range(10):
        picture.save(source / f"copy_{i}.png")
    catalogue = create_catalogue(str(source), tmp_path / "data" / "copies")
    build_model_index(catalogue, load_model("pixels"))
    (outcome,) = make_maps(catalogue.directory, ["pixels"])
    assert outcome.status == "failed" and "all 10 of its vectors are the same" in outcome.message


def test_the_cli_reports_that_model_and_maps_the_other(data):
    done = cli("map", "--catalog", str(data / "same"), "--models", ",".join(MODELS))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "NaN" not in done.stderr
    assert "[colour] no map: model 'colour' cannot be mapped" in done.stderr
    assert "[pixels] map of all 10 products" in done.stdout


def test_the_map_page_says_which_model_cannot_be_mapped(data, monkeypatch):
    at = make_app(data, monkeypatch, catalog="same", models=",".join(MODELS)).run()
    at.switch_page("app_pages/map.py").run()
    at.button(key="map_compute").click().run()
    assert not at.exception, at.exception
    warned = messages(at.warning)
    assert "colour" in warned and "cannot be mapped" in warned and "NaN" not in warned
    assert (data / "same" / "maps" / "pixels" / "coords.npy").is_file()

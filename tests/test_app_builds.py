"""The app's front door to building: the Catalogue page builds through the core's one build path.

Once the page had its own orchestration: it saved the catalogue before any model had
succeeded, one model's failure stopped the models after it, and a folder build silently replaced
an existing catalogue of the same name. These drive the page (Streamlit's AppTest) into each case.
"""

from __future__ import annotations

import shutil

from streamlit.testing.v1 import AppTest

from embeddings import models as models_module
from embeddings.catalogue import Catalogue
from embeddings.index.opening import built_models, open_index
from embeddings.models import ModelSpec
from embeddings.models.pixels import PixelsEmbedder
from tests.harness.paths import REPO
from tests.harness.products import make_product_folder

APP = str(REPO / "app.py")


class FailsMidway(PixelsEmbedder):
    """A model that dies in its first batch (a driver error, an OOM...)."""

    spec = ModelSpec(
        "fails-midway", "test model that raises while embedding", 14400, "test", False, False
    )

    def embed_prepared(self, batch):
        raise RuntimeError("simulated failure in the middle of the build")


def catalogue_page(data, monkeypatch) -> AppTest:
    monkeypatch.setenv("EMBEDDINGS_DATA", str(data))
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/catalogue.py").run()
    return at


def build_from_folder(at: AppTest, folder, name: str, models: list[str]) -> AppTest:
    at.text_input(key="folder_source").set_value(str(folder))
    at.text_input(key="folder_name").set_value(name)
    at.multiselect(key="folder_models").set_value(models)
    at.checkbox(key="folder_bridges").uncheck().run()
    return at.button(key="folder_build").click().run()


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def test_a_model_failing_midway_in_the_app_does_not_stop_the_others(
    product_folder, tmp_path, monkeypatch
):
    monkeypatch.setitem(
        models_module._REGISTRY, FailsMidway.spec.id, (FailsMidway.spec, FailsMidway)
    )
    data = tmp_path / "data"
    data.mkdir()
    at = build_from_folder(
        catalogue_page(data, monkeypatch),
        product_folder,
        "shop",
        ["fails-midway", "pixels", "efficientnet-lite0"],
    )
    assert not at.exception, at.exception
    assert "Not built: fails-midway (RuntimeError: simulated failure" in texts(
        at.warning
    )  # on Search
    catalogue = Catalogue.open(data / "shop")
    assert built_models(catalogue) == [
        "efficientnet-lite0",
        "pixels",
    ]  # the models after it were built
    assert len(open_index(catalogue, "efficientnet-lite0")) == 48


def test_the_app_saves_no_catalogue_when_every_model_fails(product_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(
        models_module._REGISTRY, FailsMidway.spec.id, (FailsMidway.spec, FailsMidway)
    )
    data = tmp_path / "data"
    data.mkdir()
    at = build_from_folder(
        catalogue_page(data, monkeypatch), product_folder, "shop", ["fails-midway"]
    )
    assert not at.exception, at.exception
    assert "fails-midway was not built: RuntimeError: simulated failure" in texts(at.warning)
    assert not (data / "shop" / "catalog.json").exists()


def test_the_app_refuses_a_name_that_is_taken(product_folder, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    existing = data / "shop"
    at = build_from_folder(catalogue_page(data, monkeypatch), product_folder, "shop", ["pixels"])
    assert not at.exception and len(Catalogue.open(existing)) == 48
    other = make_product_folder(tmp_path / "other", variants=1)  # 12 images
    before = {p.name: p.stat().st_mtime_ns for p in existing.iterdir()}
    at = build_from_folder(catalogue_page(data, monkeypatch), other, "shop", ["pixels"])
    assert not at.exception, at.exception
    assert "a catalogue named 'shop' already exists" in texts(at.error)
    assert len(Catalogue.open(existing)) == 48  # it used to become 12 products
    assert {p.name: p.stat().st_mtime_ns for p in existing.iterdir()} == before
    shutil.rmtree(other)

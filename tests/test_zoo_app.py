"""The Catalogue page adds a zoo model to an existing catalogue: it says beforehand what the
model downloads and how long it takes, then embeds that model alone; a read-only server offers
no picker (no typed ids)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from embeddings.building.catalogue import BuildRequest, build_catalogue
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.index.opening import built_models
from embeddings.search.searcher import make_searcher
from tests.harness.paths import REPO
from tests.harness.zoo_models import cached_zoo

APP = str(REPO / "app.py")
TIMM = next(m for m in cached_zoo() if m.startswith("timm:"))


def catalogue_page(data, monkeypatch) -> AppTest:
    monkeypatch.setenv("EMBEDDINGS_DATA", str(data))
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/catalogue.py").run()
    return at


def captions(at: AppTest) -> str:
    return "\n".join(str(element.value) for element in at.caption)


def test_the_catalogue_page_adds_a_family_model_alone(product_folder, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    data = tmp_path / "data"
    catalogue = create_catalogue(str(product_folder), data / "shop")
    build_catalogue(
        BuildRequest(
            out=catalogue.directory, models=["pixels", "efficientnet-lite0"], bridges=False
        )
    )
    pixels_manifest = catalogue.model_dir("pixels") / "manifest.json"
    before = pixels_manifest.stat().st_mtime_ns
    at = catalogue_page(data, monkeypatch)
    assert not at.exception, at.exception
    at.selectbox(key="zoo_choice").set_value("dinov2-small").run()
    shown = captions(at)  # an empty hub cache here; efficientnet-lite0's rate scaled
    assert "dinov2-small: downloads 88 MB; roughly" in shown
    assert "scaled from efficientnet-lite0's" in shown
    at.selectbox(key="zoo_choice").set_value("another model (type its id)").run()
    at.text_input(key="zoo_typed").set_value("hf:a,b").run()
    assert "command line uses" in "\n".join(str(e.value) for e in at.error)
    at.text_input(key="zoo_typed").set_value(TIMM).run()
    assert f"{TIMM}: nothing to download (cached); roughly" in captions(at)
    assert "assuming a ViT-B/16's cost" in captions(at)
    at.checkbox(key="zoo_bridges").uncheck().run()
    at.button(key="zoo_add").click().run()
    assert not at.exception, at.exception
    assert any(f"{TIMM}: 48 vectors, 48 embedded" in str(s.value) for s in at.success)
    catalogue = Catalogue.open(data / "shop")
    assert built_models(catalogue) == sorted(["efficientnet-lite0", "pixels", TIMM])
    assert pixels_manifest.stat().st_mtime_ns == before  # only the new model was embedded
    hits = make_searcher(catalogue).search_item(catalogue.ids[3], [TIMM], 5)[TIMM]
    assert len(hits) == 5


def test_a_read_only_server_offers_no_model_picker(product_folder, tmp_path, monkeypatch):
    data = tmp_path / "data"
    catalogue = create_catalogue(str(product_folder), data / "shop")
    build_catalogue(BuildRequest(out=catalogue.directory, models=["pixels"], bridges=False))
    monkeypatch.setenv("EMBEDDINGS_READ_ONLY", "1")
    at = catalogue_page(data, monkeypatch)
    assert not at.exception, at.exception
    keys = {getattr(w, "key", None) for w in [*at.selectbox, *at.text_input, *at.button]}
    assert not keys & {"zoo_choice", "zoo_typed", "zoo_add"}

"""The app serving a published bundle (`EMBEDDINGS_BUNDLE`): read-only, the same views."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_support import resources
from embeddings.bridge import train_bridge_for_catalogue
from embeddings.bundle.publish import publish_bundle
from embeddings.quality.evaluate import evaluate_catalogue, save_results
from tests.harness.paths import REPO

APP = str(REPO / "app.py")


@pytest.fixture(scope="module")
def bundle_folder(built_catalogue, copy_catalogue, tmp_path_factory):
    catalogue = copy_catalogue(built_catalogue)
    train_bridge_for_catalogue(catalogue, "pixels")
    save_results(catalogue, evaluate_catalogue(catalogue, queries=20))
    out = tmp_path_factory.mktemp("published") / "shop-bundle"
    return publish_bundle(catalogue, ["pixels", "efficientnet-lite0"], out).folder


def serve(monkeypatch, source: str, tmp_path) -> AppTest:
    monkeypatch.setenv("EMBEDDINGS_BUNDLE", source)
    monkeypatch.setenv("EMBEDDINGS_BUNDLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBEDDINGS_DATA", str(tmp_path / "no-data"))
    monkeypatch.setattr(resources, "_bundles", {})  # a fresh server process
    return AppTest.from_file(APP, default_timeout=180)


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def test_the_app_serves_a_bundle_read_only(bundle_folder, monkeypatch, tmp_path):
    at = serve(monkeypatch, str(bundle_folder), tmp_path).run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="w_catalog").options == ["shop-bundle"]
    at.button(key="random").click().run()
    assert not at.exception
    assert "query-card" in texts(at.get("html"))
    at.switch_page("app_pages/catalogue.py").run()
    assert not at.exception
    assert "A published bundle, served read-only" in texts(at.markdown)
    assert not [b for b in at.button if b.key in ("build_missing", "folder_build", "demo_build")]
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert "eval_run" not in [button.key for button in at.button]  # the saved evaluation is shown
    assert len(at.get("vega_lite_chart")) >= 2


def test_a_bundle_that_cannot_be_opened_says_why(monkeypatch, tmp_path):
    at = serve(monkeypatch, "http://127.0.0.1:9/nowhere.tar.gz", tmp_path).run()
    assert not at.exception
    assert "could not be opened" in texts(at.error) and "next start tries again" in texts(at.error)

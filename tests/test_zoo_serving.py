"""A model named by its family, served without torch: an open_clip `local-dir:` model (tiny,
random, tests/zoo_models.py) built and exported with the main environment, then the app on an
interpreter made from deploy/requirements.txt alone (no torch, no open_clip, no transformers)
answers item, upload and native text queries with it in Chromium."""

from __future__ import annotations

import pytest

from app_support import browser
from tests.harness.paths import SHARED_FASHION
from tests.harness.products import make_product_folder
from tests.harness.serving_env import item_text_and_upload
from tests.harness.zoo_models import cached_zoo

pytestmark = [pytest.mark.browser, pytest.mark.deploy, pytest.mark.slow]

OPEN_CLIP = next(m for m in cached_zoo() if m.startswith("open_clip:"))
MODELS = ["efficientnet-lite0", OPEN_CLIP]
SAMPLE = 120


@pytest.fixture(scope="module")
def served_catalogue(tmp_path_factory, torch_free_python):
    from embeddings.building.catalogue import BuildRequest, build_catalogue
    from embeddings.catalogue import Catalogue, create_catalogue

    root = tmp_path_factory.mktemp("zoo-torch-free")
    if (SHARED_FASHION / "styles.csv").is_file():
        catalogue = create_catalogue(
            str(SHARED_FASHION), root / "data" / "fashion", limit=SAMPLE, seed=3
        )
    else:
        catalogue = create_catalogue(
            str(make_product_folder(root / "shop")), root / "data" / "shop"
        )
    built = build_catalogue(BuildRequest(out=catalogue.directory, models=MODELS))
    assert [o.status for o in built.outcomes] == ["built", "built"], built.outcomes
    return root / "data", Catalogue.open(catalogue.directory)


@pytest.fixture(scope="module")
def server(served_catalogue, torch_free_python, tmp_path_factory):
    data, _ = served_catalogue
    app = browser.start_app(
        data,
        log_path=tmp_path_factory.mktemp("logs") / "streamlit.log",
        python=torch_free_python,
        timeout=180,
    )
    yield app
    app.stop()


def test_a_family_model_answers_without_torch(page, server, served_catalogue, tmp_path):
    _, catalogue = served_catalogue
    item_text_and_upload(page, server.url, catalogue, MODELS, tmp_path)
    # Text through the open_clip model's own text tower (tokenizer.json, text.onnx).
    page.goto(f"{server.url}/?catalog={catalogue.name}&models={OPEN_CLIP}&text=blue+jeans")
    grids = browser.wait_for_results(page, [OPEN_CLIP], query="blue jeans", timeout=120)
    assert len(grids[OPEN_CLIP]["tiles"]) == 10
    log = server.log()
    assert "Traceback" not in log and "No module named" not in log, log[-3000:]

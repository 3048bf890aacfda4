"""Serving without torch: the app in an environment made from deploy/requirements.txt
alone, where `import torch` fails, answers item, text and upload queries in a real browser.

The environment is made by `tests/harness/serving_env.py` (a virtualenv from
deploy/requirements.txt, cached by that file's hash). The catalogue (a sample of the shared fashion
set, else the synthetic shop) and the ONNX exports of efficientnet-lite0 and the bridges' sentence
encoder are made here with the main environment (torch exports them); the server runs on the
torch-free interpreter. Where it cannot run (no Chromium, no package index) it skips, except in CI
(`CI=true`), where it fails.
"""

from __future__ import annotations

import subprocess

import pytest

from app_support import browser
from tests.harness.paths import SHARED_FASHION
from tests.harness.products import make_product_folder
from tests.harness.serving_env import item_text_and_upload

pytestmark = [pytest.mark.browser, pytest.mark.deploy, pytest.mark.slow]

MODELS = ["pixels", "efficientnet-lite0"]
SAMPLE = 300


@pytest.fixture(scope="module")
def served_catalogue(tmp_path_factory, torch_free_python):
    """(data folder, catalogue): pixels, efficientnet-lite0 and its text bridge, built and
    exported to ONNX with the main environment."""
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.building.model import build_model_index
    from embeddings.catalogue import create_catalogue
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("torch-free")
    if (SHARED_FASHION / "styles.csv").is_file():
        catalogue = create_catalogue(
            str(SHARED_FASHION), root / "data" / "fashion", limit=SAMPLE, seed=2
        )
    else:
        catalogue = create_catalogue(
            str(make_product_folder(root / "products")), root / "data" / "shop"
        )
    for model_id in MODELS:
        build_model_index(catalogue, load_model(model_id))
    train_bridge_for_catalogue(catalogue, "efficientnet-lite0")
    return root / "data", catalogue


@pytest.fixture(scope="module")
def server(served_catalogue, torch_free_python, app_server):
    data, _ = served_catalogue
    return app_server(data, python=torch_free_python, timeout=180)


def test_the_serving_environment_has_no_torch(torch_free_python):
    done = subprocess.run(
        [str(torch_free_python), "-c", "import torch"], capture_output=True, text=True
    )
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr
    present = subprocess.run(
        [str(torch_free_python), "-c", "import onnxruntime, tokenizers, faiss, streamlit"],
        capture_output=True,
        text=True,
    )
    assert present.returncode == 0, present.stderr


def open_app(page, server, catalogue, **params) -> None:
    query = "&".join(
        f"{k}={v}"
        for k, v in {"catalog": catalogue.name, "models": ",".join(MODELS), **params}.items()
    )
    page.goto(f"{server.url}/?{query}")
    page.wait_for_selector(
        browser.grid_selector("browse") + " a.tile", state="attached", timeout=120_000
    )


def test_item_text_and_upload_queries_without_torch(
    page, server, served_catalogue, torch_free_python, tmp_path
):
    _, catalogue = served_catalogue
    assert server.process.args[0] == str(torch_free_python)
    open_app(page, server, catalogue)  # the first page: the browse grid
    # An item query (the saved indexes), a text query through efficientnet-lite0's bridge (the
    # ONNX sentence encoder) and an upload (efficientnet-lite0 on ONNX Runtime).
    item_text_and_upload(page, server.url, catalogue, MODELS, tmp_path)
    log = server.log()
    assert "Traceback" not in log and "torch" not in log, log[-3000:]


def test_the_map_page_draws_every_product_without_torch(page, server, served_catalogue):
    from app_support import map_browser
    from embeddings.derived.maps import make_maps

    _, catalogue = served_catalogue
    assert all(o.status == "computed" for o in make_maps(catalogue.directory, MODELS))
    page.goto(f"{server.url}/map?catalog={catalogue.name}&models={','.join(MODELS)}")
    frame = map_browser.maps_frame(page)
    assert map_browser.state(frame)["drawn"] == len(catalogue)
    target = map_browser.loneliest(frame, 0)
    page.mouse.move(*map_browser.screen_position(page, frame, 0, target))
    frame.wait_for_function(  # title and labels at once, then the thumbnail fetched on demand
        "id => document.getElementById('tooltip').dataset.thumbnail === id",
        arg=target,
        timeout=60_000,
    )
    assert "torch" not in server.log()

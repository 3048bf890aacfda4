"""Shared fixtures: synthetic catalogues made on the spot, the shared real dataset, a real
browser, a real Milvus server, app servers and writable catalogue copies. Helpers that tests
import live in tests/harness/ (never import this file)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness.chromium import require_browser
from tests.harness.paths import SHARED_FASHION
from tests.harness.products import make_product_folder

if TYPE_CHECKING:
    from app_support.browser import AppServer
    from embeddings.catalogue import Catalogue

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def onnx_models_home(tmp_path_factory) -> Path:
    """The ONNX exports of this test session: a fresh folder (so the export path runs for real
    and the user's cache is untouched), or `$EMBEDDINGS_TEST_MODELS` to reuse one between runs.
    Set in the environment, so app servers and subprocesses the tests start use it too."""
    folder = os.environ.get("EMBEDDINGS_TEST_MODELS") or str(tmp_path_factory.mktemp("onnx"))
    os.environ["EMBEDDINGS_MODELS"] = folder
    return Path(folder)


@pytest.fixture(scope="session")
def product_folder(tmp_path_factory) -> Path:
    """48 synthetic product images: 4 colours (folder label) x 3 shapes (sidecar label) x 4."""
    return make_product_folder(tmp_path_factory.mktemp("products") / "products")


@pytest.fixture(scope="session")
def built_catalogue(product_folder, tmp_path_factory):
    """The synthetic products as a catalogue with `pixels` and `efficientnet-lite0` indexes.

    Session-scoped and read-only: tests that change a catalogue copy it (`copy_catalogue`) or
    build their own.
    """
    from embeddings.building.model import build_model_index
    from embeddings.catalogue import create_catalogue
    from embeddings.models import load_model

    catalogue = create_catalogue(str(product_folder), tmp_path_factory.mktemp("data") / "shop")
    for model_id in ("pixels", "efficientnet-lite0"):
        build_model_index(catalogue, load_model(model_id))
    return catalogue


@pytest.fixture(scope="session")
def shared_fashion() -> Path:
    if not (SHARED_FASHION / "styles.csv").is_file():
        pytest.skip(
            f"the shared dataset is absent ({SHARED_FASHION}); put ../shared beside the repository"
        )
    return SHARED_FASHION


@pytest.fixture(scope="session")
def torch_free_python() -> Path:
    """The python of the torch-free serving environment (made from deploy/requirements.txt once);
    its tests drive a browser, so it needs one too."""
    from tests.harness.serving_env import serving_environment

    require_browser()
    return serving_environment()


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium under Playwright, one per test module."""
    require_browser()
    from playwright.sync_api import sync_playwright

    from app_support import browser

    with sync_playwright() as playwright:
        instance = browser.launch_chromium(playwright)
        yield instance
        instance.close()


@pytest.fixture
def page(chromium):
    """A fresh browser tab, 1440 x 1000, in its own context (no state between tests)."""
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory):
    """A real Milvus standalone server for the whole session (tests/harness/milvus_server.py):
    started on first use on free ports with its own folder, reached on 127.0.0.1, stopped at the
    end. Tests
    share it; each catalogue's collections carry the catalogue folder's hash, so they never meet.

    When it cannot start, tests that need it fail in CI (`CI=true`) with the reason, and are
    skipped with the reason elsewhere."""
    from tests.harness.milvus_server import ServerUnavailable, start_server

    try:
        server = start_server(tmp_path_factory.mktemp("milvus-server"))
    except ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the Milvus server cannot start in CI: {exc}")
        pytest.skip(f"no Milvus server here: {exc}")
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def copy_catalogue(tmp_path_factory) -> Callable[..., Catalogue]:
    """The factory of writable catalogue copies: `copy_catalogue(source, target=None)` copies the
    folder of `source` (a Catalogue or its folder) to `target` (default: a fresh temporary folder
    of the same name) and opens the copy. Same images (the image root is kept), same indexes,
    bridges and saved results. Session catalogues are read-only: tests that write copy them."""
    from embeddings.catalogue import Catalogue

    def copy(source: Catalogue | Path, target: Path | None = None) -> Catalogue:
        directory = Path(getattr(source, "directory", source))
        if target is None:
            target = tmp_path_factory.mktemp("catalogue-copy") / directory.name
        shutil.copytree(directory, target)
        return Catalogue.open(target)

    return copy


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[Callable[..., AppServer]]:
    """The factory of real app servers: `app_server(data_dir, **options)` starts `streamlit run`
    on a free port of 127.0.0.1 (options: those of `app_support.browser.start_app`, e.g.
    `python=`, `script=`, `env=`; the log goes to a fresh temporary folder unless `log_path=`)
    and returns once it answers. Every server started is stopped when the test module ends, and
    its log must then hold no traceback."""
    from app_support import browser

    started: list[AppServer] = []

    def start(data_dir: Path, **options) -> AppServer:
        options.setdefault("log_path", tmp_path_factory.mktemp("logs") / "streamlit.log")
        server = browser.start_app(data_dir, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        assert "Traceback" not in server.log(), server.log()[-4000:]


@pytest.fixture(scope="session")
def bridged_catalogue(built_catalogue, copy_catalogue):
    """A copy of the synthetic catalogue whose two image-only models have text bridges (words
    mixed into product queries, fused models answering text). Read-only, like its source."""
    from embeddings.bridge import train_bridge_for_catalogue

    catalogue = copy_catalogue(built_catalogue)
    for model_id in ("pixels", "efficientnet-lite0"):
        train_bridge_for_catalogue(catalogue, model_id, holdout_fraction=0.25)
    return catalogue

"""Shared fixtures: synthetic catalogues made on the spot, and the shared real dataset."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
SHARED_FASHION = REPO.parent / "shared" / "datasets" / "fashion-product-images-small"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_models.py, helpers

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 210, 20),
}
SHAPES = ("circle", "square", "triangle")


def draw_product(colour: str, shape: str, variant: int, size=(60, 80)) -> Image.Image:
    """A product-like picture: a coloured shape on white, slightly shifted per variant."""
    rng = np.random.default_rng(zlib.crc32(f"{colour}/{shape}/{variant}".encode()))
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    dx, dy = (int(v) for v in rng.integers(-6, 7, size=2))
    box = (10 + dx, 18 + dy, w - 10 + dx, h - 18 + dy)
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(
            [(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=fill
        )
    return image


def make_product_folder(root: Path, variants: int = 4) -> Path:
    """`<colour>/<shape>_<n>.png` images plus a `metadata.csv` sidecar (title, shape)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,title,shape"]
    for colour in COLOURS:
        (root / colour).mkdir(exist_ok=True)
        for shape in SHAPES:
            for variant in range(variants):
                name = f"{colour}/{shape}_{variant}.png"
                draw_product(colour, shape, variant).save(root / name)
                rows.append(f"{name},{colour.title()} {shape} product {variant},{shape}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m embeddings ARGS` in a fresh interpreter from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "embeddings", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )


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
    return make_product_folder(tmp_path_factory.mktemp("products") / "shop")


@pytest.fixture(scope="session")
def built_catalogue(product_folder, tmp_path_factory):
    """The synthetic products as a catalogue with `pixels` and `efficientnet-lite0` indexes.

    Session-scoped and read-only: tests that change a catalogue build their own.
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


def require_browser() -> None:
    """Skip a browser test when Playwright or Debian's Chromium is missing (in CI: fail instead)."""
    from app_support import browser

    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the python package playwright is not installed"
    if reason is None and not browser.chromium_available():
        reason = f"no Chromium at {browser.CHROMIUM} (apt-get install chromium)"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)


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
    """A real Milvus standalone server for the whole session (tests/milvus_server.py): started on
    first use on free ports with its own folder, reached on 127.0.0.1, stopped at the end. Tests
    share it; each catalogue's collections carry the catalogue folder's hash, so they never meet.

    When it cannot start, tests that need it fail in CI (`CI=true`) with the reason, and are
    skipped with the reason elsewhere."""
    from milvus_server import ServerUnavailable, start_server

    try:
        server = start_server(tmp_path_factory.mktemp("milvus-server"))
    except ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the Milvus server cannot start in CI: {exc}")
        pytest.skip(f"no Milvus server here: {exc}")
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def bridged_catalogue(built_catalogue, tmp_path_factory):
    """A copy of the synthetic catalogue whose two image-only models have text bridges (issue 14:
    words mixed into product queries, fused models answering text). Read-only, like its source."""
    import shutil

    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.catalogue import Catalogue

    target = tmp_path_factory.mktemp("bridged-data") / "shop"
    shutil.copytree(built_catalogue.directory, target)
    catalogue = Catalogue.open(target)
    for model_id in ("pixels", "efficientnet-lite0"):
        train_bridge_for_catalogue(catalogue, model_id, holdout_fraction=0.25)
    return catalogue

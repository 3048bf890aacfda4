"""The torch-free serving environment of the tests: a virtualenv made with `python -m venv` and
`pip install -r deploy/requirements.txt` alone, as Streamlit Community Cloud makes its own.

It is kept under `$EMBEDDINGS_TEST_CACHE` (default: the system's temp folder) keyed by a hash of
that file and the Python version, so only a changed file rebuilds it. Where it cannot be made
(no package index) the tests using it skip, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.harness.paths import REPO

DEPLOY_REQUIREMENTS = REPO / "deploy" / "requirements.txt"


def cannot_run(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the torch-free serving test cannot run in CI: {reason}")
    pytest.skip(reason)


def serving_environment() -> Path:
    """The torch-free environment's python, made once per version of deploy/requirements.txt."""
    key = hashlib.sha256(
        DEPLOY_REQUIREMENTS.read_bytes() + platform.python_version().encode()
    ).hexdigest()[:16]
    root = Path(os.environ.get("EMBEDDINGS_TEST_CACHE") or tempfile.gettempdir())
    root = root / "embeddings-test-cache"
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"serving-venv-{key}"
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be making it right now
        if not (venv / "complete").is_file():
            _make_environment(venv)
    return venv / "bin" / "python"


def _make_environment(venv: Path) -> None:
    staging = venv.with_name(f".{venv.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, timeout=300)
    done = subprocess.run(
        [
            str(staging / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(DEPLOY_REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        cannot_run(f"pip could not install {DEPLOY_REQUIREMENTS}: {done.stderr[-1500:]}")
    (staging / "complete").write_text(DEPLOY_REQUIREMENTS.read_text())
    os.replace(staging, venv)


def item_text_and_upload(page, base_url: str, catalogue, models: list[str], upload_dir: Path):
    """In Chromium: an item query on every model, a text query through efficientnet-lite0's
    bridge and an upload of a product's own photo, which must come first on every model."""
    from app_support import browser

    item = catalogue.ids[7]
    page.goto(f"{base_url}/?catalog={catalogue.name}&models={','.join(models)}&item={item}")
    grids = browser.wait_for_results(page, models, query=item, timeout=120)
    assert all(len(grid["tiles"]) == 10 for grid in grids.values())
    text = "red shirt" if catalogue.name == "fashion" else "Red circle product"
    box = page.get_by_label("Describe a product")
    box.fill(text)
    box.press("Enter")
    grids = browser.wait_for_results(page, ["efficientnet-lite0"], query=text, timeout=120)
    assert len(grids["efficientnet-lite0"]["tiles"]) == 10
    product = catalogue.ids[21]
    upload = upload_dir / ("upload" + catalogue.image_path(product).suffix)
    shutil.copyfile(catalogue.image_path(product), upload)
    page.locator("input[type=file]").set_input_files(str(upload))
    grids = browser.wait_for_results(page, models, query=upload.name, timeout=120)
    for model in models:
        top_id, top_score = grids[model]["tiles"][0]
        assert top_id == product and top_score > 0.99, (model, grids[model]["tiles"][:3])

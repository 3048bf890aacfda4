"""An OS error is told in the words of the command that met it: only a build keeps "finished
chunks"; a search or an export that cannot write the models cache says so, and how to move it."""

from __future__ import annotations

import errno

import pytest
from PIL import Image

from embeddings.config import models_home
from embeddings.errors import describe_os_error
from tests.harness.cli import cli


@pytest.fixture
def unusable_cache(tmp_path) -> dict:
    """EMBEDDINGS_MODELS inside a regular file: nothing can be written there."""
    (tmp_path / "a-file").write_text("not a folder")
    return {"EMBEDDINGS_MODELS": str(tmp_path / "a-file" / "onnx")}


def test_search_that_cannot_write_the_models_cache(built_catalogue, unusable_cache, tmp_path):
    picture = tmp_path / "query.png"
    Image.new("RGB", (40, 40), (200, 20, 20)).save(picture)
    done = cli(
        "search", "--catalog", str(built_catalogue.directory), "--models", "efficientnet-lite0",
        "--image", str(picture), env=unusable_cache,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "finished chunks" not in done.stderr and "this build" not in done.stderr
    assert "EMBEDDINGS_MODELS" in done.stderr and "models cache" in done.stderr


def test_export_that_cannot_write_the_models_cache(unusable_cache):
    done = cli("export", "--models", "efficientnet-lite0", env=unusable_cache)
    assert done.returncode == 2, done.stderr
    assert "finished chunks" not in done.stderr and "EMBEDDINGS_MODELS" in done.stderr


def test_a_permission_error_in_the_models_cache_names_the_setting():
    denied = PermissionError(errno.EACCES, "Permission denied", str(models_home() / "clip"))
    message = describe_os_error(denied)
    assert "permission denied; set EMBEDDINGS_MODELS to a folder you can write to" in message
    assert "finished chunks" not in message and "Nothing built before was changed" in message
    building = describe_os_error(denied, building=True)
    assert "finished chunks of this build are kept" in building


def test_a_build_still_says_its_chunks_are_kept(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cat" / "x.npy"))
    assert "finished chunks of this build are kept" in describe_os_error(full, building=True)
    read_only = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "cat"))
    assert "choose another --out" in describe_os_error(read_only, building=True)
    assert "choose another --out" not in describe_os_error(read_only)

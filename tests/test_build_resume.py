"""A build killed with SIGKILL resumes to the index an uninterrupted build makes, through either
front door: the CLI, and the core `build_catalogue` called as the app's Catalogue page calls it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.paths import REPO
from tests.harness.products import make_product_folder

ARTEFACTS = ("index.faiss", "vectors.npy", "ids.txt")


#: What the app does: a BuildRequest and a progress callback, no CLI.
CORE_BUILD = """
import sys
from pathlib import Path
from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
source, out = sys.argv[1:3]
request = BuildRequest(out=Path(out), source=source, models=["efficientnet-lite0"], bridges=False,
                       index=IndexOptions(batch_size=8))
result = build_catalogue(request, progress=lambda event: None)
print("reused", sum(o.report.reused for o in result.outcomes if o.report))
sys.exit(1 if result.failed else 0)
"""


def build_command(source: Path, out: Path, door: str = "cli") -> list[str]:
    if door == "core":
        return [sys.executable, "-c", CORE_BUILD, str(source), str(out)]
    return [
        sys.executable,
        "-m",
        "embeddings",
        "build",
        "--source",
        str(source),
        "--out",
        str(out),
        "--models",
        "efficientnet-lite0",
        "--batch-size",
        "8",
        "--no-bridge",
    ]


def run_env(tmp_path):
    return {**os.environ, "EMBEDDINGS_DATA": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}


@pytest.mark.slow
@pytest.mark.parametrize("door", ["cli", "core"])
def test_sigkill_mid_build_then_rerun_equals_uninterrupted(door, tmp_path):
    source = make_product_folder(tmp_path / "products", variants=10)  # 120 images, 8 chunks of 16
    env = run_env(tmp_path)
    work = tmp_path / "killed" / "models" / "efficientnet-lite0.work"
    process = subprocess.Popen(
        build_command(source, tmp_path / "killed", door),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(work.glob("*/chunk-*.npz"))) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be killed; make it longer"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_chunks = len(list(work.glob("*/chunk-*.npz")))
    assert 3 <= finished_chunks < 8
    assert not (tmp_path / "killed" / "models" / "efficientnet-lite0" / "manifest.json").exists()
    assert not (tmp_path / "killed" / "catalog.json").exists()  # nothing is committed mid-build

    resumed = subprocess.run(
        build_command(source, tmp_path / "killed", door),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (
        f"reused {finished_chunks * 16}" in resumed.stdout
    )  # finished chunks were not re-embedded
    clean = subprocess.run(
        build_command(source, tmp_path / "clean"),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert clean.returncode == 0, clean.stderr
    for name in ARTEFACTS:
        killed_bytes = (tmp_path / "killed" / "models" / "efficientnet-lite0" / name).read_bytes()
        clean_bytes = (tmp_path / "clean" / "models" / "efficientnet-lite0" / name).read_bytes()
        assert killed_bytes == clean_bytes, f"{name} differs after resume"
    assert not work.exists()  # the work folder is cleaned up after success


def test_the_gathered_vectors_are_a_file_not_the_drivers_memory(tmp_path):
    """Before the commit, every vector of a build is memory-mapped from its work folder, so a
    Milvus sink (inserted batch by batch) needs no RAM for all of them; the values are those of
    the chunks, and an incremental run's reused vectors go into the same file."""
    import numpy as np
    from PIL import Image

    from embeddings.building.model import build_model_index, embed_catalogue
    from embeddings.catalogue import create_catalogue
    from embeddings.index.store import load_vectors
    from embeddings.models import load_model

    source = make_product_folder(tmp_path / "shop")
    catalogue = create_catalogue(str(source), tmp_path / "data" / "shop")
    model = load_model("pixels")
    fresh = embed_catalogue(catalogue, model, batch_size=8, force=True)
    assert isinstance(fresh.vectors, np.memmap)
    assert Path(fresh.vectors.filename).is_relative_to(fresh.work_dir)
    images = [Image.open(catalogue.image_path(item_id)) for item_id in fresh.ids[:3]]
    direct = model.encode_images(images)  # normalised rows: an absolute tolerance holds
    assert np.allclose(fresh.vectors[:3], direct, atol=1e-6)
    build_model_index(catalogue, model)
    ids, committed = load_vectors(catalogue.model_dir("pixels"))
    again = embed_catalogue(catalogue, model, batch_size=8)  # nothing new: every vector reused
    assert again.report.reused == len(ids) and isinstance(again.vectors, np.memmap)
    assert again.ids == ids and np.array_equal(np.asarray(again.vectors), committed)

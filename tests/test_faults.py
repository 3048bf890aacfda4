"""Faults: builds killed at random points, a full disk, a read-only folder, a model that dies.

Both front doors build through one core function (`embeddings.building.catalogue.build_catalogue`):
the CLI's `build` and the app's Catalogue page. Each fault runs through the CLI and through the
core function called as the app calls it; `tests/test_app_builds.py` drives the page itself."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from embeddings import models as models_module
from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.errors import describe_os_error
from embeddings.index.opening import open_index
from embeddings.models import ModelSpec
from embeddings.models.pixels import PixelsEmbedder
from embeddings.search.searcher import make_searcher
from tests.harness.paths import REPO
from tests.harness.products import draw_product, make_product_folder

#: A pixels build's files: raw pixels are stored as bytes with their norms (no vectors.npy).
ARTEFACTS = ("index.faiss", "norms.npy", "ids.txt")


def build_args(source, out, models="pixels", batch="4"):
    return [
        "build",
        "--source",
        str(source),
        "--out",
        str(out),
        "--models",
        models,
        "--batch-size",
        batch,
        "--no-bridge",
    ]


FRONT_DOORS = ("cli", "core")


def build_through(door: str, source, out, capsys, models="pixels", batch=4) -> tuple[int, str]:
    """Build through one front door: (exit code, what the user is told about failures)."""
    if door == "cli":
        code = main(build_args(source, out, models=models, batch=str(batch)))
        return code, capsys.readouterr().err
    events = []  # the app passes a progress callback; so does this
    try:
        result = build_catalogue(
            BuildRequest(
                out=Path(out),
                source=str(source),
                models=models.split(","),
                bridges=False,
                index=IndexOptions(batch_size=batch),
            ),
            progress=events.append,
        )
    except OSError as exc:
        return 2, describe_os_error(exc, building=True)
    assert any(e.stage == "embed" for e in events) or result.failed
    messages = [f"[{o.model_id}] build failed: {o.message}" for o in result.failed]
    return (1 if result.failed else 0), "\n".join(messages)


def run_build(args, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "embeddings", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_sigkill_at_ten_seeded_random_points(tmp_path):
    """Each run is killed at a random moment (scan, chunks, final write); the rerun completes and
    its artefacts equal an uninterrupted build's byte for byte."""
    source = make_product_folder(tmp_path / "products", variants=25)  # 300 images, 75 chunks of 4
    env = {**os.environ, "PYTHONPATH": str(REPO), "EMBEDDINGS_DATA": str(tmp_path / "data")}
    started = time.monotonic()
    clean = run_build(build_args(source, tmp_path / "clean"), env)
    assert clean.wait(timeout=600) == 0, clean.stderr.read()
    duration = time.monotonic() - started
    expected = {
        name: (tmp_path / "clean" / "models" / "pixels" / name).read_bytes() for name in ARTEFACTS
    }

    rng = random.Random(20261127)
    killed_before_end = 0
    for run in range(10):
        out = tmp_path / f"run{run}"
        process = run_build(build_args(source, out), env)
        time.sleep(rng.uniform(0.2, duration * 1.1))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed_before_end += 1
        process.wait()
        rerun = run_build(build_args(source, out), env)
        assert rerun.wait(timeout=600) == 0, f"run {run}: {rerun.stderr.read()}"
        for name in ARTEFACTS:
            assert (out / "models" / "pixels" / name).read_bytes() == expected[name], (
                f"run {run}: {name}"
            )
        assert not (out / "models" / "pixels.work").exists()
        assert not [p for p in (out / "models").iterdir() if p.name.startswith(".")]
    assert killed_before_end >= 5  # most runs really were interrupted


@contextmanager
def tmpfs(path: Path, size: str):
    """A real, small file system (needs root and mount rights; skipped otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(source: Path, count: int) -> None:
    for n in range(count):
        draw_product("green", "square", 100 + n).save(source / "green" / f"square_{100 + n}.png")


def assert_previous_index_still_loads(out: Path, ids_before: list[str]) -> None:
    catalogue = Catalogue.open(out)
    assert catalogue.ids == ids_before
    index = open_index(catalogue, "pixels")
    assert index.ids == ids_before
    assert make_searcher(catalogue).search_item(ids_before[0], ["pixels"], 3)["pixels"]


def small_source(tmp_path) -> Path:
    source = tmp_path / "products"
    make_product_folder(source, variants=1)  # 12 images: ~1.4 MB of pixels index + vectors
    return source


@pytest.mark.parametrize("door", FRONT_DOORS)
def test_disk_full_gives_a_clear_error_and_keeps_the_previous_index(door, tmp_path, capsys):
    source = small_source(tmp_path)
    with tmpfs(tmp_path / "disk", "3m") as disk:
        out = disk / "cat"
        assert build_through(door, source, out, capsys)[0] == 0
        ids_before = Catalogue.open(out).ids
        grow(source, 40)  # now needs ~6 MB: more than the disk has
        capsys.readouterr()
        code, err = build_through(door, source, out, capsys)
        assert code == 1
        assert "[pixels] build failed" in err and "No space left on device" in err
        assert "the disk is full" in err and "Indexes built before are unchanged" in err
        assert_previous_index_still_loads(out, ids_before)


@pytest.mark.parametrize("door", FRONT_DOORS)
def test_read_only_folder_gives_a_clear_error_and_keeps_the_previous_index(door, tmp_path, capsys):
    source = small_source(tmp_path)
    with tmpfs(tmp_path / "disk", "20m") as disk:
        out = disk / "cat"
        assert build_through(door, source, out, capsys)[0] == 0
        ids_before = Catalogue.open(out).ids
        grow(source, 2)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        capsys.readouterr()
        code, err = build_through(door, source, out, capsys)
        assert code == 2  # refused before any work: the catalogue cannot be written at all
        assert "Read-only file system" in err and "choose another --out" in err
        # ... and a catalogue on a read-only file system still serves.
        assert_previous_index_still_loads(out, ids_before)


class FailsMidway(PixelsEmbedder):
    """A model that embeds two batches, then dies (a driver error, an OOM...)."""

    spec = ModelSpec(
        "fails-midway", "test model that raises after two batches", 14400, "test", False, False
    )

    def __init__(self):
        self.batches = 0

    def embed_prepared(self, batch):
        self.batches += 1
        if self.batches > 2:  # the first chunk (two batches of 8) completes
            raise RuntimeError("simulated failure in the middle of the build")
        return super().embed_prepared(batch)


@pytest.mark.parametrize("door", FRONT_DOORS)
def test_a_model_failing_midway_does_not_stop_the_others(
    door, product_folder, tmp_path, capsys, monkeypatch
):
    # Registered for this test only: the registry is process-wide.
    monkeypatch.setitem(
        models_module._REGISTRY, FailsMidway.spec.id, (FailsMidway.spec, FailsMidway)
    )
    code, err = build_through(
        door,
        product_folder,
        tmp_path / "cat",
        capsys,
        models="pixels,fails-midway,efficientnet-lite0",
        batch=8,
    )
    assert code == 1
    assert "[fails-midway] build failed: RuntimeError: simulated failure" in err
    catalogue = Catalogue.open(tmp_path / "cat")
    for model_id in ("pixels", "efficientnet-lite0"):
        assert len(open_index(catalogue, model_id)) == 48
    assert not (catalogue.model_dir("fails-midway") / "manifest.json").exists()
    # Its finished chunk is kept for the next run.
    assert list((catalogue.directory / "models" / "fails-midway.work").glob("*/chunk-*.npz"))
    assert np.isfinite(open_index(catalogue, "pixels").vector(catalogue.ids[0])).all()

"""`build --engine ray` on a real two-node Ray cluster on 127.0.0.1 gives the local engine's index:
the same vectors (cosine >= 0.99999 per row), the same top-k, the same unreadable images; it is
incremental and resumable, survives a worker node's death, and says clearly when the cluster
cannot be reached or goes away, committing nothing. The app and searches never import Ray."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.harness.products import draw_product, make_product_folder
from tests.harness.ray_cluster import RayCluster, free_port, ray_cluster  # noqa: F401 - the fixture
from tests.harness.ray_helpers import (
    REPO,
    add_bad_images,
    assert_same_index,
    driver_env,
    failed_of,
    kill_group,
    resume,
    run_build,
    start_build,
    top_k,
    vectors_of,
    wait_for_pause,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
MODELS = ("pixels", "efficientnet-lite0")


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """48 synthetic products, one unreadable file and one image over the pixel cap."""
    folder = make_product_folder(tmp_path_factory.mktemp("ray-shop") / "shop", variants=4)
    add_bad_images(folder)
    return folder


@pytest.fixture(scope="module")
def local_build(shop, tmp_path_factory) -> Path:
    """The reference: the same catalogue built by the local engine."""
    out = tmp_path_factory.mktemp("ray-local") / "shop"
    done = run_build(shop, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def ray_args(cluster) -> tuple[str, ...]:
    return ("--engine", "ray", "--ray-address", cluster.address, "--ray-actor-cpus", "0.5")


def test_ray_engine_gives_the_local_index(ray_cluster, shop, local_build, tmp_path):  # noqa: F811
    out = tmp_path / "shop"
    done = run_build(shop, out, *ray_args(ray_cluster))
    assert done.returncode == 0, done.stderr[-3000:]
    for model_id in MODELS:
        assert_same_index(local_build, out, model_id)
        # The workers applied the local engine's checks, with the same words.
        assert failed_of(out, model_id) == failed_of(local_build, model_id)
        assert set(failed_of(out, model_id)) == {"red/broken", "blue/huge"}
    reasons = " ".join(failed_of(out, "efficientnet-lite0").values())
    assert "64,000,000-pixel limit" in reasons and "not an image" in reasons
    assert "efficientnet-lite0 embed: 100%" in done.stderr  # the same progress bars
    # The package reached the nodes through the job's runtime environment.
    assert list(ray_cluster.folder.glob("ray/session_*/runtime_resources/py_modules_files/*"))


def test_ray_engine_is_incremental(ray_cluster, shop, tmp_path):  # noqa: F811
    source = tmp_path / "shop"
    shutil.copytree(shop, source)
    out = tmp_path / "out"
    assert run_build(source, out, *ray_args(ray_cluster)).returncode == 0
    for variant in range(10, 13):  # three new products
        draw_product("green", "circle", variant).save(source / "green" / f"circle_{variant}.png")
    again = run_build(source, out, *ray_args(ray_cluster))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[efficientnet-lite0] 51 vectors x 1280 (flat): embedded 3 at" in again.stdout
    assert "reused 48" in again.stdout
    local = tmp_path / "local"
    assert run_build(source, local).returncode == 0
    for model_id in MODELS:
        assert_same_index(local, out, model_id)


@pytest.mark.parametrize("resume_on", ["ray", "local"])
def test_killed_driver_resumes_from_finished_chunks(
    ray_cluster,  # noqa: F811
    shop,
    local_build,
    tmp_path,
    resume_on,
):
    """A driver killed mid-build resumes from its finished chunks, on either engine."""
    out, log = tmp_path / "shop", tmp_path / "driver.log"
    driver = start_build(shop, out, *ray_args(ray_cluster), log=log, pause_at=MODELS[1])
    try:
        first = wait_for_pause(log, driver)
    finally:
        kill_group(driver)  # SIGKILL, with one of its 4 chunks on disk
    chunk_files = list((out / "models" / "efficientnet-lite0.work").glob("*/chunk-*.npz"))
    assert chunk_files == [first]  # 50 images in 4 chunks: the build was cut short
    kept = sum(len(np.load(path)["ids"]) for path in chunk_files)  # their vectors
    assert not (out / "catalog.json").exists()  # nothing committed
    engine = ray_args(ray_cluster) if resume_on == "ray" else ()
    resumed = run_build(shop, out, *engine)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    line = next(x for x in resumed.stdout.splitlines() if x.startswith("[efficientnet-lite0] 48"))
    reused = int(line.rsplit("reused ", 1)[1].replace(",", ""))
    assert reused == kept  # every vector of the finished chunks, none embedded again
    for model_id in MODELS:
        assert_same_index(local_build, out, model_id)


@pytest.mark.milvus
def test_a_milvus_server_is_the_sink_of_a_ray_build(
    ray_cluster,  # noqa: F811
    shop,
    local_build,
    milvus_server_uri,
    tmp_path,
):
    """The Ray engine changes only who embeds: the commit on the driver fills a real Milvus
    server, whose answers are the local FAISS build's (the same top-5, ties aside)."""
    from embeddings.catalogue import Catalogue
    from embeddings.index.opening import open_index

    out = tmp_path / "shop"
    done = run_build(shop, out, *ray_args(ray_cluster), "--milvus-uri", milvus_server_uri)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "models" / MODELS[1] / "index.faiss").exists()  # the vectors are served
    catalogue = Catalogue.open(out)
    served = open_index(catalogue, MODELS[1])
    assert served.manifest["milvus"]["uri"] == milvus_server_uri
    ids, vectors = vectors_of(local_build, MODELS[1])
    _, local_top = top_k(local_build, MODELS[1], vectors)
    scores, rows = served.search(np.ascontiguousarray(vectors, dtype=np.float32), 5)
    reference = vectors.astype(np.float64)
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    for query, want, got in zip(reference, local_top, rows, strict=True):
        got = [served.ids[r] for r in got]
        for mine, theirs in zip(want, got, strict=True):
            if mine != theirs:  # only a tie may swap two results
                gap = abs(reference[row_of[mine]] @ query - reference[row_of[theirs]] @ query)
                assert gap < 1e-5, f"top-5 {want} != {got}"


def test_unreachable_cluster_is_named_and_nothing_is_committed(shop, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    for how in ("option", "environment"):
        out = tmp_path / how
        if how == "option":
            done = run_build(shop, out, "--engine", "ray", "--ray-address", address)
        else:
            done = run_build(shop, out, "--engine", "ray", env=driver_env(RAY_ADDRESS=address))
        assert done.returncode == 2, done.stderr[-3000:]
        assert f"the Ray cluster at {address} does not answer" in done.stderr
        assert "run the same command again" in done.stderr
        assert not (out / "catalog.json").exists()


def test_torch_runtime_is_refused_on_ray(shop, tmp_path):
    done = run_build(shop, tmp_path / "out", "--engine", "ray",
                     env=driver_env(EMBEDDINGS_RUNTIME="torch"))  # fmt: skip
    assert done.returncode == 2
    assert "the torch runtime (EMBEDDINGS_RUNTIME=torch) is not offered on the Ray engine" in (
        done.stderr
    )
    assert not (tmp_path / "out").exists()


def test_cluster_gone_mid_build_commits_nothing_and_the_same_command_resumes(shop, tmp_path):
    port = free_port()
    cluster = RayCluster(port=port)
    try:
        cluster.start(workers=0)
        out = tmp_path / "shop"
        args = ("--engine", "ray", "--ray-address", cluster.address, "--ray-actor-cpus", "0.5")
        log = tmp_path / "driver.log"
        driver = start_build(shop, out, *args, log=log, pause_at=MODELS[1])
        wait_for_pause(log, driver)
        cluster.stop()  # the whole cluster goes away mid-build
        resume(log)
        try:
            code = driver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            kill_group(driver)
            raise
        log = (tmp_path / "driver.log").read_text()
        assert code == 2, log[-3000:]
        assert f"the Ray cluster at {cluster.address} went away during the build" in log
        assert not (out / "catalog.json").exists()
        cluster = RayCluster(port=port)  # back, at the same address
        cluster.start(workers=0)
        resumed = run_build(shop, out, *args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "[efficientnet-lite0] 48 vectors" in resumed.stdout
        assert "reused 0" not in resumed.stdout.split("[efficientnet-lite0] 48", 1)[1]
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


def test_a_worker_node_killed_mid_build_still_gives_the_local_index(
    ray_cluster,  # noqa: F811
    shop,
    local_build,
    tmp_path,
):
    out, log = tmp_path / "shop", tmp_path / "driver.log"
    driver = start_build(shop, out, *ray_args(ray_cluster), log=log, pause_at=MODELS[1])
    try:
        wait_for_pause(log, driver)
        ray_cluster.kill_worker_raylet()
        resume(log)
        code = driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            kill_group(driver)
        ray_cluster.add_worker()  # back to two nodes for whatever runs next
    assert code == 0, (tmp_path / "driver.log").read_text()[-3000:]
    for model_id in MODELS:
        assert_same_index(local_build, out, model_id)


def test_the_app_a_local_build_and_a_search_never_import_ray(built_catalogue, shop, tmp_path):
    script = f"""
import importlib, pkgutil, sys
import app_support, embeddings
for package in (app_support, embeddings):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.startswith("embeddings.models.") or module.name.endswith("__main__"):
            continue  # the torch loaders (slow, no ray); the command line's entry point
        importlib.import_module(module.name)
from embeddings.cli import main
code = main(["build", "--source", {str(shop)!r}, "--out", {str(tmp_path / "local")!r},
             "--models", "pixels", "--no-bridge"])
assert code == 0, code
code = main(["search", "--catalog", {str(built_catalogue.directory)!r}, "--models",
             "pixels,efficientnet-lite0", "--item", {built_catalogue.ids[0]!r}, "-k", "3"])
assert code == 0, code
loaded = sorted(name for name in sys.modules if name == "ray" or name.startswith("ray."))
print("ray modules:", loaded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=driver_env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray modules: []" in done.stdout
    assert "ray" not in (REPO / "deploy" / "requirements.txt").read_text().lower()

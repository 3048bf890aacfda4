"""Maps of the embedding space (embeddings/derived/maps.py): saved with the identity of their index,
invalidated by a rebuild, sampled above a size, honest about their faithfulness; the CLI."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from embeddings.artefacts import StaleArtefactError, index_identity
from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.derived.maps import load_map, make_maps
from embeddings.errors import IndexMissingError
from embeddings.index.opening import open_index
from embeddings.index.store import read_manifest
from embeddings.locks import BuildBusyError, build_lock
from tests.harness.cli import cli


@pytest.fixture
def own_shop(tmp_path, product_folder) -> Catalogue:
    """A fresh catalogue of the 48 synthetic products with a `pixels` index, free to change."""
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    catalogue = create_catalogue(str(product_folder), tmp_path / "data" / "shop")
    build_model_index(catalogue, load_model("pixels"))
    return catalogue


def neighbours_kept(vectors: np.ndarray, coords: np.ndarray, k: int = 10) -> float:
    """The faithfulness figure computed the plain way: all pairs, numpy only."""
    cosine = vectors @ vectors.T
    planar = -((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(cosine, -np.inf)
    np.fill_diagonal(planar, -np.inf)
    near = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    on_map = np.argsort(-planar, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(near, on_map, strict=True)]))


def test_a_map_is_saved_with_its_index_identity_and_an_honest_faithfulness(own_shop):
    (outcome,) = make_maps(own_shop.directory, ["pixels"])
    assert outcome.status == "computed", outcome.message
    saved = load_map(Catalogue.open(own_shop.directory), "pixels")
    index = open_index(own_shop, "pixels")
    assert saved.ids == index.ids and saved.coords.shape == (48, 2)
    assert np.isfinite(saved.coords).all() and np.ptp(saved.coords, axis=0).min() > 0
    manifest = saved.manifest
    assert manifest["index"] == index_identity(read_manifest(own_shop.model_dir("pixels")))
    assert manifest["method"] == "openTSNE" and manifest["sampled"] is False
    assert manifest["pca"]["dims"] == 48  # 14,400-d pixels are reduced before t-SNE
    faithful = manifest["faithfulness"]
    vectors = index.reconstruct_batch(np.arange(48))
    # Every product is in the faithfulness sample here, so the figure is exactly the plain one.
    assert faithful["sample"] == 48
    assert faithful["neighbours_kept"] == pytest.approx(
        neighbours_kept(vectors, saved.coords), abs=1e-4
    )
    assert faithful["chance"] == pytest.approx(10 / 47, abs=1e-6)
    # Four colour clusters: a real layout keeps far more neighbours than chance.
    assert faithful["neighbours_kept"] > 2 * faithful["chance"]
    assert 0.5 < faithful["trustworthiness"] <= 1.0


@pytest.mark.slow
def test_a_rebuild_invalidates_the_map(own_shop):
    make_maps(own_shop.directory, ["pixels"])
    assert load_map(Catalogue.open(own_shop.directory), "pixels").manifest["mapped"] == 48
    result = build_catalogue(
        BuildRequest(
            out=own_shop.directory, models=["pixels"], bridges=False, index=IndexOptions(force=True)
        )
    )
    assert not result.failed
    rebuilt = Catalogue.open(own_shop.directory)
    with pytest.raises(StaleArtefactError, match="earlier build of its index") as caught:
        load_map(rebuilt, "pixels")
    assert f"python -m embeddings map --catalog {own_shop.directory} --models pixels" in str(
        caught.value
    )
    (outcome,) = make_maps(own_shop.directory, ["pixels"])
    assert outcome.status == "computed"
    assert load_map(rebuilt, "pixels").manifest["index"] == index_identity(
        read_manifest(own_shop.model_dir("pixels"))
    )


def test_new_products_invalidate_the_map(tmp_path, product_folder):
    import shutil

    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    source = tmp_path / "src"
    shutil.copytree(product_folder, source)
    catalogue = create_catalogue(str(source), tmp_path / "data" / "grow")
    build_model_index(catalogue, load_model("pixels"))
    make_maps(catalogue.directory, ["pixels"])
    shutil.copyfile(source / "red" / "circle_0.png", source / "red" / "circle_9.png")
    result = build_catalogue(
        BuildRequest(out=catalogue.directory, models=["pixels"], bridges=False)
    )
    assert not result.failed and len(result.catalogue) == 49
    with pytest.raises(StaleArtefactError):
        load_map(Catalogue.open(catalogue.directory), "pixels")


def test_above_the_limit_a_sample_stratified_by_the_main_label_is_mapped(own_shop):
    (outcome,) = make_maps(own_shop.directory, ["pixels"], max_points=24)
    saved = load_map(Catalogue.open(own_shop.directory), "pixels")
    manifest = saved.manifest
    assert manifest["sampled"] is True and manifest["mapped"] == 24
    assert manifest["products"] == 48 and manifest["sample_label"] == "folder"
    assert Counter(i.split("/")[0] for i in saved.ids) == {
        c: 6 for c in ("red", "green", "blue", "yellow")
    }


def test_no_map_yet_says_how_to_compute_one(own_shop):
    with pytest.raises(IndexMissingError, match="python -m embeddings map --catalog"):
        load_map(own_shop, "pixels")


@pytest.mark.slow
def test_maps_wait_for_no_build_and_repair_what_a_killed_writer_left(own_shop):
    with build_lock(own_shop.directory), pytest.raises(BuildBusyError, match="right now"):
        make_maps(own_shop.directory, ["pixels"])
    maps = own_shop.directory / "maps"
    (maps / ".pixels.new-killed").mkdir(parents=True)
    (maps / ".pixels.new-killed" / "coords.npy").write_bytes(b"half")
    make_maps(own_shop.directory, ["pixels"])
    assert sorted(p.name for p in maps.iterdir()) == ["pixels"]
    # A swap cut between its two renames: the next writer puts the old map back first.
    os.replace(maps / "pixels", maps / "pixels.old")
    make_maps(own_shop.directory, ["pixels"])
    assert sorted(p.name for p in maps.iterdir()) == ["pixels"]
    assert load_map(own_shop, "pixels").manifest["mapped"] == 48


def test_a_model_that_cannot_be_mapped_fails_alone(own_shop):
    outcomes = make_maps(own_shop.directory, ["pixels", "efficientnet-lite0"])
    assert [(o.model_id, o.status) for o in outcomes] == [
        ("pixels", "computed"),
        ("efficientnet-lite0", "failed"),
    ]
    assert "no index" in outcomes[1].message
    assert load_map(own_shop, "pixels").manifest["mapped"] == 48


@pytest.mark.slow
def test_cli_map(own_shop):
    done = cli("map", "--catalog", str(own_shop.directory), "--models", "pixels")
    assert done.returncode == 0, done.stderr
    assert "[pixels] map of all 48 products (openTSNE, PCA to 48 dims first)" in done.stdout
    manifest = json.loads(
        (Path(own_shop.directory) / "maps" / "pixels" / "manifest.json").read_text()
    )
    assert f"{manifest['faithfulness']['neighbours_kept']:.3f} of each product's 10" in done.stdout
    unknown = cli("map", "--catalog", str(own_shop.directory), "--models", "pixles")
    assert unknown.returncode == 2 and "pixles" in unknown.stderr
    missing = cli("map", "--catalog", str(own_shop.directory), "--models", "efficientnet-lite0")
    assert missing.returncode == 1 and "[efficientnet-lite0] no map" in missing.stderr

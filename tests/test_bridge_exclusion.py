"""Titles kept out of bridge training (`--bridge-exclude-titles`), and the `memory` recipe.

The exclusion is checked where it matters: the rows that reach the head's training and the
memory's groups, not only the manifest.
"""

from __future__ import annotations

import numpy as np
import pytest

import embeddings.bridge.fit as fit_module
import embeddings.bridge.memory_fit as memory_fit_module
from embeddings.bridge import (
    StaleBridgeError,
    fit_bridge,
    load_bridge,
    read_bridge_manifest,
    read_excluded_titles,
    read_holdout_ids,
    title_vectors,
    train_bridge_for_catalogue,
)
from embeddings.bridge.exclusion import ExcludedTitles, read_title_file, title_key
from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.errors import EmbeddingsError
from embeddings.index.store import load_vectors

MODEL = "efficientnet-lite0"


@pytest.fixture()
def spy(monkeypatch):
    """Records the image vectors the head trains on and the memory's {text: rows} groups."""
    seen: dict = {}
    train_head, build_memory = fit_module.train_head, memory_fit_module.build_memory

    def train_spy(texts, images, **kwargs):
        seen["head_images"] = np.array(images)
        return train_head(texts, images, **kwargs)

    def memory_spy(groups, *args, **kwargs):
        seen["groups"] = {text: list(rows) for text, rows in groups.items()}
        return build_memory(groups, *args, **kwargs)

    monkeypatch.setattr(fit_module, "train_head", train_spy)
    monkeypatch.setattr(memory_fit_module, "build_memory", memory_spy)
    return seen


def test_excluded_titles_and_their_products_never_reach_training(
    built_catalogue, spy, copy_catalogue
):
    catalogue = copy_catalogue(built_catalogue)
    ids, vectors = load_vectors(catalogue.model_dir(MODEL))
    # Three products share one title (as many real products do); a fourth is excluded too.
    shared = ["red/circle_0", "red/square_1", "blue/triangle_2"]
    for item_id in shared:
        catalogue.items.loc[item_id, "title"] = "Nike Men Navy Blue Shorts"
    excluded_ids = {*shared, "green/square_3"}
    exclude = ExcludedTitles.of(["nike men  NAVY blue shorts", "Green square product 3"])
    fit = fit_bridge(
        catalogue,
        MODEL,
        ids=ids,
        vectors=vectors,
        weights_id="w",
        holdout_fraction=0.2,
        exclude=exclude,
    )
    # The head's training rows: no excluded product's image vector among them.
    rows_of = {vectors[ids.index(i)].tobytes(): i for i in ids}
    trained = {rows_of[v.tobytes()] for v in spy["head_images"]}
    assert trained and not trained & excluded_ids
    # The memory: neither the titles nor any excluded product in any group (label sentences too).
    assert not {title_key(t) for t in spy["groups"]} & exclude.keys
    in_memory = {ids[row] for rows in spy["groups"].values() for row in rows}
    assert in_memory == trained  # exactly the training products, nothing held out or excluded
    # Recorded: count, hash and products; the titles themselves; never-trained ids include them.
    manifest = read_bridge_manifest(fit.staging)
    assert manifest["excluded_titles"] == {
        "count": 2,
        "sha256": exclude.sha256,
        "products": 4,
    }
    assert manifest["trained_on"] == len(trained)
    assert set(read_holdout_ids(fit.staging)) >= excluded_ids
    assert read_excluded_titles(fit.staging) == list(exclude.titles)


@pytest.mark.slow
def test_exclusion_changes_the_bridge_and_is_part_of_its_settings(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    plain = train_bridge_for_catalogue(catalogue, MODEL, holdout_fraction=0.2)
    assert plain.startswith("trained on")
    again = train_bridge_for_catalogue(catalogue, MODEL, holdout_fraction=0.2)
    assert again.startswith("up to date")
    excluding = train_bridge_for_catalogue(
        catalogue,
        MODEL,
        holdout_fraction=0.2,
        exclude=ExcludedTitles.of(["Red circle product 0"]),
    )
    assert excluding.startswith("trained on")  # a new exclusion retrains
    manifest = read_bridge_manifest(catalogue.bridge_dir(MODEL))
    assert manifest["excluded_titles"]["products"] == 1
    assert "red/circle_0" in read_holdout_ids(catalogue.bridge_dir(MODEL))


@pytest.mark.slow
def test_build_and_bridge_commands_take_the_exclusion_file(product_folder, tmp_path, capsys):
    titles = tmp_path / "titles.txt"
    titles.write_text("Blue circle product 1\n\nYellow square product 2\n", encoding="utf-8")
    out = tmp_path / "cat"
    args = ["build", "--source", str(product_folder), "--out", str(out), "--models", "colour"]
    assert main([*args, "--bridge-exclude-titles", str(titles)]) == 0
    catalogue = Catalogue.open(out)
    manifest = read_bridge_manifest(catalogue.bridge_dir("colour"))
    assert manifest["excluded_titles"]["count"] == 2
    assert manifest["excluded_titles"]["products"] == 2
    assert {"blue/circle_1", "yellow/square_2"} <= set(
        read_holdout_ids(catalogue.bridge_dir("colour"))
    )
    # `bridge` retrains with another file, and says what is wrong with a missing one.
    other = tmp_path / "other.txt"
    other.write_text("Red circle product 0\n", encoding="utf-8")
    assert main(["bridge", "--catalog", str(out), "--exclude-titles", str(other)]) == 0
    manifest = read_bridge_manifest(catalogue.bridge_dir("colour"))
    assert manifest["excluded_titles"]["count"] == 1
    capsys.readouterr()
    assert main([*args, "--bridge-exclude-titles", str(tmp_path / "nope.txt")]) == 2
    assert "--bridge-exclude-titles" in capsys.readouterr().err


def test_title_files_are_read_strictly(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(EmbeddingsError, match="names no title"):
        read_title_file(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\xe9 Women Top\n".encode("latin-1"))
    with pytest.raises(EmbeddingsError, match="not UTF-8"):
        read_title_file(latin)
    with pytest.raises(EmbeddingsError, match="a folder"):
        read_title_file(tmp_path)


def test_memory_bridge_round_trip_and_damage(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    train_bridge_for_catalogue(catalogue, MODEL, holdout_fraction=0.2)
    bridge_dir = catalogue.bridge_dir(MODEL)
    bridge = load_bridge(bridge_dir, catalogue=catalogue, model_id=MODEL)
    assert bridge.recipe == "memory" and bridge.memory is not None
    # Label sentences join the titles: folder and shape values, alone and together.
    assert {"yellow", "circle", "red circle"} <= set(bridge.memory.texts)
    titles = ["Yellow triangle product 1", "green circle"]
    live = bridge.encode_texts(titles)
    assert live.shape == (2, 1280)
    assert np.allclose(np.linalg.norm(live, axis=1), 1, atol=1e-5)
    cache = title_vectors(catalogue)
    known = [t for t in cache.titles[:3]]
    assert np.allclose(
        bridge.encode_texts(known),
        bridge.encode_sentence_vectors(cache.for_titles(known), known),
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="needs the texts"):
        bridge.encode_sentence_vectors(cache.for_titles(known))
    (bridge_dir / "memory_prototypes.npy").write_bytes(b"not an array")
    with pytest.raises(StaleBridgeError, match="memory .* is damaged"):
        load_bridge(bridge_dir, catalogue=catalogue, model_id=MODEL)


@pytest.mark.slow
def test_linear_recipe_has_no_memory(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    train_bridge_for_catalogue(catalogue, MODEL, holdout_fraction=0.2, recipe="linear")
    bridge_dir = catalogue.bridge_dir(MODEL)
    bridge = load_bridge(bridge_dir, catalogue=catalogue, model_id=MODEL)
    assert bridge.recipe == "linear" and bridge.memory is None
    assert not list(bridge_dir.glob("memory_*"))
    assert bridge.encode_texts(["Red square product 0"]).shape == (1, 1280)
    with pytest.raises(EmbeddingsError, match="unknown bridge recipe"):
        train_bridge_for_catalogue(catalogue, MODEL, recipe="mlp")

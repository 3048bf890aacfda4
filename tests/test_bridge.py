"""Text bridges: they learn (well above chance on held-out titles), they are deterministic,
they are refused when stale, and `build` trains them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings.bridge import (
    StaleBridgeError,
    TrainOptions,
    load_bridge,
    read_bridge_manifest,
    read_holdout_ids,
    title_vectors,
    train_bridge_for_catalogue,
    train_head,
)
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.index.store import load_vectors, write_model_index
from embeddings.search.searcher import default_text_encoder, make_searcher, text_capable_models
from tests.harness.products import draw_product


@pytest.fixture(scope="module")
def bridged(built_catalogue, copy_catalogue) -> Catalogue:
    """A copy of the synthetic catalogue with an efficientnet-lite0 bridge (30% titles held out)."""
    catalogue = copy_catalogue(built_catalogue)
    summary = train_bridge_for_catalogue(catalogue, "efficientnet-lite0", holdout_fraction=0.3)
    assert summary and "held-out Recall@10" in summary and "chance" in summary
    return catalogue


def test_bridge_beats_chance_on_held_out_synthetic_titles(bridged):
    manifest = read_bridge_manifest(bridged.bridge_dir("efficientnet-lite0"))
    holdout = manifest["holdout"]
    n = holdout["queries"]
    assert n >= 8 and manifest["trained_on"] + manifest["held_out_products"] == 48
    # A held-out title ("Blue square product 2") must find a blue square among the held-out images.
    assert holdout["label"] == "folder"
    assert holdout["label_precision@1"] >= max(0.75, 2 * holdout["chance_label_precision"])
    # And its own product (the variant number is arbitrary, so same-look products compete).
    assert holdout["recall@1"] >= 4 * holdout["chance_recall@1"]
    # Trained on titles and held-out titles are disjoint; held-out ids are saved.
    held = set(read_holdout_ids(bridged.bridge_dir("efficientnet-lite0")))
    assert len(held) == manifest["held_out_products"]


def test_bridge_answers_text_search_in_image_space(bridged):
    encoder = default_text_encoder(bridged, "efficientnet-lite0", load_embedder=None)
    assert encoder.kind == "bridge"
    vectors = encoder.encode_texts(["Yellow triangle product", "Green circle product"])
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert text_capable_models(bridged) == {"efficientnet-lite0": "bridge"}
    hits = make_searcher(bridged).search_text("Yellow triangle product", ["efficientnet-lite0"], 4)
    top = [bridged.items.at[h.id, "folder"] for h in hits["efficientnet-lite0"]]
    assert top.count("yellow") >= 3


def test_cached_title_vectors_equal_live_encoding(bridged):
    cache = title_vectors(bridged)
    bridge = load_bridge(
        bridged.bridge_dir("efficientnet-lite0"), catalogue=bridged, model_id="efficientnet-lite0"
    )
    titles = cache.titles[:5]
    assert np.allclose(
        bridge.encode_sentence_vectors(cache.for_titles(titles), titles),
        bridge.encode_texts(titles),
        atol=1e-4,
    )


def test_title_cache_is_reused_and_incremental(bridged, monkeypatch, copy_catalogue):
    import embeddings.bridge.sentences as bridge_module

    catalogue = copy_catalogue(bridged)
    before = title_vectors(catalogue)

    def refuse(texts, **_):
        raise AssertionError(f"re-encoded {len(texts)} titles that were cached")

    monkeypatch.setattr(bridge_module, "encode_sentences", refuse)
    assert np.array_equal(title_vectors(catalogue).vectors, before.vectors)
    # One title changes: only that one is encoded again.
    encoded = []
    monkeypatch.setattr(
        bridge_module,
        "encode_sentences",
        lambda texts, **_: encoded.extend(texts) or np.ones((len(texts), 384), np.float32),
    )
    catalogue.items.loc[catalogue.ids[0], "title"] = "A brand new title"
    after = title_vectors(catalogue)
    assert encoded == ["A brand new title"]
    assert len(after.titles) == len(before.titles)


def test_training_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    texts = rng.normal(size=(64, 384)).astype(np.float32)
    images = rng.normal(size=(64, 32)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    options = TrainOptions(epochs=3, batch_size=16)
    first = train_head(texts, images, seed=1, options=options)
    again = train_head(texts, images, seed=1, options=options)
    other = train_head(texts, images, seed=2, options=options)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.slow
def test_whole_bridge_training_is_deterministic(bridged, copy_catalogue):
    catalogue = copy_catalogue(bridged)
    kept = train_bridge_for_catalogue(catalogue, "efficientnet-lite0", holdout_fraction=0.3)
    assert kept.startswith("up to date")  # same settings, same index: not trained again
    retrained = train_bridge_for_catalogue(
        catalogue, "efficientnet-lite0", holdout_fraction=0.3, force=True
    )
    assert retrained.startswith("trained on")
    for name in ("weights.npy", "bias.npy", "holdout_ids.txt"):
        assert (catalogue.bridge_dir("efficientnet-lite0") / name).read_bytes() == (
            bridged.bridge_dir("efficientnet-lite0") / name
        ).read_bytes(), name


def test_stale_bridge_is_refused(bridged, copy_catalogue):
    catalogue = copy_catalogue(bridged)
    model_dir = catalogue.model_dir("efficientnet-lite0")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    ids, vectors = load_vectors(model_dir)
    # The index is rebuilt with other weights: the bridge maps into a space that no longer exists.
    write_model_index(
        model_dir,
        ids=ids,
        vectors=vectors,
        manifest={**manifest, "weights_id": "file:finetuned.pth"},
    )
    with pytest.raises(
        StaleBridgeError, match=r"file:finetuned\.pth.*retrain it: python -m embeddings bridge"
    ):
        load_bridge(
            catalogue.bridge_dir("efficientnet-lite0"),
            catalogue=catalogue,
            model_id="efficientnet-lite0",
        )
    with pytest.raises(StaleBridgeError):
        default_text_encoder(catalogue, "efficientnet-lite0", load_embedder=None)


def test_bridge_of_an_earlier_catalogue_version_still_answers(bridged, copy_catalogue):
    """A bridge belongs to the model's weights, not to one set of products: after products were
    added (an index rebuilt with the same weights, without --bridge), it still maps text into
    the same space and answers."""
    catalogue = copy_catalogue(bridged)
    model_dir = catalogue.model_dir("efficientnet-lite0")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    ids, vectors = load_vectors(model_dir)
    info = json.loads((catalogue.directory / "catalog.json").read_text())
    info["fingerprint"] = "0123456789abcdef"  # products were added or removed since
    (catalogue.directory / "catalog.json").write_text(json.dumps(info))
    write_model_index(
        model_dir,
        ids=ids,
        vectors=vectors,
        manifest={**manifest, "catalogue_fingerprint": "0123456789abcdef"},
    )
    changed = Catalogue.open(catalogue.directory)
    bridge = load_bridge(
        changed.bridge_dir("efficientnet-lite0"), catalogue=changed, model_id="efficientnet-lite0"
    )
    assert bridge.manifest["catalogue_fingerprint"] != changed.fingerprint
    assert text_capable_models(changed) == {"efficientnet-lite0": "bridge"}


def test_missing_bridge_says_how_to_train_one(built_catalogue):
    from embeddings.errors import IndexMissingError

    with pytest.raises(IndexMissingError, match="python -m embeddings bridge --catalog"):
        load_bridge(
            built_catalogue.bridge_dir("pixels"), catalogue=built_catalogue, model_id="pixels"
        )


def test_catalogue_without_titles_gets_no_bridge(tmp_path):
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    source = tmp_path / "plain" / "red"
    source.mkdir(parents=True)
    for variant in range(4):
        draw_product("red", "circle", variant).save(source / f"item_{variant}.png")
    catalogue = create_catalogue(str(tmp_path / "plain"), tmp_path / "cat")
    build_model_index(catalogue, load_model("pixels"))
    assert train_bridge_for_catalogue(catalogue, "pixels") is None
    assert not catalogue.bridge_dir("pixels").exists()


@pytest.mark.slow
def test_build_trains_a_bridge_unless_told_not_to(product_folder, tmp_path, capsys):
    from embeddings.cli import main

    assert (
        main(
            [
                "build",
                "--source",
                str(product_folder),
                "--out",
                str(tmp_path / "off"),
                "--models",
                "pixels",
                "--no-bridge",
            ]
        )
        == 0
    )
    assert not Catalogue.open(tmp_path / "off").bridge_dir("pixels").exists()
    assert (
        main(
            [
                "build",
                "--source",
                str(product_folder),
                "--out",
                str(tmp_path / "on"),
                "--models",
                "pixels",
            ]
        )
        == 0
    )
    assert "[pixels] text bridge: trained on" in capsys.readouterr().out
    catalogue = Catalogue.open(tmp_path / "on")
    manifest = read_bridge_manifest(catalogue.bridge_dir("pixels"))
    assert manifest["model_id"] == "pixels" and manifest["weights_id"] == "none"
    assert manifest["catalogue_fingerprint"] == catalogue.fingerprint
    assert text_capable_models(catalogue) == {"pixels": "bridge"}


@pytest.mark.slow
@pytest.mark.shared_data
def test_bridge_beats_chance_on_shared_fashion_titles(shared_fashion, tmp_path):
    """Real titles and images: 1,200 products, pixels (cheap to embed), 25% of titles held out."""
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    catalogue = create_catalogue(str(shared_fashion), tmp_path / "fashion", limit=1200, seed=0)
    build_model_index(catalogue, load_model("pixels"))
    train_bridge_for_catalogue(catalogue, "pixels", holdout_fraction=0.25)
    holdout = read_bridge_manifest(catalogue.bridge_dir("pixels"))["holdout"]
    assert holdout["queries"] >= 200
    assert holdout["recall@10"] >= 5 * holdout["chance_recall@10"]
    assert holdout["label_precision@10"] >= 3 * holdout["chance_label_precision"]

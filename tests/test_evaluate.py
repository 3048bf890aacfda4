"""Evaluation: figures checked against an independent brute-force count, determinism, saving,
staleness and the `evaluate --json` row format."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from embeddings.artefacts import legacy_fingerprint
from embeddings.building.model import build_model_index
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError, IndexMissingError
from embeddings.index.store import load_vectors, read_manifest
from embeddings.models import load_model
from embeddings.quality.evaluate import (
    OWN_PRODUCT,
    evaluate_catalogue,
    image_metrics,
    load_results,
    save_results,
)

MODELS = ["pixels", "efficientnet-lite0"]
KS = (1, 5, 10, 20)


def read_items(catalogue: Catalogue) -> dict[str, dict]:
    """items.csv read with the csv module: a code path independent of the package's pandas one."""
    with open(catalogue.directory / "items.csv", newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def brute_force_image(
    catalogue: Catalogue, model_id: str, query_ids: list[str], label: str, k: int
):
    """precision, recall, AP and chance averaged by hand from the full cosine matrix."""
    items = read_items(catalogue)
    ids, vectors = load_vectors(catalogue.model_dir(model_id))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    precisions, recalls, aps, chances = [], [], [], []
    for query in query_ids:
        q = ids.index(query)
        mine = items[query][label]
        others = [j for j in range(len(ids)) if j != q]
        relevant = sum(1 for j in others if items[ids[j]][label] == mine)
        if not mine or relevant == 0:
            continue
        ranked = sorted(others, key=lambda j: -similarity[q, j])[:k]
        hits = [items[ids[j]][label] == mine for j in ranked]
        found, ap = 0, 0.0
        for position, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                ap += found / position
        precisions.append(found / k)
        recalls.append(found / relevant)
        aps.append(ap / min(k, relevant))
        chances.append(relevant / (len(ids) - 1))
    return {
        "precision": np.mean(precisions),
        "recall": np.mean(recalls),
        "map": np.mean(aps),
        "chance": np.mean(chances),
    }


def test_image_figures_match_a_brute_force_count(built_catalogue):
    result = evaluate_catalogue(built_catalogue, MODELS, queries=1000, seed=0)
    assert result.manifest["image_queries"]["sampled"] == len(built_catalogue) == 48
    assert set(built_catalogue.label_fields) == {"folder", "shape"}
    checked = 0
    for model_id in MODELS:
        for label in built_catalogue.label_fields:
            for k in KS:
                expected = brute_force_image(
                    built_catalogue, model_id, built_catalogue.ids, label, k
                )
                for metric, value in expected.items():
                    assert result.value(model_id, "image", label, metric, k) == pytest.approx(
                        value, abs=2e-6
                    ), (model_id, label, metric, k)
                    checked += 1
    assert checked == 2 * 2 * 4 * 4
    # The figures say something: a CNN finds same-shape products far above chance.
    assert result.value("efficientnet-lite0", "image", "shape", "precision", 5) > 2 * result.value(
        "efficientnet-lite0", "image", "shape", "chance", 5
    )


def test_sampled_queries_are_deterministic_and_recorded(built_catalogue):
    first = evaluate_catalogue(built_catalogue, ["pixels"], queries=10, seed=3)
    again = evaluate_catalogue(built_catalogue, ["pixels"], queries=10, seed=3)
    other = evaluate_catalogue(built_catalogue, ["pixels"], queries=10, seed=4)
    sample = first.manifest["image_queries"]
    assert sample["sampled"] == 10 and sample["population"] == 48
    assert first.rows == again.rows and first.score_samples == again.score_samples
    assert sample["ids"] == again.manifest["image_queries"]["ids"]
    assert sample["ids"] != other.manifest["image_queries"]["ids"]
    # The sampled figures are those of exactly the recorded queries.
    expected = brute_force_image(built_catalogue, "pixels", sample["ids"], "folder", 5)
    assert first.value("pixels", "image", "folder", "precision", 5) == pytest.approx(
        expected["precision"], abs=2e-6
    )
    assert len(first.score_samples["pixels"]) == 10 * max(KS)


def test_map_uses_min_k_relevant_normalisation():
    # 2 queries over 6 rows; labels: rows 0-1 are "a" (code 0), rows 2-5 are "b" (code 1).
    codes = np.array([0, 0, 1, 1, 1, 1])
    counts = np.array([2, 4])
    # Query row 0 ("a", one other "a"): its only relevant product comes 2nd.
    # Query row 2 ("b", three others): results b, a, b.
    retrieved = np.array([[3, 1, 4], [3, 0, 4]])
    figures = image_metrics(retrieved, np.array([0, 1]), codes, counts, n_items=6, ks=(1, 3))
    assert figures["precision", 1] == pytest.approx((0 + 1) / 2)
    assert figures["precision", 3] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert figures["recall", 3] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # AP@3: query 0 -> (1/2) / min(3, 1); query 1 -> (1/1 + 2/3) / min(3, 3).
    assert figures["map", 3] == pytest.approx((0.5 + (1 + 2 / 3) / 3) / 2)
    assert figures["chance", 3] == pytest.approx((1 / 5 + 3 / 5) / 2)
    assert figures["queries", 0] == 2


def test_results_are_saved_and_go_stale_when_an_index_is_rebuilt(built_catalogue, copy_catalogue):
    catalogue = copy_catalogue(built_catalogue)
    assert load_results(catalogue) is None
    result = evaluate_catalogue(catalogue, ["pixels"], queries=12, seed=0)
    paths = save_results(catalogue, result)
    assert paths["json"].parent == catalogue.directory / "evaluation"
    summary = paths["markdown"].read_text()
    assert "12 query products sampled of 48" in summary and "`pixels`" in summary
    loaded = load_results(catalogue)
    assert loaded is not None
    assert loaded.rows == result.rows and loaded.manifest == json.loads(json.dumps(result.manifest))
    entry = loaded.manifest["models"]["pixels"]
    assert entry["weights_id"] == "none"
    assert entry["index_fingerprint"]["model_id"] == "pixels"  # the index's identity
    assert len(entry["index_fingerprint"]["manifest_sha256"]) == 64
    # An evaluation saved with the older 16-hex fingerprint still opens while it is current.
    data = json.loads(paths["json"].read_text())
    manifest = read_manifest(catalogue.model_dir("pixels"))
    data["manifest"]["models"]["pixels"]["index_fingerprint"] = legacy_fingerprint(manifest)
    paths["json"].write_text(json.dumps(data))
    assert load_results(catalogue) is not None
    build_model_index(catalogue, load_model("pixels"))  # a rebuild: the figures may no longer hold
    assert load_results(catalogue) is None


def test_evaluate_json_prints_rows(built_catalogue, capsys, copy_catalogue):
    from embeddings.cli import main

    catalogue = copy_catalogue(built_catalogue)
    assert (
        main(
            [
                "evaluate",
                "--catalog",
                str(catalogue.directory),
                "--models",
                "pixels",
                "--queries",
                "20",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows and isinstance(rows, list)
    for row in rows:
        assert set(row) == {"model", "task", "label", "metric", "k", "value"}
        assert row["model"] == "pixels" and row["task"] in ("image", "text")
        assert row["metric"] in ("precision", "recall", "map", "chance")
        assert row["k"] in KS and 0.0 <= row["value"] <= 1.0
    metrics = {(r["label"], r["metric"]) for r in rows}
    assert ("folder", "map") in metrics and ("shape", "chance") in metrics
    assert (catalogue.directory / "evaluation" / "results.json").is_file()


def test_text_figures_match_a_brute_force_count(built_catalogue, copy_catalogue):
    from embeddings.bridge import load_bridge, read_holdout_ids, train_bridge_for_catalogue

    catalogue = copy_catalogue(built_catalogue)
    assert (
        train_bridge_for_catalogue(catalogue, "efficientnet-lite0", holdout_fraction=0.3)
        is not None
    )
    result = evaluate_catalogue(catalogue, MODELS, queries=1000, seed=0)
    assert result.manifest["models"]["efficientnet-lite0"]["text"] == "bridge"
    assert "pixels" in result.manifest["skipped_text"]  # no bridge: image figures only
    query_ids = result.manifest["text_queries"]["ids"]
    held_out = set(read_holdout_ids(catalogue.bridge_dir("efficientnet-lite0")))
    assert query_ids and set(query_ids) <= held_out  # never a title the bridge was trained on

    # Brute force: titles encoded live (not through the title cache), full cosine matrix.
    items = read_items(catalogue)
    bridge = load_bridge(
        catalogue.bridge_dir("efficientnet-lite0"),
        catalogue=catalogue,
        model_id="efficientnet-lite0",
    )
    queries = bridge.encode_texts([items[i]["title"] for i in query_ids])
    ids, vectors = load_vectors(catalogue.model_dir("efficientnet-lite0"))
    similarity = queries @ vectors.T
    for k in KS:
        ranked = [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in similarity]
        recall = np.mean([q in top for q, top in zip(query_ids, ranked, strict=True)])
        assert result.value(
            "efficientnet-lite0", "text", OWN_PRODUCT, "recall", k
        ) == pytest.approx(recall, abs=2e-6)
        assert result.value(
            "efficientnet-lite0", "text", OWN_PRODUCT, "chance", k
        ) == pytest.approx(k / 48, abs=2e-6)
        for label in ("folder", "shape"):
            precision = np.mean(
                [
                    sum(items[j][label] == items[q][label] for j in top) / k
                    for q, top in zip(query_ids, ranked, strict=True)
                ]
            )
            assert result.value(
                "efficientnet-lite0", "text", label, "precision", k
            ) == pytest.approx(precision, abs=2e-6), (label, k)
    assert result.value("pixels", "text", OWN_PRODUCT, "recall", 1) is None


def test_bad_requests_say_what_to_do(built_catalogue):
    with pytest.raises(IndexMissingError, match="clip"):
        evaluate_catalogue(built_catalogue, ["clip"])
    with pytest.raises(EmbeddingsError, match="at least 1"):
        evaluate_catalogue(built_catalogue, ["pixels"], queries=0)
    with pytest.raises(EmbeddingsError, match="ks"):
        evaluate_catalogue(built_catalogue, ["pixels"], ks=(0, 5))


@pytest.mark.slow
def test_native_text_tower_is_evaluated_on_all_titles(built_catalogue, tmp_path, copy_catalogue):
    """A model with its own text tower (a tiny random CLIP): text figures, marked native."""
    from tests.harness.tiny_models import make_tiny_clip

    catalogue = copy_catalogue(built_catalogue)
    clip = load_model("clip", weights=make_tiny_clip(tmp_path / "clip"))
    build_model_index(catalogue, clip)
    result = evaluate_catalogue(
        catalogue, ["clip", "pixels"], queries=1000, seed=0, load_embedder=lambda model_id: clip
    )
    assert result.manifest["models"]["clip"]["text"] == "native"
    assert result.manifest["text_queries"]["pool"] == "all titled products"
    query_ids = result.manifest["text_queries"]["ids"]
    assert len(query_ids) == 48
    items = read_items(catalogue)
    ids, vectors = load_vectors(catalogue.model_dir("clip"))
    similarity = clip.encode_texts([items[i]["title"] for i in query_ids]) @ vectors.T
    ranked = [[ids[j] for j in np.argsort(-row, kind="stable")[:5]] for row in similarity]
    recall = np.mean([q in top for q, top in zip(query_ids, ranked, strict=True)])
    assert result.value("clip", "text", OWN_PRODUCT, "recall", 5) == pytest.approx(recall, abs=2e-6)
    assert result.text_score_samples["clip"] and "pixels" not in result.text_score_samples

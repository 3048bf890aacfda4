"""The command line: build, search --json, a model that cannot load, listing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from embeddings.cli import main
from embeddings.index.store import load_vectors
from tests.harness.cli import cli


def test_build_then_search_json_matches_cosine_similarity(product_folder, tmp_path):
    out = tmp_path / "cat"
    built = cli(
        "build",
        "--source",
        str(product_folder),
        "--out",
        str(out),
        "--models",
        "pixels",
        "--no-bridge",
    )
    assert built.returncode == 0, built.stderr
    assert "48 products" in built.stdout and "[pixels] 48 vectors x 14400 (flat)" in built.stdout
    found = cli(
        "search",
        "--catalog",
        str(out),
        "--model",
        "pixels",
        "--item",
        "green/square_1",
        "-k",
        "5",
        "--json",
    )
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert [set(r) for r in rows] == [{"id", "score"}] * 5
    ids, vectors = load_vectors(out / "models" / "pixels")
    scores = cosine_similarity(vectors[ids.index("green/square_1")][None], vectors)[0]
    order = [ids[i] for i in np.argsort(-scores) if ids[i] != "green/square_1"][:5]
    assert [r["id"] for r in rows] == order
    np.testing.assert_allclose([r["score"] for r in rows], np.sort(scores)[::-1][1:6], atol=1e-4)


@pytest.mark.slow
def test_model_that_cannot_load_fails_alone(product_folder, tmp_path):
    out = tmp_path / "cat"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "EMBEDDINGS_CLIP_MODEL": ""}
    result = cli(
        "build",
        "--source",
        str(product_folder),
        "--out",
        str(out),
        "--models",
        "clip,pixels",
        "--no-bridge",
        env=env,
    )
    assert result.returncode == 1
    assert "[clip] build failed: model 'clip' could not load" in result.stderr
    assert "looked in the Hugging Face cache" in result.stderr
    assert "failed: clip" in result.stderr
    assert (out / "models" / "pixels" / "manifest.json").is_file()
    assert not (out / "models" / "clip").exists()


@pytest.mark.slow
def test_tiny_clip_builds_and_answers_text(product_folder, tmp_path):
    from tests.harness.tiny_models import make_tiny_clip

    weights = make_tiny_clip(tmp_path / "clip")
    out = tmp_path / "cat"
    built = cli(
        "build",
        "--source",
        str(product_folder),
        "--out",
        str(out),
        "--models",
        "clip",
        "--weights",
        f"clip={weights}",
    )
    assert built.returncode == 0, built.stderr
    found = cli(
        "search",
        "--catalog",
        str(out),
        "--model",
        "clip",
        "--text",
        "red circle",
        "-k",
        "3",
        "--json",
        "--weights",
        f"clip={weights}",
    )
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3


def test_usage_errors_are_clear(capsys, tmp_path, built_catalogue):
    assert main(["search", "--catalog", str(tmp_path), "--model", "pixels", "--item", "x"]) == 2
    assert "is not a catalogue" in capsys.readouterr().err
    assert main(["build", "--source", str(tmp_path), "--models", "vgg"]) == 2
    assert "unknown model 'vgg'" in capsys.readouterr().err
    assert (
        main(
            [
                "search",
                "--catalog",
                str(built_catalogue.directory),
                "--model",
                "pixels",
                "--item",
                "no/such",
                "-k",
                "3",
            ]
        )
        == 2
    )
    assert "no product with id 'no/such'" in capsys.readouterr().err
    assert (
        main(
            [
                "search",
                "--catalog",
                str(built_catalogue.directory),
                "--model",
                "pixels",
                "--image",
                str(tmp_path / "absent.jpg"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--source", str(tmp_path), "--models", ","])


def test_listing(capsys, built_catalogue, monkeypatch):
    assert main(["models"]) == 0
    assert "efficientnet-lite0" in capsys.readouterr().out
    monkeypatch.setenv("EMBEDDINGS_DATA", str(built_catalogue.directory.parent))
    assert main(["catalogues"]) == 0
    assert "efficientnet-lite0, pixels" in capsys.readouterr().out

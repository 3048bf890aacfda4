"""The seed models' own checkpoints, read as their publishers wrote them and never with pickled
code run: bolts' SimCLR file (a PyTorch Lightning 1.0/1.1 checkpoint), torchvision's ResNet-50
download, and CLIP's text length."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embeddings.errors import ModelLoadError
from embeddings.models import load_model
from tests.harness.cli import cli
from tests.harness.tiny_models import (
    lightning_classes,
    make_bolts_simclr_checkpoint,
    make_resnet50_state_dict,
    make_tiny_clip,
)

IMAGES = [Image.new("RGB", (60, 80), c) for c in ("red", "navy")]


class Gadget:
    """Pickles as a call to a function: what `weights_only=True` must refuse to run."""

    def __reduce__(self):
        return (os.getpid, ())


@pytest.fixture(scope="module")
def bolts_file(tmp_path_factory) -> Path:
    return make_bolts_simclr_checkpoint(tmp_path_factory.mktemp("simclr") / "simclr.ckpt")


def spy_on_torch_load(monkeypatch) -> list[dict]:
    """Record the keyword arguments of every `torch.load` call."""
    calls, real = [], torch.load

    def load(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return calls


def test_the_fake_checkpoint_is_laid_out_like_bolts_file(bolts_file):
    """What makes the real file hard: Lightning's classes pickled by name."""
    raw = bolts_file.read_bytes()
    assert b"pytorch_lightning.callbacks.model_checkpoint" in raw
    assert b"ModelCheckpoint" in raw and b"AttributeDict" in raw
    with pytest.raises(Exception, match="ModelCheckpoint"):
        torch.load(bolts_file, weights_only=True)  # refused by torch without the stand-ins


def test_simclr_loads_a_lightning_checkpoint_with_weights_only(bolts_file, monkeypatch):
    from torchvision.models import resnet50

    calls = spy_on_torch_load(monkeypatch)
    model = load_model("simclr", weights=bolts_file, runtime="torch")
    assert calls and all(call.get("weights_only") is True for call in calls)
    # The backbone is the checkpoint's `encoder.` weights (the head and evaluator dropped).
    reference = resnet50(weights=None)
    reference.fc = torch.nn.Identity()
    torch.manual_seed(0)  # the file's backbone: a seed-0 torchvision resnet50
    backbone = resnet50(weights=None).state_dict()
    reference.load_state_dict({k: v for k, v in backbone.items() if not k.startswith("fc.")})
    reference.eval()
    prepared = torch.from_numpy(np.stack([model.prepare(IMAGES[0])]))
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference(prepared), dim=1).numpy()
    np.testing.assert_allclose(model.encode_images(IMAGES[:1]), expected, atol=1e-4)


def test_simclr_cli_build_with_a_lightning_checkpoint(bolts_file, product_folder, tmp_path):
    done = cli(
        "build",
        "--source",
        str(product_folder),
        "--out",
        str(tmp_path / "cat"),
        "--models",
        "simclr",
        "--no-bridge",
        "--weights",
        f"simclr={bolts_file}",
        env={"EMBEDDINGS_RUNTIME": "torch"},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cat" / "models" / "simclr" / "manifest.json").is_file()


def test_a_lightning_checkpoint_naming_another_class_is_refused_by_name(tmp_path):
    """Only the inert stand-ins are allowed: any other class in the file is refused, and the
    message keeps torch's reason with the class's name."""
    path = tmp_path / "evil.ckpt"
    with lightning_classes() as classes:
        torch.save({"state_dict": {}, "callbacks": {classes["ModelCheckpoint"]: Gadget()}}, path)
    with pytest.raises(ModelLoadError, match=r"could not read .* as safe weights.*posix\.getpid"):
        load_model("simclr", weights=path, runtime="torch")


def test_a_refused_class_is_named_in_the_message(bolts_file):
    """ResNet-50 takes plain state dicts: the Lightning file is refused, naming the class
    (torch words this refusal with newline-tab lines, not blank-line paragraphs)."""
    with pytest.raises(ModelLoadError) as caught:
        load_model("resnet50", weights=bolts_file, runtime="torch")
    message = str(caught.value)
    assert "as safe weights" in message
    assert "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in message
    assert "weights_only` set to `False" not in message and "\x1b" not in message


# -- ResNet-50's default weights ----------------------------------------------------------------
@pytest.fixture(scope="module")
def r50_file(tmp_path_factory) -> Path:
    return make_resnet50_state_dict(tmp_path_factory.mktemp("r50") / "r50.pth", seed=3)


def test_resnet50_default_weights_are_read_with_weights_only(r50_file, tmp_path, monkeypatch):
    from embeddings.models.torchvision_cnn import RESNET50_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(RESNET50_URL).name
    cached.parent.mkdir(parents=True)
    shutil.copy(r50_file, cached)
    calls = spy_on_torch_load(monkeypatch)
    model = load_model("resnet50", runtime="torch")
    assert model.weights_id == "torchvision/resnet50/IMAGENET1K_V2"
    assert calls and all(call.get("weights_only") is True for call in calls), calls


def test_resnet50_default_file_with_pickled_code_is_refused(tmp_path, monkeypatch):
    from embeddings.models.torchvision_cnn import RESNET50_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(RESNET50_URL).name
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": Gadget()}, cached)
    with pytest.raises(ModelLoadError, match=r"^model 'resnet50' could not read .* safe weights"):
        load_model("resnet50", runtime="torch")


def test_resnet50_url_is_torchvisions():
    from torchvision.models import ResNet50_Weights

    from embeddings.models.torchvision_cnn import RESNET50_URL

    assert ResNet50_Weights.IMAGENET1K_V2.url == RESNET50_URL


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on 127.0.0.1 serving `tmp_path / "served"`."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(served), **k
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_download_is_hash_checked_then_read_with_weights_only(http_folder, tmp_path, monkeypatch):
    from embeddings.models.torch_common import read_state_dict
    from embeddings.models.torchvision_cnn import download_checkpoint

    served, base = http_folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tiny = served / "tiny.pth"
    torch.save({"layer.weight": torch.arange(6.0).reshape(2, 3)}, tiny)
    prefix = hashlib.sha256(tiny.read_bytes()).hexdigest()[:8]
    good = served / f"tiny-{prefix}.pth"
    tiny.rename(good)
    path = download_checkpoint(f"{base}/{good.name}", "resnet50")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / good.name
    calls = spy_on_torch_load(monkeypatch)
    state = read_state_dict(path, "resnet50")
    assert calls == [{"map_location": "cpu", "weights_only": True}]
    np.testing.assert_array_equal(state["layer.weight"].numpy(), np.arange(6.0).reshape(2, 3))
    # A file whose bytes do not match the hash in its name is refused, and not kept.
    shutil.copy(good, served / "tiny-00000000.pth")
    with pytest.raises(ModelLoadError, match=r"model 'resnet50' could not load its weights"):
        download_checkpoint(f"{base}/tiny-00000000.pth", "resnet50")
    assert not (path.parent / "tiny-00000000.pth").exists()


# -- CLIP's text length -------------------------------------------------------------------------
def test_clip_text_length_is_capped_at_the_text_towers_positions(tmp_path):
    folder = make_tiny_clip(tmp_path / "clip", model_max_length=None)
    model = load_model("clip", weights=folder, runtime="torch")
    assert model.model[0].max_seq_length == 77
    long_text = " ".join(["navy"] * 200)  # far more than 77 tokens
    vectors = model.encode_texts([long_text, "red"])
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()

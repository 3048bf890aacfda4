"""ONNX Runtime for inference: every neural encoder's ONNX vectors equal torch's on
the same inputs, pinned values, the export cache (made once, remade when stale, edited or
partial), and the refusal when there is neither an export nor torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.config import MODELS_ENV
from embeddings.errors import ModelLoadError
from embeddings.models import load_model
from tests.harness.paths import REPO, SHARED_FASHION
from tests.harness.products import draw_product
from tests.harness.tiny_models import (
    make_bolts_simclr_checkpoint,
    make_resnet50_state_dict,
    make_tiny_clip,
)

MIN_COSINE = 0.9999
TEXTS = [
    "Red running shoes",
    "Navy Blue Slim-Fit Jeans for MEN",
    "Ünïcödé façade — 東京 スニーカー",
    "x",
    " ".join(["a very long product title with many words"] * 40),  # truncated at max length
]


def probe_images() -> list[Image.Image]:
    """Real catalogue photos when the shared set is here, synthetic products, odd shapes."""
    images = [draw_product(c, s, 0) for c, s in (("red", "circle"), ("blue", "triangle"))]
    if (SHARED_FASHION / "images").is_dir():
        for name in ("15970.jpg", "39386.jpg", "59263.jpg", "21379.jpg"):
            path = SHARED_FASHION / "images" / name
            if path.is_file():
                images.append(Image.open(path).convert("RGB"))
    rng = np.random.default_rng(7)
    for size in ((30, 200), (300, 40), (5, 7), (640, 480)):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def smallest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == np.float32 == b.dtype
    return float((a * b).sum(axis=1).min())


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, dict]:
    """load_model options of every model: the real efficientnet-lite0, tiny random others."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        "efficientnet-lite0": {},
        "resnet50": {"weights": make_resnet50_state_dict(folder / "r50.pth", seed=1)},
        "simclr": {"weights": make_bolts_simclr_checkpoint(folder / "simclr.ckpt", seed=2)},
        "clip": {"weights": make_tiny_clip(folder / "clip", seed=3)},
    }


# -- ONNX equals torch --------------------------------------------------------------------------
#: ResNet-50 exports take about 20 s each on 2 busy cores, the tiny CLIP's about 15 s: those
#: cases (and the other CLIP tests) are marked slow, outside the fast lane.
MODELS = [
    "efficientnet-lite0",
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("simclr", marks=pytest.mark.slow),
    pytest.param("clip", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("model_id", MODELS)
def test_onnx_image_vectors_equal_torch(model_id, weights):
    onnx = load_model(model_id, **weights[model_id])
    torch_model = load_model(model_id, runtime="torch", **weights[model_id])
    assert (onnx.runtime, torch_model.runtime) == ("onnx", "torch")
    assert onnx.weights_id == torch_model.weights_id and onnx.dim == torch_model.dim
    images = probe_images()
    vectors = onnx.encode_images(images)
    assert smallest_cosine(vectors, torch_model.encode_images(images)) >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # One at a time gives the batch's vectors (the build relies on it).
    np.testing.assert_allclose(onnx.encode_images(images[:1])[0], vectors[0], atol=1e-5)


@pytest.mark.slow
def test_onnx_clip_text_vectors_equal_torch(weights):
    onnx = load_model("clip", **weights["clip"])
    torch_model = load_model("clip", runtime="torch", **weights["clip"])
    vectors = onnx.encode_texts(TEXTS)
    assert smallest_cosine(vectors, torch_model.encode_texts(TEXTS)) >= MIN_COSINE
    assert len({tuple(np.round(v, 4)) for v in vectors}) == len(TEXTS)  # texts differ
    np.testing.assert_allclose(onnx.encode_texts(TEXTS[:1])[0], vectors[0], atol=1e-5)


def test_onnx_sentence_encoder_equals_torch():
    from embeddings.bridge.sentences import TEXT_DIM, encode_sentences, sentence_encoder

    onnx, torch_model = sentence_encoder(), sentence_encoder("torch")
    assert type(onnx).__name__ == "OnnxTextTower"
    vectors = onnx.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), TEXT_DIM)
    assert smallest_cosine(vectors, torch_model.encode(TEXTS)) >= MIN_COSINE
    # encode_sentences (shortest first, in batches) puts every row back in its place.
    np.testing.assert_allclose(encode_sentences(TEXTS, batch_size=2), vectors, atol=1e-5)


@pytest.mark.slow
def test_tokenizer_files_give_transformers_token_ids(weights):
    """The `tokenizers` library on the exported tokenizer.json gives the very ids transformers
    gives (truncated at the same length), for CLIP and for MiniLM."""
    from embeddings.bridge.sentences import _sentence_transformer, sentence_encoder

    clip = load_model("clip", **weights["clip"])
    torch_clip = load_model("clip", runtime="torch", **weights["clip"])
    pairs = [
        (clip.text_tower, torch_clip.model[0].tokenizer),
        (sentence_encoder(), _sentence_transformer()[0].tokenizer),
    ]
    for tower, reference in pairs:
        ours = tower.tokenizer().encode_batch(TEXTS)
        theirs = reference(TEXTS, padding=True, truncation=True)["input_ids"]
        assert [e.ids for e in ours] == theirs
        assert len(ours[-1].ids) == tower.settings["max_length"]  # the long text was truncated


@pytest.mark.slow
def test_clip_preprocessing_matches_the_image_processor(weights):
    """PIL's bicubic resize and the centre crop give the pixels CLIPProcessor gives (within a
    grey level or two of its torchvision resize)."""
    clip = load_model("clip", **weights["clip"])
    processor = load_model("clip", runtime="torch", **weights["clip"]).model[0].processor
    images = probe_images()
    ours = np.stack([clip.prepare(image) for image in images])
    theirs = processor.image_processor(images=images, return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape
    std = np.asarray(processor.image_processor.image_std, dtype=np.float32).reshape(1, 3, 1, 1)
    grey_levels = np.abs(ours - theirs) * std * 255
    assert grey_levels.max() <= 3 and (grey_levels > 1.01).mean() < 0.01


def test_the_cnn_recipe_looks_bytes_up_exactly_as_the_formula_computes_them():
    """`pad_square` reads each byte's normalised value from a table: the same float32 values as
    (pixels / 255 - mean) / std over the padded, resized image, for any mean and std."""
    from embeddings.models.preprocess import _channels, fit_square, pad_square

    rng = np.random.default_rng(0)
    images = [
        *probe_images(),
        Image.fromarray(rng.integers(0, 256, size=(80, 60, 3), dtype=np.uint8)),
    ]
    for mean, std in (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)):
        mean, std = _channels(mean), _channels(std)
        for image in images:
            pixels = np.asarray(fit_square(image, 224), dtype=np.float32) / 255.0
            want = (pixels.transpose(2, 0, 1) - mean) / std
            got = pad_square(image, size=224, mean=mean, std=std)
            assert got.dtype == np.float32 and got.shape == (3, 224, 224)
            assert np.array_equal(got, want)


# -- pinned values (so a change of preprocessing or export shows) --------------------------------
#: model -> (dimensions, their values) for `draw_product("red", "square", 1)`; the tiny models'
#: weights are the seeded ones of the `weights` fixture. Same values on torch (checked above).
PINNED = {
    "efficientnet-lite0": ([2, 3, 7, 15, 22], [0.05854, 0.02863, 0.04768, 0.0243, 0.00651]),
    "resnet50": ([0, 1, 2, 3, 4], [0.0001, 0.02308, 0.0051, 0.00649, 0.00004]),
    "simclr": ([0, 1, 2, 3, 4], [0.04129, 0.01801, 0.00928, 0.00143, 0.00707]),
    "clip": ([0, 1, 2, 3, 4], [-0.00599, 0.21816, 0.01472, -0.0569, -0.25891]),
}
#: "a red dress", first five dimensions.
PINNED_TEXT = {
    "clip": [-0.21997, 0.12275, 0.2149, -0.05274, -0.14261],
    "minilm": [-0.02999, 0.00673, -0.03815, 0.07105, -0.05044],
}


@pytest.mark.parametrize("model_id", MODELS)
def test_pinned_image_vector_values(model_id, weights):
    model = load_model(model_id, **weights[model_id])
    vector = model.encode_images([draw_product("red", "square", 1)])[0]
    dims, values = PINNED[model_id]
    np.testing.assert_allclose(vector[dims], values, atol=2e-5)


@pytest.mark.slow
def test_pinned_text_vector_values(weights):
    from embeddings.bridge.sentences import sentence_encoder

    clip = load_model("clip", **weights["clip"]).encode_texts(["a red dress"])
    np.testing.assert_allclose(clip[0, :5], PINNED_TEXT["clip"], atol=2e-5)
    minilm = sentence_encoder().encode(["a red dress"])
    np.testing.assert_allclose(minilm[0, :5], PINNED_TEXT["minilm"], atol=2e-5)


# -- the export cache ---------------------------------------------------------------------------
@pytest.fixture
def models_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "onnx"
    monkeypatch.setenv(MODELS_ENV, str(home))
    return home


class FakeExporter:
    """A `make` for `ensure_export` that writes small files instead of exporting a network, so
    the cache's rules are tested in milliseconds; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, folder: Path) -> dict:
        self.calls += 1
        (folder / "image.onnx").write_bytes(bytes(range(256)) * 64)
        (folder / "tokenizer.json").write_text('{"model": "fake"}')
        (folder / "preprocess.json").write_text(json.dumps({"image": {"kind": "pad_square"}}))
        return {"kind": "image", "dim": 8, "drift": {"image": {"min_cosine": 1.0}}}


def damage(folder: Path, how: str) -> str:
    """Damage an export folder; returns the words the refusal must contain."""
    if how == "edited":
        data = bytearray((folder / "image.onnx").read_bytes())
        data[100] ^= 0xFF
        (folder / "image.onnx").write_bytes(bytes(data))
        return "does not match the hash its manifest records"
    if how == "truncated":
        data = (folder / "image.onnx").read_bytes()
        (folder / "image.onnx").write_bytes(data[: len(data) // 2])
        return "another size than its manifest records"
    if how == "missing-file":
        (folder / "tokenizer.json").unlink()
        return "lacks tokenizer.json"
    if how == "no-manifest":
        (folder / "manifest.json").unlink()
        return "no ONNX export in"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights_id"] = "sha256:0000000000000000"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return "has weights_id 'sha256:0000000000000000', not 'sha256:1111111111111111'"


def test_an_export_is_made_once_per_weights_id(models_home):
    from embeddings.models.onnx_loader import ensure_export

    make, said = FakeExporter(), []
    first = ensure_export("m", "sha256:1111111111111111", make, messages=said.append)
    assert first.folder == models_home / "m" / "sha256-1111111111111111"
    assert make.calls == 1 and len(said) == 2 and "exporting m to ONNX" in said[0]
    manifest = first.manifest
    assert manifest["format"] == 1 and manifest["weights_id"] == "sha256:1111111111111111"
    assert set(manifest["files"]) == {"image.onnx", "tokenizer.json", "preprocess.json"}
    assert set(manifest["versions"]) == {"torch", "onnx", "onnxruntime"}
    again = ensure_export("m", "sha256:1111111111111111", make, messages=said.append)
    assert make.calls == 1 and len(said) == 2 and again.manifest == manifest
    other = ensure_export("m", "torchvision/resnet50/IMAGENET1K_V2", make, messages=said.append)
    assert make.calls == 2 and other.folder.name.startswith("torchvision_resnet50_IMAGENET1K_V2-")
    assert first.folder.is_dir()  # each weights id keeps its own export


@pytest.mark.parametrize(
    "how", ["edited", "truncated", "missing-file", "no-manifest", "other-weights"]
)
def test_a_damaged_partial_or_stale_export_is_refused_then_remade(how, models_home):
    from embeddings.models.onnx_cache import StaleExport, open_export
    from embeddings.models.onnx_loader import ensure_export

    make, said = FakeExporter(), []
    folder = ensure_export("m", "sha256:1111111111111111", make).folder
    reason = damage(folder, how)
    with pytest.raises(StaleExport, match=re.escape(reason)):
        open_export(folder, "m", "sha256:1111111111111111")
    remade = ensure_export("m", "sha256:1111111111111111", make, messages=said.append)
    assert make.calls == 2 and reason in said[0]
    assert open_export(folder, "m", "sha256:1111111111111111").manifest == remade.manifest
    assert not list(models_home.glob("m/.*.new-*"))  # no staging folder left behind


@pytest.mark.slow
def test_an_edited_real_export_is_remade_with_the_same_vectors(weights):
    """The tiny CLIP's export (both towers): loading again makes no export; an edited graph
    is found out and exported again, giving the same vectors as before."""
    said: list[str] = []
    model = load_model("clip", **weights["clip"])  # exported here unless an earlier test did
    again = load_model("clip", messages=said.append, **weights["clip"])
    assert said == [] and again.export.folder == model.export.folder
    image = [draw_product("yellow", "triangle", 0)]
    expected_image, expected_text = model.encode_images(image), model.encode_texts(["red shoes"])
    reason = damage(model.export.folder, "edited")
    remade = load_model("clip", messages=said.append, **weights["clip"])
    assert len(said) == 2 and reason in said[0], said
    np.testing.assert_allclose(remade.encode_images(image), expected_image, atol=1e-6)
    np.testing.assert_allclose(remade.encode_texts(["red shoes"]), expected_text, atol=1e-6)


@pytest.mark.slow
def test_an_export_that_drifts_from_torch_is_refused_and_not_kept(
    models_home, weights, monkeypatch
):
    from embeddings.models import export

    real = export._exported_outputs
    monkeypatch.setattr(export, "_exported_outputs", lambda *a: real(*a) + 0.05)
    with pytest.raises(ModelLoadError, match="drifts from torch.*smallest cosine"):
        load_model("clip", **weights["clip"])
    left = [p.name for p in (models_home / "clip").iterdir()]
    assert [name for name in left if not name.endswith(".lock")] == []  # nothing kept


def run_without_torch(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where `import torch` fails, as where it is not installed."""
    script = "import sys\nsys.modules['torch'] = None  # import torch -> ImportError\n" + code
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_torch_a_missing_export_is_refused_and_a_present_one_serves(tmp_path):
    load_model("efficientnet-lite0")  # this session's export, made here with torch if needed
    code = textwrap.dedent("""
        import json, sys
        from PIL import Image
        from embeddings.errors import ModelLoadError
        from embeddings.models import load_model
        try:
            model = load_model("efficientnet-lite0")
        except ModelLoadError as exc:
            print(json.dumps({"error": str(exc)})); sys.exit()
        vector = model.encode_images([Image.new("RGB", (60, 80), (200, 20, 20))])
        print(json.dumps({"dim": vector.shape[1], "runtime": model.runtime}))
    """)
    empty = run_without_torch(code, {MODELS_ENV: str(tmp_path / "empty")})
    assert empty.returncode == 0, empty.stderr[-2000:]
    error = json.loads(empty.stdout.strip().splitlines()[-1])["error"]
    assert "model 'efficientnet-lite0' needs its ONNX export (no ONNX export in" in error
    assert "torch, which makes it, is not installed here" in error
    assert "python -m embeddings export --models efficientnet-lite0" in error
    assert not (tmp_path / "empty").exists()  # refused before anything was written
    # The session's export (made with torch by the other tests) serves without torch.
    served = run_without_torch(code, {})
    assert served.returncode == 0, served.stderr[-2000:]
    assert json.loads(served.stdout.strip().splitlines()[-1]) == {"dim": 1280, "runtime": "onnx"}


def test_an_unknown_runtime_is_refused(monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_RUNTIME", "tensorflow")
    with pytest.raises(ModelLoadError, match="unknown runtime 'tensorflow'.*onnx, torch"):
        load_model("efficientnet-lite0")
    assert load_model("pixels").runtime == "numpy"  # pixels has no runtime to choose


# -- indexes built before stay valid ------------------------------------------------------------
@pytest.mark.slow
def test_an_index_built_on_torch_serves_and_grows_on_onnx_with_no_rebuild(
    product_folder, tmp_path, monkeypatch
):
    """What a catalogue built before ONNX Runtime meets: its index (made by torch) is up to
    date as it is; products added later are embedded on ONNX and the torch vectors are kept;
    an upload embedded on ONNX finds its own product's torch vector at cosine 1."""
    import shutil

    from embeddings.building.catalogue import BuildRequest, build_catalogue
    from embeddings.index.store import read_manifest
    from embeddings.search.searcher import make_searcher

    source = tmp_path / "products"
    shutil.copytree(product_folder, source)
    request = BuildRequest(
        out=tmp_path / "cat", source=str(source), models=["efficientnet-lite0"], bridges=False
    )
    monkeypatch.setenv("EMBEDDINGS_RUNTIME", "torch")
    built = build_catalogue(request)
    assert built.outcomes[0].report.embedded == 48
    before = read_manifest(built.catalogue.model_dir("efficientnet-lite0"))
    monkeypatch.delenv("EMBEDDINGS_RUNTIME")
    again = build_catalogue(BuildRequest(out=tmp_path / "cat"))
    assert [(o.model_id, o.status) for o in again.outcomes] == [("efficientnet-lite0", "reused")]
    draw_product("blue", "circle", 99).save(source / "blue" / "circle_99.png")
    grown = build_catalogue(BuildRequest(out=tmp_path / "cat"))
    report = grown.outcomes[0].report
    assert (report.embedded, report.reused, report.count) == (1, 48, 49)
    after = read_manifest(grown.catalogue.model_dir("efficientnet-lite0"))
    assert after["weights_id"] == before["weights_id"]
    assert (before["runtime"], after["runtime"]) == ("torch", "onnx")
    searcher = make_searcher(grown.catalogue)
    for item in ("red/square_2", "blue/circle_99"):  # a torch vector, the new ONNX one
        image = Image.open(grown.catalogue.image_path(item))
        top = searcher.search_image(image, ["efficientnet-lite0"], 3)["efficientnet-lite0"][0]
        assert top.id == item and top.score > 0.9999

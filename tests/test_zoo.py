"""The open model zoo: any model named by its family (hf:, open_clip:, timm:) builds, answers
item, upload and (text towers) text queries, and its ONNX export ranks as torch does, from tiny
random models each saved in its library's own layout (tests/zoo_models.py); the image recipe
and the served tokenizer match the library's own; ids, folders, weights ids and failures."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from embeddings.building.catalogue import BuildRequest, build_catalogue
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.errors import EmbeddingsError
from embeddings.index.opening import built_models
from embeddings.models import expected_weights_id, get_spec, list_models, load_model
from embeddings.models.naming import folder_name
from embeddings.search.searcher import make_searcher, text_capable_models
from tests.harness.paths import REPO, SHARED_FASHION
from tests.harness.products import draw_product, make_product_folder
from tests.harness.zoo_models import cached_zoo

ZOO = cached_zoo()
FAMILY_IDS = list(ZOO)
TEXT_IDS = [m for m in FAMILY_IDS if m.rsplit("/", 1)[-1] in ("clip", "siglip", "open_clip")]
SHORT = {m: m.rsplit("/", 1)[-1] for m in FAMILY_IDS}
TEXTS = [
    "Red running shoes",
    "navy blue SLIM-FIT jeans, five pockets!",
    "Ünïcödé façade — 東京 スニーカー",
    "women's t-shirt (white)",
    " ".join(["a very long product title with many words"] * 30),
]
SAMPLE = 60
NOISE_IMAGES = 3  # the last images of `real_photos`


def real_photos(count: int = 8) -> list[Image.Image]:
    """Product photos of the shared fashion set (else synthetic products) and odd shapes."""
    folder = SHARED_FASHION / "images"
    paths = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    images = [Image.open(p).convert("RGB") for p in paths]
    images += [draw_product(c, s, 1) for c, s in (("red", "circle"), ("blue", "triangle"))]
    rng = np.random.default_rng(3)
    for size in ((30, 200), (301, 47), (7, 5)):  # NOISE_IMAGES of them
        images.append(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)))
    return images


@pytest.fixture(scope="module")
def zoo_catalogue(tmp_path_factory):
    """One catalogue with every family's tiny model built (text bridges for image-only ones)."""
    root = tmp_path_factory.mktemp("zoo")
    if (SHARED_FASHION / "styles.csv").is_file():
        source = str(SHARED_FASHION)
        catalogue = create_catalogue(source, root / "fashion", limit=SAMPLE, seed=4)
    else:
        source = str(make_product_folder(root / "shop"))
        catalogue = create_catalogue(source, root / "shop")
    built = build_catalogue(BuildRequest(out=catalogue.directory, models=FAMILY_IDS))
    return Catalogue.open(catalogue.directory), built


@pytest.mark.parametrize("model_id", FAMILY_IDS, ids=SHORT.get)
def test_every_family_builds_and_answers_item_upload_and_text(model_id, zoo_catalogue):
    catalogue, built = zoo_catalogue
    outcome = next(o for o in built.outcomes if o.model_id == model_id)
    assert outcome.status == "built", outcome.message
    assert model_id in built_models(catalogue)
    assert (catalogue.directory / "models" / folder_name(model_id)).is_dir()
    searcher = make_searcher(catalogue)
    item = catalogue.ids[5]
    hits = searcher.search_item(item, [model_id], 10)[model_id]
    assert len(hits) == 10 and item not in [h.id for h in hits]
    product = catalogue.ids[17]
    upload = Image.open(catalogue.image_path(product)).convert("RGB")
    top = searcher.search_image(upload, [model_id], 5)[model_id][0]
    assert top.id == product and top.score > 0.99, top
    kind = text_capable_models(catalogue).get(model_id)
    assert kind == ("native" if model_id in TEXT_IDS else "bridge")
    answers = searcher.search_text("red shirt", [model_id], 10)[model_id]
    assert len(answers) == 10 and all(-1.0 <= h.score <= 1.0 for h in answers)


@pytest.mark.parametrize("model_id", FAMILY_IDS, ids=SHORT.get)
def test_onnx_ranks_as_torch_does(model_id, zoo_catalogue):
    """The ONNX index's top 10 for products' own photos are torch's top 10 (vectors from the
    library's own preprocessing and model), and the vectors agree to cosine 0.999."""
    catalogue, _ = zoo_catalogue
    onnx = load_model(model_id)
    reference = load_model(model_id, runtime="torch")
    assert (onnx.runtime, reference.runtime) == ("onnx", "torch")
    assert onnx.weights_id == reference.weights_id == expected_weights_id(model_id)
    assert onnx.weights_id.startswith("sha256:") and onnx.dim == reference.dim
    images = [Image.open(catalogue.image_path(i)).convert("RGB") for i in catalogue.ids]
    ours, theirs = onnx.encode_images(images), reference.encode_images(images)
    assert float((ours * theirs).sum(axis=1).min()) >= 0.999
    for row in range(0, len(images), 7):
        top_ours = np.argsort(-(ours @ ours[row]))[:10]
        top_theirs = np.argsort(-(theirs @ theirs[row]))[:10]
        assert top_ours[0] == top_theirs[0] == row
        assert len(set(top_ours) & set(top_theirs)) >= 9
    if model_id in TEXT_IDS:
        cosines = (onnx.encode_texts(TEXTS) * reference.encode_texts(TEXTS)).sum(axis=1)
        assert float(cosines.min()) >= 0.9999


@pytest.mark.parametrize("model_id", FAMILY_IDS, ids=SHORT.get)
def test_the_image_recipe_matches_the_library_on_real_photos(model_id):
    """The numpy/PIL recipe served without torch gives the pixels the library's own processor
    gives (transformers' image processor, open_clip's and timm's transforms), within a grey
    level or two of their resize on a few pixels."""
    onnx, reference = load_model(model_id), load_model(model_id, runtime="torch")
    images = real_photos()
    ours = np.stack([onnx.prepare(image) for image in images])
    theirs = np.stack([reference.prepare(image) for image in images])
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    std = np.asarray(reference.recipe["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    grey_levels = np.abs(ours - theirs) * std * 255
    photos = len(images) - NOISE_IMAGES
    assert grey_levels[:photos].max() <= 2  # photos and drawn products: a grey level or so
    # Random noise squashed 6:1 (SigLIP) is where torchvision's antialiased bicubic and PIL's
    # differ most, on a few pixels.
    assert grey_levels.max() <= 6 and (grey_levels > 1.01).mean() < 0.01


@pytest.mark.parametrize("model_id", TEXT_IDS, ids=SHORT.get)
def test_the_served_tokenizer_gives_the_library_token_ids(model_id):
    """tokenizer.json read by `tokenizers` (CLIP's BPE, SigLIP's SentencePiece, open_clip's BPE)
    gives the library's ids, padded and truncated as the model expects."""
    from embeddings.models.onnx_embedders import token_feeds

    onnx, reference = load_model(model_id), load_model(model_id, runtime="torch")
    tower = onnx.text_tower
    ours = token_feeds(tower.tokenizer(), tower.settings, TEXTS)
    theirs = reference.text.tokenize(TEXTS)
    for name in tower.settings["inputs"]:
        assert ours[name].tolist() == theirs[name].tolist()
    assert ours["input_ids"].shape[1] == tower.settings["max_length"]  # the long one truncated


def test_weights_point_a_hub_name_at_a_local_folder():
    """`--weights ID=PATH` for a hub name: loaded from the folder, known by its content hash
    (the same id as the folder named directly), its dimension learnt by loading."""
    local = next(m for m in FAMILY_IDS if SHORT[m] == "timm")
    hub_name = "timm:hf-hub:acme/tiny-vit"
    assert get_spec(hub_name).has_text is False
    model = load_model(hub_name, weights=str(ZOO[local]))
    assert model.weights_id == expected_weights_id(local) == load_model(local).weights_id
    assert model.dim == 32 and get_spec(hub_name).dim == 32
    assert str(ZOO[local]) not in model.weights_id


def test_ids_holding_separators_are_refused_and_folders_are_safe():
    for bad in ("hf:a,b", "hf:org/x+y", "timm:local-dir:/tmp/a=b"):
        with pytest.raises(EmbeddingsError, match="command line uses"):
            get_spec(bad)
    names = {folder_name(m) for m in ["hf:a/b", "hf:a_b", "hf:a.b", "hf:A/b", "hf:../../etc"]}
    assert len(names) == 5
    assert all("/" not in n and "." not in n and ":" not in n for n in names)
    with pytest.raises(EmbeddingsError, match="open_clip:ARCH/PRETRAINED"):
        get_spec("nonsense-model")


def test_the_built_in_ids_are_unchanged():
    assert [s.id for s in list_models()] == [
        "pixels",
        "resnet50",
        "simclr",
        "clip",
        "efficientnet-lite0",
        "colour",
    ]
    assert all(folder_name(s.id) == s.id for s in list_models())
    assert expected_weights_id("clip") == "sentence-transformers/clip-ViT-B-32"
    assert expected_weights_id("resnet50") == "torchvision/resnet50/IMAGENET1K_V2"


def test_a_model_that_cannot_load_fails_alone(tmp_path, product_folder):
    """A missing folder and an open_clip folder without weights fail, each with a message
    naming the id and what was tried; pixels builds and is committed."""
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text(
        (
            ZOO[next(m for m in FAMILY_IDS if SHORT[m] == "open_clip")] / "open_clip_config.json"
        ).read_text()
    )
    missing = f"hf:{tmp_path / 'nowhere'}"
    no_weights = f"open_clip:local-dir:{broken}"
    built = build_catalogue(
        BuildRequest(
            out=tmp_path / "cat",
            source=str(product_folder),
            models=["pixels", missing, no_weights],
            bridges=False,
        )
    )
    status = {o.model_id: o for o in built.outcomes}
    assert status["pixels"].status == "built" and built.committed
    assert status[missing].status == "failed"
    assert repr(missing) in status[missing].message and "nowhere" in status[missing].message
    assert status[no_weights].status == "failed"
    assert repr(no_weights) in status[no_weights].message
    assert "open_clip_model.safetensors" in status[no_weights].message
    assert built_models(Catalogue.open(tmp_path / "cat")) == ["pixels"]


def test_the_models_command_lists_the_presets(tmp_path):
    """Each preset with its family id, dimensions, licence and, with an empty hub cache and no
    export, the download it needs."""
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "EMBEDDINGS_MODELS": str(tmp_path / "onnx"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "embeddings", "models"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "hf:patrickjohncyh/fashion-clip" in lines["fashion-clip"]
    assert "open_clip:hf-hub:Marqo/marqo-fashionSigLIP" in lines["marqo-fashion-siglip"]
    assert "hf:google/siglip2-base-patch16-224" in lines["siglip2-base"]
    assert "384-d" in lines["dinov2-small"] and "downloads 88 MB" in lines["dinov2-small"]
    assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in lines["clip-vit-b-32-laion"]
    assert "text+image" in lines["fashion-clip"] and "MIT" in lines["fashion-clip"]


def test_publishing_refuses_an_id_naming_a_local_folder(zoo_catalogue, tmp_path):
    from embeddings.bundle.publish import publish_bundle

    catalogue, _ = zoo_catalogue
    local = next(m for m in FAMILY_IDS if SHORT[m] == "dinov2")
    with pytest.raises(EmbeddingsError, match="does not record"):
        publish_bundle(catalogue, [local], tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_a_hub_model_in_the_cache_is_known_by_its_commit(tmp_path, monkeypatch):
    """A hub name whose snapshot is in the Hugging Face cache loads from it offline, with the
    revision's commit hash as its weights id; a hub name that is not cached fails with a
    message naming the id, the cache looked in and the hub."""
    import shutil

    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-vit"
    shutil.copytree(
        ZOO[next(m for m in FAMILY_IDS if SHORT[m] == "timm")], repo / "snapshots" / commit
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("timm:hf-hub:acme/tiny-vit")
    assert (
        model.weights_id
        == f"acme/tiny-vit@{commit}"
        == expected_weights_id("timm:hf-hub:acme/tiny-vit")
    )
    assert model.dim == 32
    with pytest.raises(EmbeddingsError) as refused:
        load_model("hf:acme/not-cached")
    message = str(refused.value)
    assert "'hf:acme/not-cached'" in message and str(cache) in message and "hub" in message


def test_evaluate_kagl_measures_family_models_like_any_model(zoo_catalogue, tmp_path, capsys):
    """`evaluate --protocol kagl` on family ids with native text towers: their title and label
    figures, saved for the Compare page."""
    from embeddings.cli import main
    from embeddings.quality.kagl import load_leaderboard, pick_title_queries

    catalogue, _ = zoo_catalogue
    titles = tmp_path / "titles.txt"
    titles.write_text("\n".join(pick_title_queries(catalogue, 10, seed=1)), encoding="utf-8")
    models = [m for m in TEXT_IDS if SHORT[m] in ("clip", "open_clip")]
    args = ["evaluate", "--catalog", str(catalogue.directory), "--protocol", "kagl"]
    assert main([*args, "--models", ",".join(models), "--title-queries", str(titles)]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in models), out[-2000:]
    saved = load_leaderboard(catalogue)
    for model_id in models:
        figures = saved.figures[model_id]
        assert 0.0 <= figures["title"]["recall@10"] <= 1.0
        assert figures["labels"], figures


def test_a_bundle_knows_a_local_model_by_its_content_hash(product_folder, tmp_path, monkeypatch):
    """A hub name given a local folder with --weights publishes with no trace of the folder's
    path; a server with neither that folder's name nor the hub cache serves it from the
    bundle's encoder."""
    import huggingface_hub.constants

    from embeddings.bundle.publish import publish_bundle
    from embeddings.models import onnx_cache

    hub_name = "timm:hf-hub:acme/tiny-vit"
    folder = ZOO[next(m for m in FAMILY_IDS if SHORT[m] == "timm")]
    built = build_catalogue(
        BuildRequest(
            out=tmp_path / "cat",
            source=str(product_folder),
            models=[hub_name],
            weights={hub_name: {"weights": str(folder)}},
            bridges=False,
        )
    )
    assert [o.status for o in built.outcomes] == ["built"], built.outcomes
    catalogue = Catalogue.open(tmp_path / "cat")
    publish_bundle(catalogue, [hub_name], tmp_path / "bundle")
    for path in (tmp_path / "bundle").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt", ".csv"):
            assert str(folder) not in path.read_text(errors="replace"), path
    encoders = tmp_path / "bundle" / "encoders"
    assert [p.name for p in encoders.glob(f"{folder_name(hub_name)}/*")] == [
        onnx_cache.weights_slug(expected_weights_id(hub_name, {"weights": str(folder)}))
    ]
    monkeypatch.setattr(onnx_cache, "_read_only_homes", [encoders])
    monkeypatch.setenv("EMBEDDINGS_MODELS", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    served = load_model(hub_name)
    assert served.weights_id.startswith("sha256:") and served.export.folder.is_relative_to(encoders)
    product = catalogue.ids[9]
    photo = Image.open(catalogue.image_path(product)).convert("RGB")
    top = make_searcher(catalogue).search_image(photo, [hub_name], 3)[hub_name][0]
    assert top.id == product and top.score > 0.99


def test_family_models_build_into_milvus_lite_side_by_side(product_folder, tmp_path):
    """Two `hf:` ids of folders side by side (their names agree but for the last part) get
    their own Milvus collections and answer their own queries (Milvus Lite, the catalogue's
    milvus.db)."""
    from embeddings.building.catalogue import IndexOptions

    models = [m for m in FAMILY_IDS if SHORT[m] in ("clip", "dinov2")]
    built = build_catalogue(
        BuildRequest(
            out=tmp_path / "cat",
            source=str(product_folder),
            models=models,
            bridges=False,
            index=IndexOptions(backend="milvus"),
        )
    )
    assert [o.status for o in built.outcomes] == ["built", "built"], built.outcomes
    catalogue = Catalogue.open(tmp_path / "cat")
    searcher = make_searcher(catalogue)
    product = catalogue.ids[11]
    photo = Image.open(catalogue.image_path(product)).convert("RGB")
    answers = searcher.search_image(photo, models, 3)
    for model_id in models:
        assert answers[model_id][0].id == product and answers[model_id][0].score > 0.99

"""The model zoo's families on these cores: ONNX export time and images/s, ONNX Runtime vs torch.

    python -m bench.bench_zoo                      # every preset's architecture
    python -m bench.bench_zoo --presets dinov2-small,convnext-tiny-in22k --images 64

Each preset is measured on its real architecture with random weights (nothing downloaded): the
library builds the model from its config (transformers `CLIPConfig`/`SiglipConfig`/
`Dinov2Config` at the published sizes, open_clip `create_model(ARCH)`, timm
`create_model(NAME, pretrained=False)`), with the preprocessing its published config gives.
The image tower goes through the zoo's own path: `embeddings.models.family_export.export_family`
(the export and its parity check against torch, timed), then ONNX Runtime and torch embed the
same prepared batches of real product photos, interleaved for `--rounds` rounds (img/s is the
median round). The text towers are not timed here (queries encode one text at a time).

Prints one JSON object on stdout (progress on stderr); `--markdown` prints the table instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import SHARED_FASHION, emit, log, machine

#: preset -> (family, what is built): the preset's image tower at its published size.
ARCHITECTURES = {
    "fashion-clip": "transformers CLIP ViT-B/32, 224 px (CLIPConfig defaults)",
    "marqo-fashion-siglip": "open_clip ViT-B-16-SigLIP (timm vit_base_patch16_siglip_224)",
    "siglip-base": "transformers SigLIP ViT-B/16, 224 px (siglip2-base-patch16-224 has the same "
    "image tower)",
    "dinov2-small": "transformers DINOv2 ViT-S/14, 518 px positions, 224 px crops",
    "clip-vit-b-32-laion": "open_clip ViT-B-32",
    "convnext-tiny-in22k": "timm convnext_tiny.fb_in22k_ft_in1k",
}


def _hf(name: str):
    """A transformers preset's image tower with random weights, and its image processor."""
    import transformers as tf

    from embeddings.models import hf

    if name == "fashion-clip":
        model, processor = tf.CLIPModel(tf.CLIPConfig()), tf.CLIPImageProcessor()
        return hf._ImageFeatures(model.eval()), processor
    if name == "siglip-base":
        config = tf.SiglipConfig(text_config={"vocab_size": 32000})
        model = tf.SiglipModel(config)
        return hf._ImageFeatures(model.eval()), tf.SiglipImageProcessor()
    config = tf.Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14)
    processor = tf.BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return hf._Pooled(tf.Dinov2Model(config).eval(), cls_token=False), processor


def build(name: str):
    """The torch embedder (`TorchFamilyEmbedder`, image tower only) of a preset's architecture."""
    from embeddings.models import get_spec
    from embeddings.models.torch_family import TorchFamilyEmbedder, probe_dim

    spec = get_spec(name)
    if name in ("fashion-clip", "siglip-base", "dinov2-small"):
        from embeddings.models.hf import image_recipe_of

        module, processor = _hf(name)
        recipe = image_recipe_of(processor)

        def prepare(image):
            return processor(images=[image], return_tensors="np")["pixel_values"][0]

    elif name in ("marqo-fashion-siglip", "clip-vit-b-32-laion"):
        import open_clip

        from embeddings.models.open_clip_family import _Image, image_recipe_of

        arch = "ViT-B-16-SigLIP" if name == "marqo-fashion-siglip" else "ViT-B-32"
        model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=None)
        module, recipe = _Image(model.eval()), image_recipe_of(dict(model.visual.preprocess_cfg))

        def prepare(image):
            return transform(image).numpy()

    else:
        import timm
        from timm.data import create_transform, resolve_data_config

        from embeddings.models.timm_family import image_recipe_of

        module = timm.create_model(
            "convnext_tiny.fb_in22k_ft_in1k", pretrained=False, num_classes=0
        )
        config = resolve_data_config({}, model=module.eval())
        transform, recipe = create_transform(**config), image_recipe_of(config)

        def prepare(image):
            return transform(image).numpy()

    size = tuple(recipe.get("crop") or recipe.get("size"))
    spec = spec.__class__(**{**spec.__dict__, "dim": probe_dim(module, size)})
    return TorchFamilyEmbedder(spec, module, prepare, recipe)


def photos(count: int) -> list:
    from PIL import Image

    from embeddings.models.export import probe_images

    paths = sorted((SHARED_FASHION / "images").glob("*.jpg"))[:count]
    images = [Image.open(p).convert("RGB") for p in paths]
    return images or probe_images(count)


def measure(name: str, images: list, batch: int, rounds: int) -> dict:
    """Export time, parity, and ONNX Runtime vs torch img/s on the same prepared batches."""
    from embeddings.models.family_export import export_family
    from embeddings.models.onnx_session import OnnxSession

    started = time.perf_counter()
    embedder = build(name)
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        fields = export_family(embedder, Path(folder))
        export_s = time.perf_counter() - started
        session = OnnxSession(Path(folder) / "image.onnx")
        prepared = [embedder.prepare(image) for image in images]
        batches = [prepared[i : i + batch] for i in range(0, len(prepared), batch)]
        session.run({"pixel_values": np.stack(batches[0])})  # session made before timing
        timings = {"onnx": [], "torch": []}
        for _ in range(rounds):
            for runtime in ("onnx", "torch"):
                started = time.perf_counter()
                for chunk in batches:
                    if runtime == "onnx":
                        session.run({"pixel_values": np.stack(chunk)})
                    else:
                        embedder.embed_prepared(chunk)
                timings[runtime].append(len(prepared) / (time.perf_counter() - started))
    onnx, torch_rate = statistics.median(timings["onnx"]), statistics.median(timings["torch"])
    return {
        "preset": name,
        "architecture": ARCHITECTURES[name],
        "dim": embedder.dim,
        "input": fields["input_size"],
        "build_s": built,
        "export_s": export_s,
        "min_cosine": fields["drift"]["image"]["min_cosine"],
        "onnx_images_per_s": onnx,
        "torch_images_per_s": torch_rate,
        "ratio": onnx / torch_rate,
    }


def markdown(result: dict) -> str:
    rows = [
        "| preset | architecture (random weights) | dim | export s | cosine vs torch | "
        "ONNX img/s | torch img/s | ONNX / torch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        rows.append(
            f"| `{row['preset']}` | {row['architecture']} | {row['dim']} | "
            f"{row['export_s']:.0f} | {row['min_cosine']:.7f} | "
            f"{row['onnx_images_per_s']:.1f} | {row['torch_images_per_s']:.1f} | "
            f"{row['ratio']:.2f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(ARCHITECTURES))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    images = photos(args.images)
    rows = []
    for name in args.presets.split(","):
        log(f"{name}: {ARCHITECTURES[name]}")
        rows.append(measure(name, images, args.batch_size, args.rounds))
        log(f"{name}: {rows[-1]}")
    result = {"machine": machine(), "images": len(images), "batch": args.batch_size, "rows": rows}
    print(markdown(result)) if args.markdown else emit(result)


if __name__ == "__main__":
    main()

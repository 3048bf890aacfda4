"""Reproduce the README's quality table ("Measured quality") on a built catalogue.

    export EMBEDDINGS_DATA=/path/to/data        # optional; catalogues live there by default
    python -m embeddings build --source ../shared/datasets/fashion-product-images-small \\
        --models pixels,efficientnet-lite0 --out data/fashion-full
    python -m bench.quality --catalog data/fashion-full

For each image-only model it trains the text bridge when it is missing or stale (`--retrain`:
always), runs `embeddings.quality.evaluate.evaluate_catalogue` (1,000 sampled queries per task,
seed 0), saves the results beside the indexes (so the app's Compare page shows them), and prints the
Markdown table: image-to-image by articleType and baseColour, text-to-image through each
model's text encoder, and each bridge's own held-out figures, every figure beside chance.
"""

from __future__ import annotations

import argparse
import sys

from embeddings.bridge import (
    check_bridge_manifest,
    read_bridge_manifest,
    train_bridge_for_catalogue,
)
from embeddings.catalogue import Catalogue
from embeddings.config import resolve_catalog_dir
from embeddings.errors import EmbeddingsError
from embeddings.models import get_spec
from embeddings.quality.evaluate import OWN_PRODUCT, evaluate_catalogue, save_results

#: Models the table names even when they cannot be measured here (no network for their weights).
PLACEHOLDER_MODELS = ("resnet50", "simclr", "clip")
IMAGE_LABELS = ("articleType", "baseColour")
K = 10


def ensure_bridge(catalogue: Catalogue, model_id: str, *, retrain: bool, seed: int) -> None:
    manifest = read_bridge_manifest(catalogue.bridge_dir(model_id))
    if manifest is not None and not retrain:
        try:
            check_bridge_manifest(manifest, catalogue=catalogue, model_id=model_id)
            print(
                f"[{model_id}] text bridge up to date (trained {manifest.get('trained_at')})",
                file=sys.stderr,
            )
            return
        except EmbeddingsError as exc:
            print(f"[{model_id}] retraining: {exc}", file=sys.stderr)
    summary = train_bridge_for_catalogue(
        catalogue,
        model_id,
        seed=seed,
        progress=lambda event: print(f"[{model_id}] {event.message}", file=sys.stderr),
    )
    print(f"[{model_id}] text bridge: {summary}", file=sys.stderr)


def fmt(value: float | None) -> str:
    """Three decimals; tiny chance levels (10 / 44,441) keep two significant digits instead of
    0.000."""
    if value is None:
        return "–"
    return f"{value:.2g}" if 0 < abs(value) < 0.001 else f"{value:.3f}"


def quality_table(result, label_main: str = "articleType") -> str:
    manifest = result.manifest
    image, text = manifest["image_queries"], manifest["text_queries"]
    header = ["model"]
    for label in IMAGE_LABELS:
        header += [f"img→img {label} P@{K}", f"mAP@{K}"]
    header += [
        f"text→img own product R@{K}",
        f"text→img {label_main} P@{K}",
        "text via",
        f"bridge held-out R@{K} (n titles rank n images)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    chance = ["*chance*"]
    for model_id, entry in manifest["models"].items():
        cells = [f"`{model_id}`"]
        for label in IMAGE_LABELS:
            cells += [
                fmt(result.value(model_id, "image", label, "precision", K)),
                fmt(result.value(model_id, "image", label, "map", K)),
            ]
        cells += [
            fmt(result.value(model_id, "text", OWN_PRODUCT, "recall", K)),
            fmt(result.value(model_id, "text", label_main, "precision", K)),
            entry.get("text") or "–",
        ]
        holdout = (entry.get("bridge") or {}).get("holdout") or {}
        cells.append(
            f"{fmt(holdout.get(f'recall@{K}'))} ({holdout.get('queries', 0):,} titles)"
            if holdout
            else "–"
        )
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(manifest["models"]))
    for label in IMAGE_LABELS:
        chance += [fmt(result.value(first, "image", label, "chance", K)), ""]
    text_models = [m for m, e in manifest["models"].items() if e.get("text")]
    holdouts = [
        (manifest["models"][m].get("bridge") or {}).get("holdout") or {} for m in text_models
    ]
    chance += [
        fmt(result.value(text_models[0], "text", OWN_PRODUCT, "chance", K)) if text_models else "–",
        fmt(result.value(text_models[0], "text", label_main, "chance", K)) if text_models else "–",
        "",
        fmt(next((h.get(f"chance_recall@{K}") for h in holdouts if h), None)),
    ]
    lines.append("| " + " | ".join(chance) + " |")
    for model_id in PLACEHOLDER_MODELS:
        if model_id not in manifest["models"]:
            lines.append(
                f"| `{model_id}` | " + " | ".join(["to measure"] * (len(header) - 1)) + " |"
            )
    notes = [
        "",
        f"{manifest['catalogue']['count']:,} products ({manifest['catalogue']['name']}); image "
        f"queries: {image['sampled']:,} sampled of {image['population']:,}; text queries: "
        f"{text['sampled']:,} titles ({text['pool']}); seed {manifest['seed']}; measured "
        f"{manifest['created_at']}.",
    ]
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalog", required=True, help="a built catalogue folder (or its name in the data folder)"
    )
    parser.add_argument("--models", default="pixels,efficientnet-lite0")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--retrain", action="store_true", help="retrain the text bridges even when up to date"
    )
    parser.add_argument(
        "--no-bridges", action="store_true", help="evaluate without training any bridge"
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
        if not args.no_bridges:
            for model_id in models:
                if not get_spec(model_id).has_text:
                    ensure_bridge(catalogue, model_id, retrain=args.retrain, seed=args.seed)

        def progress(event) -> None:
            print(f"evaluated {event.done}/{event.total} (model, task) steps", file=sys.stderr)

        result = evaluate_catalogue(
            catalogue, models, queries=args.queries, seed=args.seed, progress=progress
        )
    except EmbeddingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = save_results(catalogue, result)
    print(
        f"saved {paths['json']} and {paths['markdown']} ({result.manifest['seconds']:.0f} s)",
        file=sys.stderr,
    )
    print(quality_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

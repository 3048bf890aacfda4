"""`map` and `duplicates`: artefacts computed from a built index."""

from __future__ import annotations

import json
import sys

from embeddings.cli.options import add_models_option
from embeddings.cli.progress import ProgressBars


def add_parsers(commands) -> None:
    _map_parser(commands)
    _duplicates_parser(commands)


def _map_parser(commands) -> None:
    maps = commands.add_parser("map", help="compute each model's 2-D map of the catalogue")
    maps.add_argument("--catalog", required=True)
    add_models_option(maps, required=False, help_text="default: every built model")
    maps.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="map a stratified sample above this many products (default 1000000)",
    )
    maps.add_argument("--seed", type=int, default=0)


def _duplicates_parser(commands) -> None:
    dupes = commands.add_parser("duplicates", help="groups of near-duplicate products")
    dupes.add_argument("--catalog", required=True)
    dupes.add_argument("--model", required=True, help="one model id")
    dupes.add_argument(
        "--threshold",
        type=float,
        help="lowest cosine similarity of a pair (default: the model's own, from its scores)",
    )
    dupes.add_argument(
        "--json", action="store_true", help='print [{"ids": [...], "min_score": ...}, ...]'
    )
    dupes.add_argument(
        "--no-save", action="store_true", help="do not save the pairs found for the app"
    )
    dupes.add_argument("--show", type=int, default=20, help="groups listed without --json")


def cmd_map(args) -> int:
    from embeddings.config import resolve_catalog_dir
    from embeddings.derived.maps import MAX_POINTS, make_maps
    from embeddings.models import get_spec

    for model_id in args.models or []:
        get_spec(model_id)
    printer = ProgressBars()
    try:
        outcomes = make_maps(
            resolve_catalog_dir(args.catalog),
            args.models,
            max_points=args.max_points or MAX_POINTS,
            seed=args.seed,
            progress=printer,
        )
    finally:
        printer.close()
    for outcome in outcomes:
        if outcome.status == "failed":
            print(f"[{outcome.model_id}] no map: {outcome.message}", file=sys.stderr)
        else:
            print(f"[{outcome.model_id}] {describe_map(outcome.map.manifest)}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def describe_map(manifest: dict) -> str:
    """One line about a saved map: what was mapped, how, how faithfully, how long it took."""
    faithful = manifest["faithfulness"]
    pca = manifest.get("pca")
    seconds = manifest["seconds"]
    sampled = (
        f"a sample of {manifest['mapped']:,} of {manifest['products']:,} products, stratified "
        f"by {manifest['sample_label']}"
        if manifest["sampled"]
        else f"all {manifest['mapped']:,} products"
    )
    reduced = f", PCA to {pca['dims']} dims first" if pca else ""
    return (
        f"map of {sampled} ({manifest['method']}{reduced}): {faithful['neighbours_kept']:.3f} of "
        f"each product's {faithful['neighbours']} nearest neighbours stay its nearest on the map "
        f"(chance {faithful['chance']:.4f}), trustworthiness {faithful['trustworthiness']}; "
        f"{sum(seconds.values()):.0f} s (layout {seconds['layout']:.0f} s)"
    )


def cmd_duplicates(args) -> int:
    from embeddings.config import resolve_catalog_dir
    from embeddings.derived.duplicates import find_duplicates, products_in_groups
    from embeddings.models import get_spec

    get_spec(args.model)
    printer = ProgressBars()
    try:
        found = find_duplicates(
            resolve_catalog_dir(args.catalog),
            args.model,
            args.threshold,
            save=not args.no_save,
            progress=printer,
        )
    finally:
        printer.close()
    groups, pairs, threshold = found.groups, found.pairs, found.threshold
    if found.not_saved:
        print(f"[{args.model}] the pairs were not saved: {found.not_saved}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"ids": g.ids, "min_score": round(g.min_score, 6)} for g in groups]))
        return 0
    manifest = pairs.manifest
    print(
        f"[{args.model}] {len(groups):,} groups, {products_in_groups(groups):,} of "
        f"{len(pairs.ids):,} products, at cosine >= {threshold:.4f} (the model's default: "
        f"{manifest['default_threshold']:.4f}); {manifest['method']} at {pairs.floor:.4f} over "
        f"{manifest['index_type']} index: {manifest['seconds']:.1f} s"
    )
    if manifest["capped_queries"]:
        print(f"  {manifest['capped_queries']} products reached Milvus's per-query cap")
    for group in groups[: args.show]:
        print(f"  {len(group.ids):>4}  min {group.min_score:.4f}  {' '.join(group.ids[:12])}")
    if len(groups) > args.show:
        print(f"  ... and {len(groups) - args.show:,} more groups (--json lists them all)")
    return 0


COMMANDS = {"map": cmd_map, "duplicates": cmd_duplicates}

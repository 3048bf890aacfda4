"""`evaluate`, `bridge` and `pick-titles`: measuring models and (re)training text bridges."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from embeddings.cli.options import (
    add_exclusion_options,
    add_models_option,
    add_recipe_option,
    excluded_titles_request,
    parse_model_list,
)
from embeddings.cli.progress import ProgressBars
from embeddings.errors import EmbeddingsError


def add_parsers(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="measure each model's retrieval quality")
    evaluate.add_argument("--catalog", required=True)
    add_models_option(evaluate, required=False, help_text="default: every built model")
    evaluate.add_argument(
        "--queries", type=int, default=1000, help="sampled queries per task (default 1000)"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")
    _leaderboard_options(evaluate)
    bridge = commands.add_parser("bridge", help="(re)train the text bridges of image-only models")
    bridge.add_argument("--catalog", required=True)
    add_models_option(bridge, required=False, help_text="default: every built image-only model")
    bridge.add_argument("--seed", type=int, default=0)
    bridge.add_argument(
        "--holdout", type=float, default=0.1, help="share of distinct titles held out (0.1)"
    )
    bridge.add_argument(
        "--force", action="store_true", help="retrain even a bridge that is up to date"
    )
    add_exclusion_options(bridge, "--exclude-titles", "--bridge-exclude-titles")
    add_recipe_option(bridge)
    _pick_titles_parser(commands)


def _leaderboard_options(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument(
        "--protocol",
        choices=["sampled", "kagl"],
        default="sampled",
        help="sampled: image and text queries sampled from the catalogue (default); kagl: the "
        "Marqo fashion leaderboard's title and bare-label text queries",
    )
    evaluate.add_argument(
        "--title-queries",
        metavar="FILE",
        help="kagl: the title queries, one per line (default: the titles the bridges were "
        "built without, see pick-titles)",
    )
    evaluate.add_argument(
        "--label-fields",
        type=parse_model_list,
        help="kagl: comma-separated label fields to query by value (default: all)",
    )


def _pick_titles_parser(commands) -> None:
    pick = commands.add_parser(
        "pick-titles",
        help="draw the title queries of the kagl protocol (to keep out of bridge training)",
    )
    where = pick.add_mutually_exclusive_group(required=True)
    where.add_argument("--catalog", help="a built catalogue")
    where.add_argument("--source", help="a dataset folder, read as build would (nothing written)")
    pick.add_argument("--adapter", choices=["fashion-small", "digikala", "folder"])
    pick.add_argument("--sidecar", help="folder adapter: CSV adding titles/labels by file name")
    pick.add_argument("--limit", type=int, help="--source: the subset build --limit N keeps")
    pick.add_argument(
        "--limit-seed", type=int, default=0, help="--source: the seed of that subset (build --seed)"
    )
    pick.add_argument("-n", type=int, default=2000, help="how many titles (default 2000)")
    pick.add_argument("--seed", type=int, default=0)
    pick.add_argument("--out", required=True, help="the file to write, one title per line")


def cmd_evaluate(args) -> int:
    from embeddings.catalogue import Catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.quality.evaluate import evaluate_catalogue, save_results, summary_markdown

    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    if args.models:
        from embeddings.index.fused import check_model_id

        args.models = [check_model_id(model_id) for model_id in args.models]
    if args.protocol == "kagl":
        return _evaluate_leaderboard(catalogue, args)

    bars = ProgressBars(unit="step")
    try:
        result = evaluate_catalogue(
            catalogue, args.models, queries=args.queries, seed=args.seed, progress=bars
        )
    finally:
        bars.close()
    paths = save_results(catalogue, result)
    for model_id, reason in result.manifest["skipped_text"].items():
        print(f"[{model_id}] no text figures: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.rows))
    else:
        print(summary_markdown(result))
        print(f"saved {paths['json']} and {paths['markdown']}")
    return 0


def _evaluate_leaderboard(catalogue, args) -> int:
    """`evaluate --protocol kagl`: title and bare-label text queries (`embeddings.quality.kagl`)."""
    from embeddings.bridge.exclusion import read_title_file
    from embeddings.quality.kagl import evaluate_leaderboard, leaderboard_markdown, save_leaderboard
    from embeddings.search.searcher import text_capable_models

    models = args.models or list(text_capable_models(catalogue))
    if not models:
        raise EmbeddingsError(
            f"catalogue {catalogue.name!r} has no model that answers text; train a bridge: "
            f"python -m embeddings bridge --catalog {catalogue.directory}"
        )
    titles = (
        read_title_file(args.title_queries, option="--title-queries")
        if args.title_queries
        else None
    )
    bars = ProgressBars(unit="step")
    try:
        result = evaluate_leaderboard(
            catalogue, models, titles, label_fields=args.label_fields, progress=bars
        )
    finally:
        bars.close()
    paths = save_leaderboard(catalogue, result)
    for model_id, reason in result.manifest["refused_titles"].items():
        print(f"[{model_id}] no title figures: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(leaderboard_markdown(result))
        print(f"saved {paths['json']} and {paths['markdown']}")
    return 0


def cmd_pick_titles(args) -> int:
    """`pick-titles`: the seeded title queries of the kagl protocol, written one per line."""
    from embeddings.bridge.exclusion import write_title_file
    from embeddings.catalogue import Catalogue, create_catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.quality.kagl import pick_title_queries

    if args.catalog:
        catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            catalogue = create_catalogue(
                args.source,
                Path(scratch) / "scan",
                adapter=args.adapter,
                sidecar=args.sidecar,
                limit=args.limit,
                seed=args.limit_seed,
                write=False,
            )
    titles = pick_title_queries(catalogue, args.n, args.seed)
    path = write_title_file(args.out, titles)
    print(
        f"wrote {len(titles):,} titles (seed {args.seed}) to {path}; build with "
        f"--bridge-exclude-titles {path}, then evaluate --protocol kagl"
    )
    return 0


def cmd_bridge(args) -> int:
    """`bridge`: retrain bridges with the catalogue's bridge settings, changed by the options
    (a change is recorded in catalog.json first, and said)."""
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.catalogue import Catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.index.opening import built_models
    from embeddings.locks import build_lock
    from embeddings.models import get_spec

    directory = resolve_catalog_dir(args.catalog)
    catalogue = Catalogue.open(directory)
    image_only = [m for m in built_models(catalogue) if not get_spec(m).has_text]
    models = args.models or image_only
    if not models:
        raise EmbeddingsError(
            f"catalogue {catalogue.name!r} has no built image-only model to bridge"
        )
    requested = excluded_titles_request(args, "--exclude-titles")
    with build_lock(directory):
        catalogue = Catalogue.open(directory)
        settings = _record_bridge_settings(catalogue, requested, args.bridge_recipe)
        for model_id in models:
            if get_spec(model_id).has_text:
                print(f"[{model_id}] has its own text tower: no bridge needed")
                continue
            bars = ProgressBars(unit="epoch")
            try:
                summary = train_bridge_for_catalogue(
                    catalogue,
                    model_id,
                    seed=args.seed,
                    holdout_fraction=args.holdout,
                    force=args.force,
                    progress=bars,
                    **settings.fit_options(),
                )
            finally:
                bars.close()
            print(
                f"[{model_id}] text bridge: "
                f"{summary or 'no titles in this catalogue: nothing to learn from'}"
            )
    behind = _bridges_behind(catalogue, settings, [m for m in image_only if m not in models])
    if behind:
        print(
            f"the bridges of {', '.join(behind)} still follow the earlier settings; retrain "
            f"them: python -m embeddings bridge --catalog {directory} (or the next build does)"
        )
    return 0


def _record_bridge_settings(catalogue, requested: dict, recipe: str | None):
    """The catalogue's bridge settings with the options' changes, saved in catalog.json when
    they changed (or were never recorded); each change printed."""
    from embeddings.bridge.settings import (
        SETTINGS_KEY,
        BridgeSettings,
        catalogue_settings,
        resolve,
    )
    from embeddings.locks import commit_lock

    settings, changes = resolve(
        catalogue_settings(catalogue),
        exclude_titles=requested["bridge_exclude_titles"],
        origin=requested["bridge_exclude_origin"],
        recipe=recipe,
    )
    for change in changes:
        print(f"catalogue setting changed: {change}")
    if changes or BridgeSettings.recorded(catalogue.info) is None:
        catalogue.info[SETTINGS_KEY] = settings.record()
        with commit_lock(catalogue.directory, exclusive=True):
            catalogue.save()
    print(f"bridge settings: {settings.describe()}")
    return settings


def _bridges_behind(catalogue, settings, models: list[str]) -> list[str]:
    from embeddings.bridge import read_bridge_manifest

    manifests = {m: read_bridge_manifest(catalogue.bridge_dir(m)) for m in models}
    return [m for m, manifest in manifests.items() if manifest and not settings.matches(manifest)]


COMMANDS = {"evaluate": cmd_evaluate, "bridge": cmd_bridge, "pick-titles": cmd_pick_titles}

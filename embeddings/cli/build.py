"""`build`: a catalogue and its indexes from a source, or more of an existing one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embeddings.cli.options import (
    add_exclusion_options,
    add_models_option,
    add_recipe_option,
    excluded_titles_request,
    parse_weights,
)
from embeddings.cli.progress import ProgressBars
from embeddings.errors import EmbeddingsError


def add_parsers(commands) -> None:
    build = commands.add_parser("build", help="scan a catalogue and build an index per model")
    where = build.add_mutually_exclusive_group(required=True)
    where.add_argument("--source", help="a dataset folder, or a Kaggle handle owner/dataset")
    where.add_argument(
        "--catalog", help="rebuild an existing catalogue from its own source and settings"
    )
    build.add_argument(
        "--adapter",
        choices=["fashion-small", "digikala", "folder"],
        help="how to read the source (default: detected, or the catalogue's own)",
    )
    add_models_option(
        build,
        required=False,
        help_text="comma-separated model ids (default: the catalogue's "
        "built models, or pixels,efficientnet-lite0 for a new catalogue)",
    )
    build.add_argument(
        "--out", help="catalogue folder (default: <data folder>/<source name>[-limit])"
    )
    build.add_argument("--limit", type=int, help="keep N products, stratified by the main label")
    build.add_argument("--seed", type=int, help="seed of the --limit subset (default 0)")
    build.add_argument("--sidecar", help="folder adapter: CSV adding titles/labels by file name")
    _index_options(build)
    _bridge_options(build)


def _index_options(build: argparse.ArgumentParser) -> None:
    """How a model is embedded and where its index lives."""
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--workers", type=int, default=2, help="image-decoding threads (default 2)")
    build.add_argument(
        "--hnsw-above",
        type=int,
        default=None,
        help="use an HNSW graph above this many products (default 100000)",
    )
    build.add_argument(
        "--store",
        choices=["float32", "float16", "uint8"],
        dest="store_dtype",
        help="how vectors are stored: float32; float16 (half the disk and RAM, scores within "
        "~1e-3); uint8 (raw pixels only: exact, a quarter of float32; the default for pixels). "
        "Default: what the model's index used, else float32",
    )
    build.add_argument(
        "--float16",
        action="store_const",
        const="float16",
        dest="store_dtype",
        help="the same as --store float16",
    )
    build.add_argument(
        "--backend",
        choices=["faiss", "milvus"],
        default=None,
        help="where the index lives: faiss files in the catalogue (default) or a Milvus "
        "collection (Milvus Lite in <catalogue>/milvus.db unless --milvus-uri)",
    )
    build.add_argument(
        "--milvus-uri",
        help="a Milvus server or Zilliz Cloud (http://host:19530), or a "
        "Milvus Lite path ending in .db; implies --backend milvus",
    )
    build.add_argument(
        "--milvus-token",
        help="Milvus token (user:password or API key); default: "
        "$MILVUS_TOKEN; never written to disk",
    )
    build.add_argument(
        "--force", action="store_true", help="re-embed everything, ignoring earlier vectors"
    )
    build.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="what embeds the images: this process (local, the default) or a Ray Data job "
        "on a Ray cluster (ray; ONNX runtime only; images on a path every node reads)",
    )
    build.add_argument(
        "--ray-address",
        help="--engine ray: the cluster's HOST:PORT (default: $RAY_ADDRESS, else a local "
        "cluster on 127.0.0.1 started for the build)",
    )
    build.add_argument(
        "--ray-actor-cpus",
        type=float,
        default=1.0,
        help="--engine ray: CPUs each model actor reserves, its ONNX Runtime threads (default 1)",
    )
    build.add_argument(
        "--weights",
        action="append",
        metavar="MODEL=PATH",
        help="load a model's weights from a local file or folder",
    )


def _bridge_options(build: argparse.ArgumentParser) -> None:
    """Text bridges and the fashion leaderboard protocol (catalogue settings)."""
    build.add_argument(
        "--bridge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train a text bridge for image-only models when products have titles",
    )
    add_exclusion_options(build, "--bridge-exclude-titles")
    add_recipe_option(build)
    build.add_argument(
        "--kagl",
        action="store_true",
        help="set up the fashion leaderboard protocol: when the catalogue keeps no titles out "
        "of its bridges yet, pick 10%% of its distinct titles (at most 2000, seed 0) as the "
        "title queries and keep them out; then measure it (evaluate --protocol kagl)",
    )


def cmd_build(args) -> int:
    from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue

    _check_engine(args)
    request = BuildRequest(
        out=_build_out(args),
        source=args.source,
        adapter=args.adapter,
        limit=args.limit,
        seed=args.seed,
        sidecar=args.sidecar,
        models=args.models,
        weights=parse_weights(args.weights),
        bridges=args.bridge,
        **excluded_titles_request(args, "--bridge-exclude-titles"),
        bridge_recipe=args.bridge_recipe,
        kagl=args.kagl,
        index=IndexOptions(
            batch_size=args.batch_size,
            workers=args.workers,
            hnsw_above=args.hnsw_above,
            store_dtype=args.store_dtype,
            backend=_backend(args),
            milvus_uri=args.milvus_uri,
            milvus_token=args.milvus_token,
            force=args.force,
            engine=args.engine,
            ray_address=args.ray_address,
            ray_actor_cpus=args.ray_actor_cpus,
        ),
    )
    bars = ProgressBars(unit="img")
    try:
        result = build_catalogue(request, progress=bars)
    finally:
        bars.close()
    _print_build(result)
    if result.failed:
        print(
            f"built {len(result.succeeded)} of {len(result.outcomes)} models; failed: "
            f"{', '.join(o.model_id for o in result.failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _build_out(args) -> Path:
    from embeddings.catalogue import default_catalogue_name
    from embeddings.config import data_dir, resolve_catalog_dir

    if args.catalog:
        return resolve_catalog_dir(args.catalog)
    return (
        Path(args.out) if args.out else data_dir() / default_catalogue_name(args.source, args.limit)
    )


def _check_engine(args) -> None:
    if args.engine != "ray" and (args.ray_address or args.ray_actor_cpus != 1.0):
        raise EmbeddingsError("--ray-address/--ray-actor-cpus need --engine ray")
    if args.ray_actor_cpus <= 0:
        raise EmbeddingsError("--ray-actor-cpus must be above 0, e.g. 1 or 0.5")


def _backend(args) -> str | None:
    """The requested backend, checking the Milvus options before any work is done."""
    if args.backend == "faiss" and (args.milvus_uri or args.milvus_token):
        raise EmbeddingsError(
            "--milvus-uri/--milvus-token need --backend milvus (or drop --backend faiss)"
        )
    if args.milvus_uri:
        from embeddings.index.milvus import check_uri

        args.milvus_uri = check_uri(args.milvus_uri)
        return "milvus"
    return args.backend


def _print_build(result) -> None:
    catalogue = result.catalogue
    info = catalogue.info
    print(
        f"catalogue {catalogue.directory}: {len(catalogue):,} products ({info['adapter']}), "
        f"labels: {', '.join(catalogue.label_fields) or 'none'}"
    )
    _print_notes("recovered", info["recovered"], 5)
    _print_notes("skipped", info["skipped"], 10)
    if result.updated_too:
        print(
            "the products changed, so these built models were updated too: "
            f"{', '.join(result.updated_too)}"
        )
    print(f"bridge settings: {result.bridge_settings.describe()}")
    if result.bridges_too:
        print(
            "the bridge settings changed, so these bridges were retrained to follow them: "
            f"{', '.join(result.bridges_too)}"
        )
    for outcome in result.outcomes:
        _print_outcome(outcome)
    if result.kagl:
        print(f"leaderboard protocol: {result.kagl}")
    if not result.committed:
        print("nothing was changed: no model was built", file=sys.stderr)


def _print_notes(kind: str, notes: list[dict], shown: int) -> None:
    for note in notes[:shown]:
        print(f"  {kind} {note['where']}: {note['reason']}")
    if len(notes) > shown:
        print(f"  ... and {len(notes) - shown} more {kind} (catalog.json lists them all)")


def _print_outcome(outcome) -> None:
    model_id = outcome.model_id
    if outcome.status == "failed":
        print(f"[{model_id}] build failed: {outcome.message}", file=sys.stderr)
        return
    report = outcome.report
    if report is None:
        print(f"[{model_id}] up to date")
    else:
        manifest = report.manifest
        print(
            f"[{model_id}] {report.count:,} vectors x {manifest['dim']} "
            f"({manifest['index_type']}): embedded {report.embedded:,} at "
            f"{report.items_per_second:.1f} img/s, reused {report.reused:,}"
        )
        for _item_id, reason in report.failed[:10]:
            print(f"  [{model_id}] unreadable image skipped: {reason}")
    if outcome.bridge:
        print(f"[{model_id}] text bridge: {outcome.bridge}")


COMMANDS = {"build": cmd_build}

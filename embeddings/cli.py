"""`python -m embeddings build|search|evaluate|bridge|models|catalogues`.

The top of the core: it parses options, calls the core and prints; nothing in the core imports
it. Every command prints for people by default; `search --json` and `evaluate --json` print
data. Exit codes: 0 success, 1 some models failed (the others answered or were built), 2 bad
input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from embeddings.errors import EmbeddingsError, describe_os_error


def _model_list(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("name at least one model, e.g. pixels,efficientnet-lite0")
    return models


def _weights(pairs: list[str] | None) -> dict[str, dict]:
    """`--weights MODEL=PATH` options -> {model: {"weights": PATH}}."""
    options = {}
    for pair in pairs or []:
        model_id, sep, path = pair.partition("=")
        if not sep or not model_id or not path:
            raise EmbeddingsError(
                f"--weights {pair!r}: write it as MODEL=PATH, e.g. resnet50=/models/r50.pth"
            )
        options[model_id.strip()] = {"weights": path.strip()}
    return options


def _filters(pairs: list[str] | None) -> dict[str, str] | None:
    """`--filter LABEL=VALUE` options -> {label: value}."""
    filters = {}
    for pair in pairs or []:
        label, sep, value = pair.partition("=")
        if not sep or not label.strip():
            raise EmbeddingsError(f"--filter {pair!r}: write it as LABEL=VALUE, e.g. gender=Women")
        filters[label.strip()] = value.strip()
    return filters or None


def _models_option(command: argparse.ArgumentParser, *, required: bool, help_text: str) -> None:
    """`--models` (and its older spelling `--model`): comma-separated model ids."""
    command.add_argument(
        "--models", "--model", dest="models", type=_model_list, required=required, help=help_text
    )


def _build_parser(commands) -> None:
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
    _models_option(
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
        "--weights",
        action="append",
        metavar="MODEL=PATH",
        help="load a model's weights from a local file or folder",
    )
    build.add_argument(
        "--bridge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train a text bridge for image-only models when products have titles",
    )


def _search_parser(commands) -> None:
    search = commands.add_parser("search", help="query a catalogue's indexes")
    search.add_argument(
        "--catalog", required=True, help="catalogue folder (or its name in the data folder)"
    )
    _models_option(search, required=True, help_text="model id(s), comma-separated")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--item", help="a catalogue product id")
    query.add_argument("--text", help="a description, e.g. 'red running shoes'")
    query.add_argument("--image", help="an image file")
    search.add_argument(
        "-k", type=int, default=10, help="results per model (1 to 1000, default 10)"
    )
    search.add_argument(
        "--filter",
        action="append",
        metavar="LABEL=VALUE",
        help="keep only products with this label value, e.g. gender=Women (repeatable)",
    )
    search.add_argument(
        "--json", action="store_true", help='print [{"id", "score"}, ...] (per model if several)'
    )
    search.add_argument("--weights", action="append", metavar="MODEL=PATH")


def _publish_parser(commands) -> None:
    publish = commands.add_parser(
        "publish", help="write a read-only bundle of a catalogue, made to be served (and hosted)"
    )
    publish.add_argument("--catalog", required=True, help="the catalogue to publish")
    _models_option(publish, required=True, help_text="the models to serve, comma-separated")
    publish.add_argument("--out", required=True, help="a new folder for the bundle")
    publish.add_argument(
        "--archive",
        nargs="?",
        const="tar.gz",
        choices=["tar.gz", "zip"],
        help="also write one compressed file <out>.tar.gz (default) or <out>.zip for hosting",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m embeddings", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    _build_parser(commands)
    _search_parser(commands)
    evaluate = commands.add_parser("evaluate", help="measure each model's retrieval quality")
    evaluate.add_argument("--catalog", required=True)
    _models_option(evaluate, required=False, help_text="default: every built model")
    evaluate.add_argument(
        "--queries", type=int, default=1000, help="sampled queries per task (default 1000)"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")
    bridge = commands.add_parser("bridge", help="(re)train the text bridges of image-only models")
    bridge.add_argument("--catalog", required=True)
    _models_option(bridge, required=False, help_text="default: every built image-only model")
    bridge.add_argument("--seed", type=int, default=0)
    bridge.add_argument(
        "--holdout", type=float, default=0.1, help="share of distinct titles held out (0.1)"
    )
    bridge.add_argument(
        "--force", action="store_true", help="retrain even a bridge that is up to date"
    )
    _publish_parser(commands)
    commands.add_parser("models", help="list the model zoo")
    catalogues = commands.add_parser("catalogues", help="list the catalogues in the data folder")
    catalogues.add_argument("--data", help="data folder (default: $EMBEDDINGS_DATA or data/)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EmbeddingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only folder, permissions: name the file and the cause
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished chunks are kept; run the same command to continue",
            file=sys.stderr,
        )
        return 130


# -- build --------------------------------------------------------------------------------------
class BuildPrinter:
    """Shows a build's progress: a tqdm bar per model while it embeds, a line per other step."""

    QUIET = {"embed", "model-done", "bridge"}

    def __init__(self):
        self.bars: dict[str, object] = {}

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if event.stage == "embed":
            bar = self.bars.get(event.model_id)
            if bar is None:
                bar = self.bars[event.model_id] = tqdm(
                    total=event.total, desc=event.model_id, unit="img", dynamic_ncols=True
                )
            bar.total = event.total
            bar.update(event.done - bar.n)
        elif event.stage == "model-done" and event.model_id in self.bars:
            self.bars.pop(event.model_id).close()
        elif event.stage not in self.QUIET and event.message:
            prefix = f"[{event.model_id}] " if event.model_id else ""
            tqdm.write(prefix + event.message)


def cmd_build(args) -> int:
    from embeddings.catalogue_build import BuildRequest, IndexOptions, build_catalogue

    request = BuildRequest(
        out=_build_out(args),
        source=args.source,
        adapter=args.adapter,
        limit=args.limit,
        seed=args.seed,
        sidecar=args.sidecar,
        models=args.models,
        weights=_weights(args.weights),
        bridges=args.bridge,
        index=IndexOptions(
            batch_size=args.batch_size,
            workers=args.workers,
            hnsw_above=args.hnsw_above,
            store_dtype=args.store_dtype,
            backend=_backend(args),
            milvus_uri=args.milvus_uri,
            milvus_token=args.milvus_token,
            force=args.force,
        ),
    )
    result = build_catalogue(request, progress=BuildPrinter())
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
    from embeddings.catalog import default_catalogue_name
    from embeddings.config import data_dir, resolve_catalog_dir

    if args.catalog:
        return resolve_catalog_dir(args.catalog)
    return (
        Path(args.out) if args.out else data_dir() / default_catalogue_name(args.source, args.limit)
    )


def _backend(args) -> str | None:
    """The requested backend, checking the Milvus options before any work is done."""
    if args.backend == "faiss" and (args.milvus_uri or args.milvus_token):
        raise EmbeddingsError(
            "--milvus-uri/--milvus-token need --backend milvus (or drop --backend faiss)"
        )
    if args.milvus_uri:
        from embeddings.milvus_backend import check_uri

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
    for outcome in result.outcomes:
        _print_outcome(outcome)
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


# -- search -------------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from embeddings.config import resolve_catalog_dir
    from embeddings.models import get_spec
    from embeddings.search import make_searcher, open_snapshot

    for model_id in args.models:
        get_spec(model_id)  # an unknown id is a typo: say so before anything else
    image = _query_image(args.image) if args.image is not None else None
    catalogue, indexes = open_snapshot(resolve_catalog_dir(args.catalog), args.models)
    filters = _filters(args.filter)
    _check_filter_values(catalogue, filters)
    searcher = make_searcher(catalogue, model_options=_weights(args.weights), indexes=indexes)
    results, errors = {}, {}
    for model_id in args.models:
        try:
            if args.item is not None:
                results.update(searcher.search_item(args.item, [model_id], args.k, filters=filters))
            elif args.text is not None:
                results.update(searcher.search_text(args.text, [model_id], args.k, filters=filters))
            else:
                results.update(searcher.search_image(image, [model_id], args.k, filters=filters))
        except EmbeddingsError as exc:
            if len(args.models) == 1:
                raise
            errors[model_id] = str(exc)
    _print_results(catalogue, args, results)
    for model_id, message in errors.items():
        print(f"[{model_id}] no answer: {message}", file=sys.stderr)
    return 1 if errors else 0


def _query_image(path: str):
    from embeddings.images import open_rgb

    return open_rgb(path)


def _check_filter_values(catalogue, filters: dict[str, str] | None) -> None:
    """Refuse a filter no product matches, naming the values that exist."""
    if not filters:
        return
    for field_name, value in filters.items():
        if field_name not in catalogue.label_fields:
            raise EmbeddingsError(
                f"--filter {field_name}={value}: catalogue {catalogue.name!r} has no label "
                f"field {field_name!r}; label fields: {', '.join(catalogue.label_fields) or 'none'}"
            )
        if value not in set(catalogue.items[field_name]):
            known = catalogue.label_counts(field_name).index[:12].tolist()
            raise EmbeddingsError(
                f"--filter {field_name}={value}: no product in catalogue {catalogue.name!r} "
                f"has that value; values: {', '.join(map(str, known))}"
            )
    if not catalogue.ids_matching(filters):
        shown = " and ".join(f"{f}={v}" for f, v in filters.items())
        raise EmbeddingsError(
            f"--filter {shown}: no product in catalogue {catalogue.name!r} has all of these"
        )


def _print_results(catalogue, args, results: dict) -> None:
    if args.json:
        rows = {
            m: [{"id": h.id, "score": round(h.score, 6)} for h in hits]
            for m, hits in results.items()
        }
        print(json.dumps(rows[args.models[0]] if len(args.models) == 1 else rows))
        return
    for model_id, hits in results.items():
        print(f"== {model_id}")
        for rank, hit in enumerate(hits, start=1):
            title = catalogue.items.at[hit.id, "title"] if hit.id in catalogue else ""
            print(f"{rank:>4}  {hit.score:.4f}  {hit.id}  {title}")


# -- evaluate, bridge, listings -----------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from embeddings.catalog import Catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.evaluate import evaluate_catalogue, save_results, summary_markdown

    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))

    def progress(done: int, total: int) -> None:
        print(f"evaluated {done}/{total} (model, task) steps", file=sys.stderr)

    result = evaluate_catalogue(
        catalogue, args.models, queries=args.queries, seed=args.seed, progress=progress
    )
    paths = save_results(catalogue, result)
    for model_id, reason in result.manifest["skipped_text"].items():
        print(f"[{model_id}] no text figures: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.rows))
    else:
        print(summary_markdown(result))
        print(f"saved {paths['json']} and {paths['markdown']}")
    return 0


def cmd_bridge(args) -> int:
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.catalog import Catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.locks import build_lock
    from embeddings.models import get_spec
    from embeddings.search import built_models

    directory = resolve_catalog_dir(args.catalog)
    catalogue = Catalogue.open(directory)
    models = args.models or [m for m in built_models(catalogue) if not get_spec(m).has_text]
    if not models:
        raise EmbeddingsError(
            f"catalogue {catalogue.name!r} has no built image-only model to bridge"
        )
    with build_lock(directory):
        for model_id in models:
            if get_spec(model_id).has_text:
                print(f"[{model_id}] has its own text tower: no bridge needed")
                continue
            summary = train_bridge_for_catalogue(
                catalogue, model_id, seed=args.seed, holdout_fraction=args.holdout, force=args.force
            )
            print(
                f"[{model_id}] text bridge: "
                f"{summary or 'no titles in this catalogue: nothing to learn from'}"
            )
    return 0


def cmd_publish(args) -> int:
    from tqdm import tqdm

    from embeddings.catalog import Catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.publish import publish_bundle, size_table

    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    bars: dict[str, tqdm] = {}

    def progress(step: str, done: int, total: int) -> None:
        bar = bars.get(step)
        if bar is None:
            bar = bars[step] = tqdm(total=total, desc=step, dynamic_ncols=True)
        bar.total = total
        bar.update(done - bar.n)

    report = publish_bundle(
        catalogue, args.models, Path(args.out), archive=args.archive, progress=progress
    )
    for bar in bars.values():
        bar.close()
    print(f"bundle {report.folder}: {len(catalogue):,} products, models {', '.join(args.models)}")
    for part, size in size_table(report):
        print(f"  {part:<32} {size / 1e6:>10.1f} MB")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def cmd_models(args) -> int:
    from embeddings.models import list_models

    for spec in list_models():
        text = "text+image" if spec.has_text else "image"
        print(f"{spec.id:<20} {spec.dim:>6}-d  {text:<10} {spec.description}")
    return 0


def cmd_catalogues(args) -> int:
    from embeddings.catalog import Catalogue
    from embeddings.config import data_dir, list_catalogue_dirs
    from embeddings.search import built_models

    root = Path(args.data) if args.data else data_dir()
    found = list_catalogue_dirs(root)
    if not found:
        print(f"no catalogues in {root}; build one with python -m embeddings build --source PATH")
    for directory in found:
        catalogue = Catalogue.open(directory)
        print(
            f"{catalogue.name:<30} {len(catalogue):>7,} products  models: "
            f"{', '.join(built_models(catalogue)) or '-'}"
        )
    return 0


COMMANDS = {
    "build": cmd_build,
    "search": cmd_search,
    "evaluate": cmd_evaluate,
    "bridge": cmd_bridge,
    "publish": cmd_publish,
    "models": cmd_models,
    "catalogues": cmd_catalogues,
}

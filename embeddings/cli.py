"""`python -m embeddings COMMAND`: build, search, evaluate, bridge, export, map, duplicates,
pick-titles, publish, models, catalogues.

The top of the core: it parses options, calls the core and prints; nothing in the core imports
it. Every command prints for people by default; `search --json` and `evaluate --json` print
data. Exit codes: 0 success, 1 some models failed (the others answered or were built), 2 bad
input.
"""

from __future__ import annotations

import argparse
import json
import os
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
    build.add_argument(
        "--bridge-exclude-titles",
        metavar="FILE",
        help="a text file of titles, one per line: no bridge trains on them or on any "
        "product carrying one (how a benchmark's query titles stay unseen)",
    )
    _recipe_option(build)


def _search_parser(commands) -> None:
    search = commands.add_parser("search", help="query a catalogue's indexes")
    search.add_argument(
        "--catalog", required=True, help="catalogue folder (or its name in the data folder)"
    )
    _models_option(
        search,
        required=True,
        help_text="model id(s), comma-separated; A+B fuses two models' rankings "
        "(e.g. efficientnet-lite0+pixels)",
    )
    _query_options(search)
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


def _query_options(search: argparse.ArgumentParser) -> None:
    """The query: a product or an image, words (alone or mixed in), liked/disliked products."""
    query = search.add_argument_group(
        "query",
        "--item or --image (not both), --text, or a mix: --item ID --text 'in red'. "
        "--more-like/--less-like steer any of them.",
    )
    query.add_argument("--item", help="a catalogue product id")
    query.add_argument("--image", help="an image file")
    query.add_argument(
        "--text", help="a description, e.g. 'red running shoes'; with --item/--image: mixed in"
    )
    query.add_argument(
        "--queries",
        metavar="FILE",
        help="a text file with one text query per line: one answer per query, in order "
        "(with --json, one JSON line each); models are loaded once",
    )
    query.add_argument(
        "--text-weight",
        type=float,
        default=None,
        metavar="W",
        help="share of --text when mixed into --item or --image, 0 to 1 "
        "(default 0.6: see the README's measurement)",
    )
    query.add_argument(
        "--more-like",
        action="append",
        default=[],
        metavar="ID",
        help="steer the results towards this product (repeatable)",
    )
    query.add_argument(
        "--less-like",
        action="append",
        default=[],
        metavar="ID",
        help="steer the results away from this product (repeatable)",
    )


def _recipe_option(command: argparse.ArgumentParser) -> None:
    from embeddings.bridge.recipes import DEFAULT_RECIPE, RECIPES

    command.add_argument(
        "--bridge-recipe",
        choices=list(RECIPES),
        default=None,
        help=f"how text bridges are made (default {DEFAULT_RECIPE}): "
        + "; ".join(f"{k}: {v}" for k, v in RECIPES.items()),
    )


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
        type=_model_list,
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


def _publish_parser(commands) -> None:
    publish = commands.add_parser(
        "publish", help="write a read-only bundle of a catalogue, made to be served (and hosted)"
    )
    publish.add_argument("--catalog", required=True, help="the catalogue to publish")
    _models_option(publish, required=True, help_text="the models to serve, comma-separated")
    publish.add_argument("--out", required=True, help="a new folder for the bundle")
    publish.add_argument(
        "--bridges",
        type=_model_list,
        help="the models whose text bridges go in, comma-separated, or 'none' "
        "(default: every published model's)",
    )
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
    _leaderboard_options(evaluate)
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
    _export_parser(commands)
    _map_parser(commands)
    _duplicates_parser(commands)
    bridge.add_argument(
        "--exclude-titles",
        "--bridge-exclude-titles",
        dest="exclude_titles",
        metavar="FILE",
        help="a text file of titles, one per line, kept out of training with their products",
    )
    _recipe_option(bridge)
    _pick_titles_parser(commands)
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
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
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
        bridge_exclude_titles=_excluded_titles(
            args.bridge_exclude_titles, "--bridge-exclude-titles"
        ),
        bridge_recipe=args.bridge_recipe,
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


def _excluded_titles(path: str | None, option: str) -> list[str] | None:
    from embeddings.bridge.exclusion import read_title_file

    return read_title_file(path, option=option) if path else None


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
    from embeddings.fusion import check_model_id
    from embeddings.search import make_searcher, open_snapshot

    # An unknown id is a typo: say so before anything else (a fused id names its unknown part).
    args.models = [check_model_id(model_id) for model_id in args.models]
    _check_query_options(args)
    image = _query_image(args.image) if args.image is not None else None
    texts = read_query_lines(args.queries) if args.queries is not None else None
    catalogue, indexes = open_snapshot(resolve_catalog_dir(args.catalog), args.models)
    filters = _filters(args.filter)
    _check_filter_values(catalogue, filters)
    searcher = make_searcher(catalogue, model_options=_weights(args.weights), indexes=indexes)
    if texts is not None:
        return _search_query_file(catalogue, searcher, args, texts, filters)
    query = _search_query(args, image, catalogue)
    results, errors = {}, {}
    for model_id in args.models:
        try:
            results.update(searcher.search(query, [model_id], args.k, filters=filters))
        except EmbeddingsError as exc:
            if len(args.models) == 1:
                raise
            errors[model_id] = str(exc)
    _print_results(catalogue, args, results)
    for model_id, message in errors.items():
        print(f"[{model_id}] no answer: {message}", file=sys.stderr)
    return 1 if errors else 0


def _check_query_options(args) -> None:
    """Refuse query options that do not make one query, before any index is opened."""
    if args.queries is not None:
        others = {
            "--item": args.item,
            "--image": args.image,
            "--text": args.text,
            "--text-weight": args.text_weight,
            "--more-like": args.more_like or None,
            "--less-like": args.less_like or None,
        }
        given = [name for name, value in others.items() if value is not None]
        if given:
            raise EmbeddingsError(
                f"--queries runs one text query per line; it cannot be combined with "
                f"{', '.join(given)}"
            )
        return
    if args.item is not None and args.image is not None:
        raise EmbeddingsError(
            "--item and --image cannot be combined: a query has one picture (a catalogue "
            "product or an image file); add --text to mix words into either"
        )
    if args.item is None and args.image is None and args.text is None and not args.more_like:
        raise EmbeddingsError(
            "say what to search for: --item ID, --image FILE, --text WORDS (or --more-like ID), "
            "or --queries FILE"
        )
    no_picture = args.item is None and args.image is None
    if args.text_weight is not None and (args.text is None or no_picture):
        raise EmbeddingsError(
            "--text-weight sets the share of --text mixed into --item or --image; "
            "give --text with one of them"
        )


def _search_query(args, image, catalogue):
    """The `Query` the options describe, checked against the catalogue (bad input: exit 2)."""
    from embeddings.query import DEFAULT_TEXT_WEIGHT, Query, check_query, check_text_weight

    named = {"--item": [args.item], "--more-like": args.more_like, "--less-like": args.less_like}
    for option, ids in named.items():
        for item_id in ids:
            if item_id is not None and item_id not in catalogue:
                raise EmbeddingsError(
                    f"{option} {item_id}: no product with id {item_id!r} in catalogue "
                    f"{catalogue.name!r}"
                )
    weight = DEFAULT_TEXT_WEIGHT if args.text_weight is None else args.text_weight
    try:
        weight = check_text_weight(weight)
    except EmbeddingsError as exc:
        raise EmbeddingsError(f"--text-weight: {exc}") from None
    query = Query(
        item=args.item,
        image=image,
        text=args.text,
        text_weight=weight,
        liked=tuple(args.more_like),
        disliked=tuple(args.less_like),
    )
    return check_query(query, catalogue)


def read_query_lines(path: str) -> list[str]:
    """The text queries of a `--queries` file, one per line (trailing blank lines ignored).

    A blank line inside the file, or one over the text length limit, is refused with its line
    number: skipping it would shift every later answer against its query.
    """
    from embeddings.search import MAX_TEXT_CHARS

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EmbeddingsError(f"--queries {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise EmbeddingsError(f"--queries {path}: not UTF-8 text ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise EmbeddingsError(f"--queries {path}: the file has no queries (one text per line)")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise EmbeddingsError(
                f"--queries {path}: line {number} is empty; write one query per line"
            )
        if len(line.strip()) > MAX_TEXT_CHARS:
            raise EmbeddingsError(
                f"--queries {path}: line {number} is {len(line.strip()):,} characters long; "
                f"the limit is {MAX_TEXT_CHARS:,}"
            )
    return [line.strip() for line in lines]


def _search_query_file(catalogue, searcher, args, texts: list[str], filters) -> int:
    """`search --queries FILE`: every model answers every line; one result per line, in order."""
    answers: list[dict] = [{} for _ in texts]
    errors = {}
    for model_id in args.models:
        try:
            for answer, hits in zip(
                answers,
                searcher.search_texts(texts, [model_id], args.k, filters=filters),
                strict=True,
            ):
                answer.update(hits)
        except EmbeddingsError as exc:
            if len(args.models) == 1:
                raise
            errors[model_id] = str(exc)
    for text, answer in zip(texts, answers, strict=True):
        if not args.json:
            print(f"# {text}")
        _print_results(catalogue, args, answer)
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
    if args.models:
        from embeddings.fusion import check_model_id

        args.models = [check_model_id(model_id) for model_id in args.models]
    if args.protocol == "kagl":
        return _evaluate_leaderboard(catalogue, args)

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


def _evaluate_leaderboard(catalogue, args) -> int:
    """`evaluate --protocol kagl`: title and bare-label text queries (`embeddings.leaderboard`)."""
    from embeddings.bridge.exclusion import read_title_file
    from embeddings.leaderboard import evaluate_leaderboard, leaderboard_markdown, save_leaderboard
    from embeddings.search import text_capable_models

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
    result = evaluate_leaderboard(
        catalogue,
        models,
        titles,
        label_fields=args.label_fields,
        progress=lambda done, total, message: print(
            f"[{done + 1}/{total}] {message}", file=sys.stderr
        ),
    )
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
    from embeddings.catalog import Catalogue, create_catalogue
    from embeddings.config import resolve_catalog_dir
    from embeddings.leaderboard import pick_title_queries

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
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.bridge.exclusion import ExcludedTitles
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
    excluded = _excluded_titles(args.exclude_titles, "--exclude-titles")
    fit_options = {"exclude": ExcludedTitles.of(excluded)} if excluded else {}
    if args.bridge_recipe:
        fit_options["recipe"] = args.bridge_recipe
    with build_lock(directory):
        for model_id in models:
            if get_spec(model_id).has_text:
                print(f"[{model_id}] has its own text tower: no bridge needed")
                continue
            summary = train_bridge_for_catalogue(
                catalogue,
                model_id,
                seed=args.seed,
                holdout_fraction=args.holdout,
                force=args.force,
                **fit_options,
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

    bridges = None if args.bridges is None else [m for m in args.bridges if m != "none"]
    report = publish_bundle(
        catalogue,
        args.models,
        Path(args.out),
        archive=args.archive,
        bridges=bridges,
        progress=progress,
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


# -- export -------------------------------------------------------------------------------------
def _export_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export models to ONNX ahead of time (what a server without torch needs)",
    )
    _models_option(
        export,
        required=True,
        help_text="comma-separated model ids (their exports go to $EMBEDDINGS_MODELS)",
    )
    export.add_argument("--weights", action="append", metavar="MODEL=PATH")
    export.add_argument(
        "--bridges",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export the text bridges' sentence encoder (all-MiniLM-L6-v2)",
    )


def cmd_export(args) -> int:
    """Make (or check) the ONNX export of each model: a server with these exports in its
    `$EMBEDDINGS_MODELS` answers every query without torch."""
    from embeddings.bridge.sentences import TEXT_MODEL_ID, sentence_encoder
    from embeddings.models import get_spec, load_model

    options = _weights(args.weights)
    for model_id in args.models:
        if not get_spec(model_id).onnx:
            print(f"[{model_id}] runs on numpy: nothing to export")
            continue
        export = load_model(model_id, **options.get(model_id, {})).export
        drift = ", ".join(
            f"{part} cosine >= {value['min_cosine']:.7f}"
            for part, value in export.manifest["drift"].items()
        )
        print(f"[{model_id}] {export.folder} ({drift})")
    if args.bridges:
        encoder = sentence_encoder()
        print(f"[{TEXT_MODEL_ID}] {encoder.session.path.parent}")


# -- maps and near-duplicates ------------------------------------------------------------------
def _map_parser(commands) -> None:
    maps = commands.add_parser("map", help="compute each model's 2-D map of the catalogue")
    maps.add_argument("--catalog", required=True)
    _models_option(maps, required=False, help_text="default: every built model")
    maps.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="map a stratified sample above this many products (default 50000)",
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


class StepPrinter:
    """A tqdm bar per (model, stage) of a map or duplicate search."""

    def __init__(self):
        self.bars: dict[tuple[str, str], object] = {}

    def __call__(self, step) -> None:
        from tqdm import tqdm

        key = (step.model_id, step.stage)
        bar = self.bars.get(key)
        if bar is None:
            for other in list(self.bars):
                self.bars.pop(other).close()
            bar = self.bars[key] = tqdm(
                total=step.total or None, desc=f"{step.model_id} {step.stage}", dynamic_ncols=True
            )
        bar.total = step.total or bar.total
        bar.set_postfix_str(step.message, refresh=False)
        bar.update(step.done - bar.n)

    def close(self) -> None:
        for key in list(self.bars):
            self.bars.pop(key).close()


def cmd_map(args) -> int:
    from embeddings.config import resolve_catalog_dir
    from embeddings.maps import MAX_POINTS, make_maps
    from embeddings.models import get_spec

    for model_id in args.models or []:
        get_spec(model_id)
    printer = StepPrinter()
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
    from embeddings.duplicates import find_duplicates, products_in_groups
    from embeddings.models import get_spec

    get_spec(args.model)
    printer = StepPrinter()
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


COMMANDS = {
    "export": cmd_export,
    "build": cmd_build,
    "search": cmd_search,
    "evaluate": cmd_evaluate,
    "bridge": cmd_bridge,
    "map": cmd_map,
    "duplicates": cmd_duplicates,
    "pick-titles": cmd_pick_titles,
    "publish": cmd_publish,
    "models": cmd_models,
    "catalogues": cmd_catalogues,
}

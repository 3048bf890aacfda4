"""`search`: item, text, image and mixed queries, steering, and files of text queries."""

from __future__ import annotations

import argparse
import json
import sys

from embeddings.cli.options import (
    add_models_option,
    check_filter_values,
    parse_filters,
    parse_weights,
)
from embeddings.errors import EmbeddingsError


def add_parsers(commands) -> None:
    search = commands.add_parser("search", help="query a catalogue's indexes")
    search.add_argument(
        "--catalog", required=True, help="catalogue folder (or its name in the data folder)"
    )
    add_models_option(
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
    search.add_argument(
        "--hide-duplicates",
        action="store_true",
        help="k different products per model: near-duplicates (at the model's default "
        "threshold, see `duplicates`) fold into the higher-ranked result",
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


def cmd_search(args) -> int:
    from embeddings.config import resolve_catalog_dir
    from embeddings.index.fused import check_model_id
    from embeddings.index.opening import open_snapshot
    from embeddings.search.searcher import make_searcher

    # An unknown id is a typo: say so before anything else (a fused id names its unknown part).
    args.models = [check_model_id(model_id) for model_id in args.models]
    _check_query_options(args)
    image = _query_image(args.image) if args.image is not None else None
    texts = read_query_lines(args.queries) if args.queries is not None else None
    catalogue, indexes = open_snapshot(resolve_catalog_dir(args.catalog), args.models)
    filters = parse_filters(args.filter)
    check_filter_values(catalogue, filters)
    searcher = make_searcher(catalogue, model_options=parse_weights(args.weights), indexes=indexes)
    if texts is not None:
        return _search_query_file(catalogue, searcher, args, texts, filters)
    query = _search_query(args, image, catalogue)
    results, errors = {}, {}
    fold = _fold_thresholds(searcher) if args.hide_duplicates else None
    for model_id in args.models:
        try:
            results.update(searcher.search(query, [model_id], args.k, filters=filters, fold=fold))
        except EmbeddingsError as exc:
            if len(args.models) == 1:
                raise
            errors[model_id] = str(exc)
    _print_results(catalogue, args, results)
    for model_id, message in errors.items():
        print(f"[{model_id}] no answer: {message}", file=sys.stderr)
    return 1 if errors else 0


def _fold_thresholds(searcher):
    """Each model's default near-duplicate threshold, measured on its index when asked."""
    from embeddings.derived.duplicates import default_threshold

    return lambda model_id: default_threshold(searcher.index_loader(model_id)).default


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
    from embeddings.search.query import DEFAULT_TEXT_WEIGHT, Query, check_query, check_text_weight

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

    Lines end at "\n" or "\r\n" only, and a leading BOM is dropped (`embeddings.lines`): a
    query holding U+2028 or a form feed stays one query. A blank line inside the file, or one
    over the text length limit, is refused with its line number: skipping it would shift every
    later answer against its query.
    """
    from embeddings.lines import read_lines
    from embeddings.search.searcher import MAX_TEXT_CHARS

    try:
        lines = read_lines(path)
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


def _print_results(catalogue, args, results: dict) -> None:
    if args.json:
        rows = {m: [_hit_json(h) for h in hits] for m, hits in results.items()}
        print(json.dumps(rows[args.models[0]] if len(args.models) == 1 else rows))
        return
    for model_id, hits in results.items():
        print(f"== {model_id}")
        for rank, hit in enumerate(hits, start=1):
            title = catalogue.items.at[hit.id, "title"] if hit.id in catalogue else ""
            folded = f"  (+{len(hit.folded)} similar)" if hit.folded else ""
            print(f"{rank:>4}  {hit.score:.4f}  {hit.id}  {title}{folded}")


def _hit_json(hit) -> dict:
    row = {"id": hit.id, "score": round(hit.score, 6)}
    if hit.folded:  # only with --hide-duplicates
        row["folded"] = [h.id for h in hit.folded]
    return row


COMMANDS = {"search": cmd_search}

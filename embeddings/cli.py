"""`python -m embeddings build|search|evaluate|models|catalogues`.

Every command prints for people by default; `search --json` and `evaluate --json` print data.
Exit codes: 0 success, 1 some models failed (the others were built), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from embeddings.errors import EmbeddingsError


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
            raise EmbeddingsError(f"--weights {pair!r}: write it as MODEL=PATH, e.g. resnet50=/models/r50.pth")
        options[model_id.strip()] = {"weights": path.strip()}
    return options


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m embeddings", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="scan a catalogue and build an index per model")
    build.add_argument("--source", required=True, help="a dataset folder, or a Kaggle handle owner/dataset")
    build.add_argument("--adapter", choices=["fashion-small", "digikala", "folder"],
                       help="how to read the source (default: detected)")
    build.add_argument("--models", type=_model_list, default=["pixels", "efficientnet-lite0"],
                       help="comma-separated model ids (default: pixels,efficientnet-lite0)")
    build.add_argument("--out", help="catalogue folder (default: <data folder>/<source name>[-limit])")
    build.add_argument("--limit", type=int, help="keep N products, stratified by the main label")
    build.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    build.add_argument("--sidecar", help="folder adapter: CSV adding titles/labels by file name")
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--workers", type=int, default=2, help="image-decoding threads (default 2)")
    build.add_argument("--hnsw-above", type=int, default=None,
                       help="use an HNSW graph above this many products (default 100000)")
    build.add_argument("--float16", action="store_true",
                       help="store vectors as float16: half the disk and half the serving RAM")
    build.add_argument("--backend", choices=["faiss", "milvus"], default=None,
                       help="where the index lives: faiss files in the catalogue (default) or a Milvus "
                            "collection (Milvus Lite in <catalogue>/milvus.db unless --milvus-uri)")
    build.add_argument("--milvus-uri", help="a Milvus server or Zilliz Cloud (http://host:19530), or a "
                                            "Milvus Lite path ending in .db; implies --backend milvus")
    build.add_argument("--milvus-token", help="Milvus token (user:password or API key); default: "
                                              "$MILVUS_TOKEN; never written to disk")
    build.add_argument("--force", action="store_true", help="re-embed everything, ignoring earlier vectors")
    build.add_argument("--weights", action="append", metavar="MODEL=PATH",
                       help="load a model's weights from a local file or folder")
    build.add_argument("--bridge", action=argparse.BooleanOptionalAction, default=True,
                       help="train a text bridge for image-only models when products have titles")

    search = commands.add_parser("search", help="query a catalogue's indexes")
    search.add_argument("--catalog", required=True, help="catalogue folder (or its name in the data folder)")
    search.add_argument("--model", type=_model_list, required=True, help="model id(s), comma-separated")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--item", help="a catalogue product id")
    query.add_argument("--text", help="a description, e.g. 'red running shoes'")
    query.add_argument("--image", help="an image file")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--filter", action="append", metavar="LABEL=VALUE",
                        help="keep only products with this label value, e.g. gender=Women (repeatable)")
    search.add_argument("--json", action="store_true", help='print [{"id", "score"}, ...] (per model if several)')
    search.add_argument("--weights", action="append", metavar="MODEL=PATH")

    evaluate = commands.add_parser("evaluate", help="measure each model's retrieval quality")
    evaluate.add_argument("--catalog", required=True)
    evaluate.add_argument("--models", type=_model_list, help="default: every built model")
    evaluate.add_argument("--queries", type=int, default=1000, help="sampled queries per task (default 1000)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")

    commands.add_parser("models", help="list the model zoo")
    catalogues = commands.add_parser("catalogues", help="list the catalogues in the data folder")
    catalogues.add_argument("--data", help="data folder (default: $EMBEDDINGS_DATA or data/)")
    return top


def resolve_catalog_dir(value: str) -> Path:
    from embeddings.config import data_dir

    path = Path(value).expanduser()
    if path.is_dir() or os.sep in value or value.startswith("."):
        return path
    return data_dir() / value


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
        print("\ninterrupted: finished chunks are kept; run the same command to continue", file=sys.stderr)
        return 130


def describe_os_error(exc: OSError) -> str:
    """A one-line message for a failed write or read: which file, why, and what was kept."""
    import errno

    where = exc.filename or "a file"
    advice = {errno.ENOSPC: "the disk is full; free some space",
              errno.EROFS: "the folder is on a read-only file system; choose another --out",
              errno.EACCES: "permission denied; choose a folder you can write to",
              errno.EDQUOT: "the disk quota is exceeded; free some space"}.get(exc.errno, "check the path")
    return (f"cannot use {where}: {exc.strerror or exc} ({advice}). Indexes built before are unchanged; "
            "finished chunks of this build are kept, so the same command continues after the fix.")


def cmd_build(args) -> int:
    from tqdm import tqdm

    from embeddings.build import build_model_index
    from embeddings.catalog import create_catalogue, default_catalogue_name
    from embeddings.config import data_dir
    from embeddings.errors import ModelLoadError
    from embeddings.index import DEFAULT_HNSW_ABOVE
    from embeddings.models import get_spec, load_model

    for model_id in args.models:
        get_spec(model_id)  # unknown ids fail before any work
    options = _weights(args.weights)
    backend = _backend(args)
    out = Path(args.out) if args.out else data_dir() / default_catalogue_name(args.source, args.limit)
    # Saved only after the first model succeeds: a build that fails for every model leaves the
    # previous catalogue and its indexes loadable.
    catalogue = create_catalogue(args.source, out, adapter=args.adapter, limit=args.limit, seed=args.seed,
                                 sidecar=args.sidecar, write=False)
    info = catalogue.info
    print(f"catalogue {catalogue.directory}: {len(catalogue):,} products ({info['adapter']}), "
          f"labels: {', '.join(catalogue.label_fields) or 'none'}")
    for note in info["recovered"][:5]:
        print(f"  recovered {note['where']}: {note['reason']}")
    if len(info["recovered"]) > 5:
        print(f"  ... and {len(info['recovered']) - 5} more recovered rows (catalog.json lists them all)")
    for note in info["skipped"][:10]:
        print(f"  skipped {note['where']}: {note['reason']}")
    if len(info["skipped"]) > 10:
        print(f"  ... and {len(info['skipped']) - 10} more skipped (catalog.json lists them all)")

    failures: dict[str, str] = {}
    saved = False
    for model_id in args.models:
        try:
            embedder = load_model(model_id, **options.get(model_id, {}))
        except ModelLoadError as exc:
            failures[model_id] = str(exc)
            print(f"[{model_id}] not built: {exc}", file=sys.stderr)
            continue
        bar = tqdm(total=len(catalogue), desc=model_id, unit="img", dynamic_ncols=True)

        def progress(done: int, total: int, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = build_model_index(
                catalogue, embedder, batch_size=args.batch_size, workers=args.workers,
                hnsw_above=args.hnsw_above if args.hnsw_above is not None else DEFAULT_HNSW_ABOVE,
                store_dtype="float16" if args.float16 else "float32", force=args.force, progress=progress,
                backend=backend, milvus_uri=args.milvus_uri, milvus_token=args.milvus_token)
        except (EmbeddingsError, RuntimeError, OSError) as exc:
            # One model failing mid-way (a bad weights file, a full disk) must not cost the others.
            bar.close()
            failures[model_id] = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            print(f"[{model_id}] build failed: {failures[model_id]}", file=sys.stderr)
            continue
        bar.close()
        if not saved:
            catalogue.save()
            saved = True
        manifest = report.manifest
        print(f"[{model_id}] {report.count:,} vectors x {manifest['dim']} ({manifest['index_type']}): "
              f"embedded {report.embedded:,} at {report.items_per_second:.1f} img/s, reused {report.reused:,}")
        for _item_id, reason in report.failed[:10]:
            print(f"  [{model_id}] unreadable image skipped: {reason}")
        if args.bridge and not get_spec(model_id).has_text and catalogue.items["title"].ne("").any():
            _build_bridge(catalogue, model_id, failures)
    if failures:
        print(f"built {len(args.models) - len(failures)} of {len(args.models)} models; failed: "
              f"{', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _build_bridge(catalogue, model_id: str, failures: dict[str, str]) -> None:
    """Train the text bridge for an image-only model (issue 4); skipped quietly if unavailable."""
    try:
        from embeddings.bridge import train_bridge_for_catalogue
    except ImportError:
        return
    try:
        result = train_bridge_for_catalogue(catalogue, model_id)
    except EmbeddingsError as exc:
        print(f"[{model_id}] text bridge not trained: {exc}", file=sys.stderr)
        return
    if result is not None:
        print(f"[{model_id}] text bridge: {result}")


def _backend(args) -> str:
    """The build's backend, checking the Milvus options before any work is done."""
    backend = args.backend or ("milvus" if args.milvus_uri else "faiss")
    if backend == "faiss" and (args.milvus_uri or args.milvus_token):
        raise EmbeddingsError("--milvus-uri/--milvus-token need --backend milvus (or drop --backend faiss)")
    if backend == "milvus" and args.milvus_uri:
        from embeddings.milvus_backend import check_uri

        args.milvus_uri = check_uri(args.milvus_uri)
    return backend


def _filters(pairs: list[str] | None) -> dict[str, str] | None:
    """`--filter LABEL=VALUE` options -> {label: value}."""
    filters = {}
    for pair in pairs or []:
        label, sep, value = pair.partition("=")
        if not sep or not label.strip():
            raise EmbeddingsError(f"--filter {pair!r}: write it as LABEL=VALUE, e.g. gender=Women")
        filters[label.strip()] = value.strip()
    return filters or None


def cmd_search(args) -> int:
    from embeddings.catalog import Catalogue
    from embeddings.images import open_rgb
    from embeddings.search import make_searcher

    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    searcher = make_searcher(catalogue, model_options=_weights(args.weights))
    filters = _filters(args.filter)
    if args.item is not None:
        results = searcher.search_item(args.item, args.model, args.k, filters=filters)
    elif args.text is not None:
        results = searcher.search_text(args.text, args.model, args.k, filters=filters)
    else:
        results = searcher.search_image(open_rgb(args.image), args.model, args.k, filters=filters)
    if args.json:
        rows = {m: [{"id": h.id, "score": round(h.score, 6)} for h in hits] for m, hits in results.items()}
        print(json.dumps(rows[args.model[0]] if len(args.model) == 1 else rows))
        return 0
    for model_id, hits in results.items():
        print(f"== {model_id}")
        for rank, hit in enumerate(hits, start=1):
            title = catalogue.items.at[hit.id, "title"] if hit.id in catalogue else ""
            print(f"{rank:>4}  {hit.score:.4f}  {hit.id}  {title}")
    return 0


def cmd_evaluate(args) -> int:
    try:
        from embeddings.evaluate import run_cli
    except ImportError:
        raise EmbeddingsError("evaluation is not available in this version") from None
    return run_cli(args)


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
        print(f"{catalogue.name:<30} {len(catalogue):>7,} products  models: {', '.join(built_models(catalogue)) or '-'}")
    return 0


COMMANDS = {"build": cmd_build, "search": cmd_search, "evaluate": cmd_evaluate, "models": cmd_models,
            "catalogues": cmd_catalogues}

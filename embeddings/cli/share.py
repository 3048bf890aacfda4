"""`export`, `publish`, `models` and `catalogues`: what a server needs, and what is here."""

from __future__ import annotations

import argparse
from pathlib import Path

from embeddings.cli.options import add_models_option, parse_model_list, parse_weights
from embeddings.cli.progress import ProgressBars


def add_parsers(commands) -> None:
    _export_parser(commands)
    _publish_parser(commands)
    commands.add_parser("models", help="list the model zoo")
    catalogues = commands.add_parser("catalogues", help="list the catalogues in the data folder")
    catalogues.add_argument("--data", help="data folder (default: $EMBEDDINGS_DATA or data/)")


def _export_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export models to ONNX ahead of time (what a server without torch needs)",
    )
    add_models_option(
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

    options = parse_weights(args.weights)
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


def _publish_parser(commands) -> None:
    publish = commands.add_parser(
        "publish", help="write a read-only bundle of a catalogue, made to be served (and hosted)"
    )
    publish.add_argument("--catalog", required=True, help="the catalogue to publish")
    add_models_option(publish, required=True, help_text="the models to serve, comma-separated")
    publish.add_argument("--out", required=True, help="a new folder for the bundle")
    publish.add_argument(
        "--bridges",
        type=parse_model_list,
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


def cmd_publish(args) -> int:
    from embeddings.bundle.publish import publish_bundle, size_table
    from embeddings.catalogue import Catalogue
    from embeddings.config import resolve_catalog_dir

    catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
    bars = ProgressBars()
    bridges = None if args.bridges is None else [m for m in args.bridges if m != "none"]
    report = publish_bundle(
        catalogue,
        args.models,
        Path(args.out),
        archive=args.archive,
        bridges=bridges,
        progress=bars,
    )
    bars.close()
    print(f"bundle {report.folder}: {len(catalogue):,} products, models {', '.join(args.models)}")
    for part, size in size_table(report):
        print(f"  {part:<32} {size / 1e6:>10.1f} MB")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def cmd_models(args) -> int:
    """The built-in models, then the presets with their facts and whether they are here."""
    from embeddings.models import list_models
    from embeddings.models.family import cache_status
    from embeddings.models.presets import PRESETS

    for spec in list_models():
        text = "text+image" if spec.has_text else "image"
        print(f"{spec.id:<22} {spec.dim:>5}-d  {text:<10} {spec.description}")
    print("\npresets (python -m embeddings build --models ID):")
    for preset in PRESETS:
        text = "text+image" if preset.has_text else "image"
        print(
            f"{preset.id:<22} {preset.dim:>5}-d  {text:<10} {preset.input_size} px  "
            f"{preset.licence:<10} {cache_status(preset.id):<20} {preset.family_id}"
        )
    print(
        "\nany other model by its family: hf:REPO_OR_FOLDER, open_clip:ARCH/PRETRAINED, "
        "open_clip:hf-hub:REPO, open_clip:local-dir:FOLDER, timm:NAME, timm:hf-hub:REPO, "
        "timm:local-dir:FOLDER (and --weights ID=PATH for a local copy)"
    )
    return 0


def cmd_catalogues(args) -> int:
    from embeddings.catalogue import Catalogue
    from embeddings.config import data_dir, list_catalogue_dirs
    from embeddings.index.opening import built_models

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
    "export": cmd_export,
    "publish": cmd_publish,
    "models": cmd_models,
    "catalogues": cmd_catalogues,
}

"""Option parsing shared by the commands: model lists, weights, label filters, recipes."""

from __future__ import annotations

import argparse

from embeddings.errors import EmbeddingsError


def parse_model_list(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("name at least one model, e.g. pixels,efficientnet-lite0")
    return models


def parse_weights(pairs: list[str] | None) -> dict[str, dict]:
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


def parse_filters(pairs: list[str] | None) -> dict[str, str] | None:
    """`--filter LABEL=VALUE` options -> {label: value}."""
    filters = {}
    for pair in pairs or []:
        label, sep, value = pair.partition("=")
        if not sep or not label.strip():
            raise EmbeddingsError(f"--filter {pair!r}: write it as LABEL=VALUE, e.g. gender=Women")
        filters[label.strip()] = value.strip()
    return filters or None


def add_models_option(command: argparse.ArgumentParser, *, required: bool, help_text: str) -> None:
    """`--models` (and its older spelling `--model`): comma-separated model ids."""
    command.add_argument(
        "--models",
        "--model",
        dest="models",
        type=parse_model_list,
        required=required,
        help=help_text,
    )


def add_recipe_option(command: argparse.ArgumentParser) -> None:
    from embeddings.bridge.recipes import DEFAULT_RECIPE, RECIPES

    command.add_argument(
        "--bridge-recipe",
        choices=list(RECIPES),
        default=None,
        help="how text bridges are made, a catalogue setting (default: the catalogue's, else "
        f"{DEFAULT_RECIPE}): " + "; ".join(f"{k}: {v}" for k, v in RECIPES.items()),
    )


def read_excluded_titles(path: str | None, option: str) -> list[str] | None:
    from embeddings.bridge.exclusion import read_title_file

    return read_title_file(path, option=option) if path else None


def add_exclusion_options(command: argparse.ArgumentParser, *names: str) -> None:
    """`--bridge-exclude-titles FILE` (the catalogue's setting, replaced) and its opposite."""
    command.add_argument(
        *names,
        dest="exclude_titles",
        metavar="FILE",
        help="a text file of titles, one per line: no bridge trains on them or on any product "
        "carrying one (how a benchmark's query titles stay unseen). A catalogue setting: "
        "recorded in catalog.json and kept by every later build until replaced",
    )
    command.add_argument(
        "--no-bridge-exclude-titles",
        dest="keep_all_titles",
        action="store_true",
        help="clear the catalogue's titles kept out of bridge training",
    )


def excluded_titles_request(args, option: str) -> dict:
    """`BuildRequest` fields for the exclusion options: the titles and the file's name (None:
    keep the catalogue's setting; []: clear it)."""
    from pathlib import Path

    if args.exclude_titles and args.keep_all_titles:
        raise EmbeddingsError(f"{option} and --no-bridge-exclude-titles contradict each other")
    if args.keep_all_titles:
        return {"bridge_exclude_titles": [], "bridge_exclude_origin": None}
    titles = read_excluded_titles(args.exclude_titles, option)
    origin = Path(args.exclude_titles).name if titles else None
    return {"bridge_exclude_titles": titles, "bridge_exclude_origin": origin}


def check_filter_values(catalogue, filters: dict[str, str] | None) -> None:
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

"""The Catalogue page: what is built, building what is missing, and adding catalogues.

Building goes through the core's one build path (`embeddings.building.catalogue.build_catalogue`,
the same as the CLI's): this page only passes a progress callback that draws a bar per model.
Builds are resumable (finished chunks are kept on disk), so leaving the page mid-build loses
nothing: the next build continues where it stopped. The core's build lock keeps two sessions (or
a session and a CLI build) from building the same catalogue at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from app_support import resources
from app_support.build_runs import build_request, outcome_lines, run_build_ui
from app_support.bundle_ui import bundle_overview_ui
from app_support.model_picker_ui import model_picker_ui
from app_support.sidebar import Selection, escape_markdown
from embeddings.bridge.settings import BridgeSettings, catalogue_settings
from embeddings.building.query_titles import TITLE_SHARE
from embeddings.catalogue import Catalogue
from embeddings.config import REPO_ROOT, data_dir
from embeddings.errors import CatalogueError, EmbeddingsError
from embeddings.index.store import read_manifest
from embeddings.models import get_spec, list_models

DEMO_HANDLE = "paramaggarwal/fashion-product-images-small"
DEMO_LIMIT = 3000
DEFAULT_BUILD_MODELS = ["pixels", "efficientnet-lite0"]
#: `EMBEDDINGS_DEMO_SOURCE`: where the demo dataset is on this machine (else looked for, else
#: Kaggle).
DEMO_SOURCE_ENV = "EMBEDDINGS_DEMO_SOURCE"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def demo_source() -> str:
    """A local copy of the demo dataset if one is found, else its Kaggle handle (downloads)."""
    candidates = [
        os.environ.get(DEMO_SOURCE_ENV, ""),
        str(REPO_ROOT.parent / "shared" / "datasets" / "fashion-product-images-small"),
        str(data_dir() / "fashion-product-images-small"),
    ]
    kaggle_cache = Path.home() / ".cache" / "kagglehub" / "datasets" / DEMO_HANDLE / "versions"
    if kaggle_cache.is_dir():
        candidates += [str(p) for p in sorted(kaggle_cache.iterdir(), reverse=True)]
    for candidate in candidates:
        if candidate and (
            (Path(candidate) / "styles.csv").is_file()
            or (Path(candidate) / "myntradataset" / "styles.csv").is_file()
        ):
            return candidate
    return DEMO_HANDLE


def check_catalogue_name(name: str) -> str:
    """A catalogue's folder name: letters, digits, '.', '_' or '-', at most 64, not hidden."""
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name):
        raise CatalogueError(
            f"“{name}” cannot name a catalogue: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def built_table(cat: Catalogue) -> pd.DataFrame:
    """One row per built model: what the index holds and how it was made (from its manifest)."""
    text = resources.text_capable(cat)
    rows = []
    for model_id in resources.built_models(cat):
        manifest = read_manifest(cat.model_dir(model_id)) or {}
        current = manifest.get("catalogue_fingerprint") == cat.fingerprint
        rows.append(
            {
                "model": model_id,
                "text queries": {"native": "own text tower", "bridge": "text bridge"}.get(
                    text.get(model_id), "—"
                ),
                "vectors": manifest.get("count"),
                "dim": manifest.get("dim"),
                "index": manifest.get("index_type"),
                "size (MB)": round(_folder_bytes(cat.model_dir(model_id)) / 1e6, 1),
                "build (s)": manifest.get("build_seconds"),
                "built at (UTC)": manifest.get("built_at"),
                "weights": manifest.get("weights_id"),
                "unreadable images": len(manifest.get("failed", [])),
                "state": "ready" if current else "stale: products changed, rebuild",
            }
        )
    return pd.DataFrame(rows)


def create_and_build_ui(
    source: str,
    name: str,
    *,
    adapter: str | None,
    limit: int | None,
    models: list[str],
    bridges: bool,
    bridge_recipe: str | None = None,
    kagl: bool = False,
):
    """Scan `source` into a new catalogue `name` and build its models, showing each step
    (`kagl`: also set up and measure the fashion leaderboard protocol, see `build.query_titles`)."""
    with st.status(f"Building catalogue “{name}”…", expanded=True) as status:
        try:
            name = check_catalogue_name(name)
        except EmbeddingsError as exc:
            status.update(label="The catalogue could not be created", state="error")
            st.error(str(exc))
            return None
        result = run_build_ui(
            build_request(
                data_dir() / name,
                source=source,
                adapter=adapter,
                limit=limit,
                models=models,
                bridges=bridges,
                bridge_recipe=bridge_recipe,
                kagl=kagl and bridges,
                new_catalogue=True,
            )
        )
        if result is None:
            status.update(label="The catalogue could not be created", state="error")
            return None
        notes, failed = outcome_lines(result)
        for note in notes:
            st.write(note)
        for model_id, reason in failed.items():
            st.warning(f"{model_id} was not built: {reason}")
        status.update(
            label=f"Catalogue “{name}”: {len(result.succeeded)} of {len(models)} models built",
            state="complete" if result.committed else "error",
        )
    return result


def _models_picker(key: str, default: list[str]) -> list[str]:
    ids = [spec.id for spec in list_models()]
    return st.multiselect(
        "Models to build",
        ids,
        default=[m for m in default if m in ids],
        key=key,
        format_func=lambda m: f"{m} · {get_spec(m).dim}-d",
        help="pixels, colour and efficientnet-lite0 work offline (no weights, or weights that "
        "ship with the packages); the others download their weights on first use, so they "
        "need network. A model that cannot load is skipped and reported.",
    )


def bridge_recipe_picker(key: str, *, disabled: bool = False, current: str | None = None) -> str:
    """How text bridges are made (`embeddings.bridge.recipes`): the catalogue's `current`
    recipe first (so building more models keeps its setting), else the default."""
    from embeddings.bridge.recipes import DEFAULT_RECIPE, RECIPES

    first = current if current in RECIPES else DEFAULT_RECIPE
    names = [first, *[r for r in RECIPES if r != first]]
    return st.selectbox(
        "Text bridge recipe",
        names,
        key=key,
        disabled=disabled,
        format_func=lambda r: f"{r}: {RECIPES[r]}",
        width=420,
    )


def _finish(result) -> None:
    """After a successful build, go to Search on the new catalogue (with a summary there)."""
    if result is None or not result.committed:
        return
    cat = result.catalogue
    st.session_state["flash"] = (
        f"Catalogue “{cat.name}” is ready: {len(cat):,} products, "
        f"models {', '.join(result.succeeded)}."
    )
    if result.failed:
        st.session_state["flash_warning"] = "Not built: " + "; ".join(
            f"{o.model_id} ({o.message})" for o in result.failed
        )
    st.switch_page("app_pages/search.py", query_params={"catalog": cat.name})


def new_catalogue_ui(*, first_run: bool) -> None:
    """Two ways to add a catalogue: the demo fashion set, or a local folder of images."""
    demo_tab, folder_tab = st.tabs(["Demo: fashion products", "From a folder of images"])
    with demo_tab:
        _demo_tab()
    with folder_tab:
        _folder_tab()
    if first_run:
        st.caption(
            f"Catalogues are saved under {data_dir()} (set EMBEDDINGS_DATA to use another folder)."
        )


def _demo_tab() -> None:
    """The demo fashion set: a stratified subset, with the leaderboard protocol set up."""
    source = demo_source()
    st.markdown(
        "The [Fashion Product Images (Small)](https://www.kaggle.com/datasets/paramaggarwal/"
        "fashion-product-images-small) dataset: 44,441 product photos with titles and labels "
        "(gender, category, article type, colour…). The demo takes a **stratified subset**: "
        "every article type keeps its share."
    )
    st.text_input(
        "Dataset folder or Kaggle handle",
        value=source,
        key="demo_source",
        help="Found on this machine when it exists (set EMBEDDINGS_DEMO_SOURCE to point at "
        "it); a Kaggle handle downloads it with kagglehub (needs network and "
        "Kaggle credentials).",
    )
    limit = st.number_input(
        "Products",
        min_value=100,
        max_value=50_000,
        value=DEMO_LIMIT,
        step=500,
        key="demo_limit",
    )
    models = _models_picker("demo_models", DEFAULT_BUILD_MODELS)
    bridges = st.checkbox(
        "Train text bridges (text search for image-only models)", value=True, key="demo_bridges"
    )
    recipe = bridge_recipe_picker("demo_recipe", disabled=not bridges)
    kagl = st.checkbox(
        "Measure text search on the fashion leaderboard protocol",
        value=True,
        key="demo_kagl",
        disabled=not bridges,
        help=f"Picks {TITLE_SHARE:.0%} of the catalogue's distinct titles (seed 0) as the "
        "protocol's title queries, keeps them out of the bridges' training (a catalogue "
        "setting: later builds keep them out too), and measures after the build: the Compare "
        "page then shows the figures beside the public fashion CLIPs. Takes a minute more.",
    )
    name = st.text_input("Catalogue name", value=f"fashion-{int(limit)}", key="demo_name")
    if st.button("Build the demo catalogue", type="primary", key="demo_build", disabled=not models):
        _finish(
            create_and_build_ui(
                st.session_state["demo_source"].strip(),
                name,
                adapter=None,
                limit=int(limit),
                models=models,
                bridges=bridges,
                bridge_recipe=recipe,
                kagl=kagl,
            )
        )


def _folder_tab() -> None:
    """A folder of images on the server."""
    st.markdown(
        "Any folder of images: each image's parent folder becomes its label, and a "
        "`metadata.csv` (columns `file`, `title`, and any labels) adds titles and labels."
    )
    path = st.text_input("Folder on the server", key="folder_source", placeholder="/data/my-shop")
    adapter = st.selectbox(
        "Layout", ["detect", "folder", "fashion-small", "digikala"], key="folder_adapter"
    )
    limit = st.number_input("Products (0: all)", min_value=0, value=0, step=500, key="folder_limit")
    models = _models_picker("folder_models", DEFAULT_BUILD_MODELS)
    bridges = st.checkbox(
        "Train text bridges (when products have titles)", value=True, key="folder_bridges"
    )
    recipe = bridge_recipe_picker("folder_recipe", disabled=not bridges)
    default_name = Path(path.strip().rstrip("/")).name if path.strip() else ""
    name = st.text_input("Catalogue name", value=default_name, key="folder_name")
    if st.button(
        "Build from this folder",
        type="primary",
        key="folder_build",
        disabled=not (path and models),
    ):
        if not Path(path.strip()).expanduser().is_dir():
            st.error(f"{path}: no such folder on the server.")
        else:
            _finish(
                create_and_build_ui(
                    path.strip(),
                    name or default_name,
                    adapter=None if adapter == "detect" else adapter,
                    limit=int(limit) or None,
                    models=models,
                    bridges=bridges,
                    bridge_recipe=recipe,
                )
            )


def overview_ui(cat: Catalogue) -> None:
    info = cat.info
    st.subheader(escape_markdown(cat.name))
    columns = st.columns(4)
    columns[0].metric("Products", f"{len(cat):,}")
    columns[1].metric("Label fields", len(cat.label_fields))
    columns[2].metric("Models built", len(resources.built_models(cat)))
    columns[3].metric("Rows skipped", f"{len(info.get('skipped', [])):,}")
    st.caption(
        f"Source: {info.get('source')} ({info.get('adapter')}) · images in {cat.root} · "
        f"labels: {', '.join(cat.label_fields) or 'none'} · main label: {cat.main_label or 'none'}"
    )
    bridge_settings_ui(cat)
    skipped = info.get("skipped", [])
    if skipped:
        with st.expander(f"{len(skipped):,} rows or files were left out"):
            st.dataframe(pd.DataFrame(skipped[:500]), width="stretch", hide_index=True)


def bridge_settings_ui(cat: Catalogue) -> None:
    """The catalogue's bridge settings (`embeddings.bridge.settings`): every build keeps them."""
    settings = catalogue_settings(cat)
    recorded = BridgeSettings.recorded(cat.info) is not None
    st.caption(
        f"Text bridge settings (kept by every build until changed): "
        f"{escape_markdown(settings.describe())}"
        + ("" if recorded else " (taken from the bridges; recorded at the next build)")
    )
    if settings.exclude:
        with st.expander(f"The {len(settings.exclude):,} titles no bridge trains on"):
            st.caption(
                "Text queries with these titles measure what a bridge learnt without seeing "
                "them (the fashion leaderboard protocol's title queries). Replace them with "
                "`python -m embeddings build --catalog DIR --bridge-exclude-titles FILE`, or "
                "clear them with `--no-bridge-exclude-titles`."
            )
            st.dataframe(
                pd.DataFrame({"title": list(settings.exclude.titles)}),
                width="stretch",
                hide_index=True,
                height=220,
            )


def build_missing_ui(cat: Catalogue, built: list[str]) -> None:
    missing = [spec.id for spec in list_models() if spec.id not in built]
    if not missing:
        st.caption("Every model in the zoo has an index here.")
        return
    st.markdown("**Build more models**")
    chosen = st.multiselect(
        "Models without an index here",
        missing,
        key="missing_models",
        format_func=lambda m: f"{m} — {get_spec(m).description}",
    )
    bridges = st.checkbox(
        "Train text bridges for image-only models", value=True, key="missing_bridges"
    )
    recipe = bridge_recipe_picker(
        "missing_recipe", disabled=not bridges, current=catalogue_settings(cat).recipe
    )
    st.caption(
        "Leaving the page stops a build; the finished chunks are kept and the next build resumes."
    )
    if st.button("Build", type="primary", key="build_missing", disabled=not chosen):
        result = run_build_ui(
            build_request(cat.directory, models=chosen, bridges=bridges, bridge_recipe=recipe)
        )
        if result is None:
            return
        notes, failed = outcome_lines(result)
        for change in result.settings_changes:
            st.info(f"Catalogue setting changed: {change}")
        for note in notes:
            st.success(note)
        for model_id, reason in failed.items():
            st.error(f"{model_id} was not built: {reason}")
        if result.committed:
            st.button("Show the new models", key="refresh_after_build")


READ_ONLY_NOTE = (
    "This server is read-only ({env}=1): catalogues are built with "
    "`python -m embeddings build --source PATH` on the server, then appear here."
)


BUNDLE_NOTE = (
    "This app serves a published bundle: read-only, nothing is built or measured here. A new "
    "bundle is made with `python -m embeddings publish` where the catalogue is built."
)


def catalogue_page(selection: Selection) -> None:
    st.title("Catalogue")
    read_only = resources.read_only()
    if not selection.catalogues and read_only:
        st.info("There is no catalogue yet. " + READ_ONLY_NOTE.format(env=resources.READ_ONLY_ENV))
        return
    if not selection.catalogues:
        st.markdown(
            "### Welcome\nThis app searches a catalogue of product photos by similarity and shows "
            "several embedding models **side by side**: raw pixels, ImageNet CNNs, SimCLR, CLIP. "
            "There is no catalogue yet: build the demo one (a few thousand fashion products, a few "
            "minutes on a laptop CPU) or one from your own folder of images. When it is ready, the "
            "app opens the Search page."
        )
        new_catalogue_ui(first_run=True)
        return
    cat = selection.catalogue
    served = resources.opened_bundle()
    if cat is None:
        st.error(selection.error or "The catalogue could not be opened.")
    else:
        overview_ui(cat)
        if served is not None:
            bundle_overview_ui(served)
        table = built_table(cat)
        st.markdown("**Indexes**")
        if table.empty:
            st.info("No model has an index here yet.")
        else:
            st.dataframe(table, width="stretch", hide_index=True)
        if not read_only:
            build_missing_ui(cat, selection.built)
            model_picker_ui(cat, selection.built)
    if read_only:
        st.caption(
            BUNDLE_NOTE
            if served is not None
            else READ_ONLY_NOTE.format(env=resources.READ_ONLY_ENV)
        )
        return
    st.divider()
    with st.expander("Add a catalogue"):
        new_catalogue_ui(first_run=False)

"""The Catalogue page: what is built, building what is missing, and adding catalogues.

Building runs in the page's own script run, with a progress bar per model. Builds are resumable
(finished chunks are kept on disk), so leaving the page mid-build loses nothing: the next build
of the same model continues where it stopped. One lock per catalogue and model keeps two
sessions from building the same index at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from app_support import resources
from app_support.sidebar import Selection, escape_markdown
from embeddings.catalog import Catalogue
from embeddings.config import REPO_ROOT, data_dir
from embeddings.errors import CatalogueError, EmbeddingsError, ModelLoadError
from embeddings.index import read_manifest
from embeddings.models import get_spec, list_models

DEMO_HANDLE = "paramaggarwal/fashion-product-images-small"
DEMO_LIMIT = 3000
DEFAULT_BUILD_MODELS = ["pixels", "efficientnet-lite0"]
#: `EMBEDDINGS_DEMO_SOURCE`: where the demo dataset is on this machine (else looked for, else Kaggle).
DEMO_SOURCE_ENV = "EMBEDDINGS_DEMO_SOURCE"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def demo_source() -> str:
    """A local copy of the demo dataset if one is found, else its Kaggle handle (downloads)."""
    candidates = [os.environ.get(DEMO_SOURCE_ENV, ""),
                  str(REPO_ROOT.parent / "shared" / "datasets" / "fashion-product-images-small"),
                  str(data_dir() / "fashion-product-images-small")]
    kaggle_cache = Path.home() / ".cache" / "kagglehub" / "datasets" / DEMO_HANDLE / "versions"
    if kaggle_cache.is_dir():
        candidates += [str(p) for p in sorted(kaggle_cache.iterdir(), reverse=True)]
    for candidate in candidates:
        if candidate and ((Path(candidate) / "styles.csv").is_file()
                          or (Path(candidate) / "myntradataset" / "styles.csv").is_file()):
            return candidate
    return DEMO_HANDLE


def check_catalogue_name(name: str) -> str:
    """A catalogue's folder name: letters, digits, '.', '_' or '-', at most 64, not hidden."""
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name):
        raise CatalogueError(f"“{name}” cannot name a catalogue: use 1 to 64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit.")
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
        rows.append({
            "model": model_id,
            "text queries": {"native": "own text tower", "bridge": "text bridge"}.get(text.get(model_id), "—"),
            "vectors": manifest.get("count"),
            "dim": manifest.get("dim"),
            "index": manifest.get("index_type"),
            "size (MB)": round(_folder_bytes(cat.model_dir(model_id)) / 1e6, 1),
            "build (s)": manifest.get("build_seconds"),
            "built at (UTC)": manifest.get("built_at"),
            "weights": manifest.get("weights_id"),
            "unreadable images": len(manifest.get("failed", [])),
            "state": "ready" if current else "stale: products changed, rebuild",
        })
    return pd.DataFrame(rows)


# -- building --------------------------------------------------------------------------------
@dataclass
class BuildOutcome:
    built: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _train_bridge(cat: Catalogue, model_id: str, outcome: BuildOutcome) -> None:
    try:
        from embeddings.bridge import train_bridge_for_catalogue
    except ImportError:
        return
    with st.spinner(f"Training the text bridge of {model_id} on the product titles…"):
        try:
            summary = train_bridge_for_catalogue(cat, model_id)
        except EmbeddingsError as exc:
            outcome.notes.append(f"{model_id}: text bridge not trained ({exc})")
            return
    if summary:
        outcome.notes.append(f"{model_id}: text bridge: {summary}")


def build_models_ui(cat: Catalogue, models: list[str], *, bridges: bool) -> BuildOutcome:
    """Build (or complete) each model's index with a progress bar; failures are collected, not raised."""
    from embeddings.build import build_model_index
    from embeddings.models import load_model

    outcome = BuildOutcome()
    has_titles = cat.items["title"].ne("").any()
    for model_id in models:
        lock = resources.build_lock(str(cat.directory), model_id)
        if not lock.acquire(blocking=False):
            outcome.failed[model_id] = "another session is building it right now; try again when it is done"
            continue
        try:
            bar = st.progress(0.0, text=f"{model_id}: loading the model…")
            try:
                embedder = load_model(model_id, **resources.weights_options().get(model_id, {}))
            except ModelLoadError as exc:
                bar.empty()
                outcome.failed[model_id] = str(exc)
                continue

            def progress(done: int, total: int, bar=bar, model_id=model_id) -> None:
                bar.progress(done / total if total else 1.0, text=f"{model_id}: {done:,} / {total:,} images")

            report = build_model_index(cat, embedder, progress=progress)
            bar.progress(1.0, text=f"{model_id}: {report.count:,} vectors")
            outcome.built.append(model_id)
            outcome.notes.append(f"{model_id}: {report.count:,} vectors, {report.embedded:,} embedded at "
                                 f"{report.items_per_second:.0f} images/s, {report.reused:,} reused, "
                                 f"{len(report.failed)} unreadable")
            if bridges and has_titles and not get_spec(model_id).has_text:
                _train_bridge(cat, model_id, outcome)
        finally:
            lock.release()
    return outcome


def create_and_build_ui(source: str, name: str, *, adapter: str | None, limit: int | None,
                        models: list[str], bridges: bool) -> tuple[Catalogue | None, BuildOutcome | None]:
    """Scan `source` into catalogue `name` and build its models, showing each step."""
    from embeddings.catalog import create_catalogue

    with st.status(f"Building catalogue “{name}”…", expanded=True) as status:
        try:
            check_catalogue_name(name)
            st.write(f"Reading {source}…")
            cat = create_catalogue(source, data_dir() / name, adapter=adapter, limit=limit)
        except EmbeddingsError as exc:
            status.update(label="The catalogue could not be created", state="error")
            st.error(str(exc))
            return None, None
        st.write(f"{len(cat):,} products ({cat.info['adapter']}); labels: {', '.join(cat.label_fields) or 'none'}; "
                 f"{len(cat.info['skipped']):,} rows skipped.")
        outcome = build_models_ui(cat, models, bridges=bridges)
        for note in outcome.notes:
            st.write(note)
        for model_id, reason in outcome.failed.items():
            st.warning(f"{model_id} was not built: {reason}")
        state = "complete" if outcome.built else "error"
        status.update(label=f"Catalogue “{name}”: {len(outcome.built)} of {len(models)} models built", state=state)
    return cat, outcome


def _models_picker(key: str, default: list[str]) -> list[str]:
    ids = [spec.id for spec in list_models()]
    return st.multiselect("Models to build", ids, default=[m for m in default if m in ids], key=key,
                          format_func=lambda m: f"{m} · {get_spec(m).dim}-d",
                          help="pixels and efficientnet-lite0 work offline (their weights ship with the "
                               "packages); the others download their weights on first use, so they need network. "
                               "A model that cannot load is skipped and reported.")


def _bridge_available() -> bool:
    try:
        import embeddings.bridge  # noqa: F401
    except ImportError:
        return False
    return True


def _finish(cat: Catalogue | None, outcome: BuildOutcome | None) -> None:
    """After a successful build, go to Search on the new catalogue (with a summary there)."""
    if cat is None or outcome is None or not outcome.built:
        return
    st.session_state["flash"] = (f"Catalogue “{cat.name}” is ready: {len(cat):,} products, "
                                 f"models {', '.join(outcome.built)}.")
    st.switch_page("pages/search.py", query_params={"catalog": cat.name})


def new_catalogue_ui(*, first_run: bool) -> None:
    """Two ways to add a catalogue: the demo fashion set, or a local folder of images."""
    demo_tab, folder_tab = st.tabs(["Demo: fashion products", "From a folder of images"])
    with demo_tab:
        source = demo_source()
        st.markdown(
            "The [Fashion Product Images (Small)](https://www.kaggle.com/datasets/paramaggarwal/"
            "fashion-product-images-small) dataset: 44,441 product photos with titles and labels (gender, "
            "category, article type, colour…). The demo takes a **stratified subset**: every article type "
            "keeps its share.")
        st.text_input("Dataset folder or Kaggle handle", value=source, key="demo_source",
                      help="Found on this machine when it exists (set EMBEDDINGS_DEMO_SOURCE to point at it); "
                           "a Kaggle handle downloads it with kagglehub (needs network and Kaggle credentials).")
        limit = st.number_input("Products", min_value=100, max_value=50_000, value=DEMO_LIMIT, step=500, key="demo_limit")
        models = _models_picker("demo_models", DEFAULT_BUILD_MODELS)
        bridges = st.checkbox("Train text bridges (text search for image-only models)", value=_bridge_available(),
                              key="demo_bridges", disabled=not _bridge_available())
        name = st.text_input("Catalogue name", value=f"fashion-{int(limit)}", key="demo_name")
        if st.button("Build the demo catalogue", type="primary", key="demo_build", disabled=not models):
            _finish(*create_and_build_ui(st.session_state["demo_source"].strip(), name, adapter=None,
                                         limit=int(limit), models=models, bridges=bridges))
    with folder_tab:
        st.markdown("Any folder of images: each image's parent folder becomes its label, and a "
                    "`metadata.csv` (columns `file`, `title`, and any labels) adds titles and labels.")
        path = st.text_input("Folder on the server", key="folder_source", placeholder="/data/my-shop")
        adapter = st.selectbox("Layout", ["detect", "folder", "fashion-small", "digikala"], key="folder_adapter")
        limit = st.number_input("Products (0: all)", min_value=0, value=0, step=500, key="folder_limit")
        models = _models_picker("folder_models", DEFAULT_BUILD_MODELS)
        bridges = st.checkbox("Train text bridges (when products have titles)", value=_bridge_available(),
                              key="folder_bridges", disabled=not _bridge_available())
        default_name = Path(path.strip().rstrip("/")).name if path.strip() else ""
        name = st.text_input("Catalogue name", value=default_name, key="folder_name")
        if st.button("Build from this folder", type="primary", key="folder_build", disabled=not (path and models)):
            if not Path(path.strip()).expanduser().is_dir():
                st.error(f"{path}: no such folder on the server.")
            else:
                _finish(*create_and_build_ui(path.strip(), name or default_name,
                                             adapter=None if adapter == "detect" else adapter,
                                             limit=int(limit) or None, models=models, bridges=bridges))
    if first_run:
        st.caption(f"Catalogues are saved under {data_dir()} (set EMBEDDINGS_DATA to use another folder).")


def overview_ui(cat: Catalogue) -> None:
    info = cat.info
    st.subheader(escape_markdown(cat.name))
    columns = st.columns(4)
    columns[0].metric("Products", f"{len(cat):,}")
    columns[1].metric("Label fields", len(cat.label_fields))
    columns[2].metric("Models built", len(resources.built_models(cat)))
    columns[3].metric("Rows skipped", f"{len(info.get('skipped', [])):,}")
    st.caption(f"Source: {info.get('source')} ({info.get('adapter')}) · images in {cat.root} · "
               f"labels: {', '.join(cat.label_fields) or 'none'} · main label: {cat.main_label or 'none'}")
    skipped = info.get("skipped", [])
    if skipped:
        with st.expander(f"{len(skipped):,} rows or files were left out"):
            st.dataframe(pd.DataFrame(skipped[:500]), width="stretch", hide_index=True)


def build_missing_ui(cat: Catalogue, built: list[str]) -> None:
    missing = [spec.id for spec in list_models() if spec.id not in built]
    if not missing:
        st.caption("Every model in the zoo has an index here.")
        return
    st.markdown("**Build more models**")
    chosen = st.multiselect("Models without an index here", missing, key="missing_models",
                            format_func=lambda m: f"{m} — {get_spec(m).description}")
    bridges = st.checkbox("Train text bridges for image-only models", value=_bridge_available(),
                          key="missing_bridges", disabled=not _bridge_available())
    st.caption("Leaving the page stops a build; the finished chunks are kept and the next build resumes.")
    if st.button("Build", type="primary", key="build_missing", disabled=not chosen):
        outcome = build_models_ui(cat, chosen, bridges=bridges)
        for note in outcome.notes:
            st.success(note)
        for model_id, reason in outcome.failed.items():
            st.error(f"{model_id} was not built: {reason}")
        if outcome.built:
            st.button("Show the new models", key="refresh_after_build")


READ_ONLY_NOTE = ("This server is read-only ({env}=1): catalogues are built with "
                  "`python -m embeddings build --source PATH` on the server, then appear here.")


def catalogue_page(selection: Selection) -> None:
    st.title("Catalogue")
    read_only = resources.read_only()
    if not selection.catalogues and read_only:
        st.info("There is no catalogue yet. " + READ_ONLY_NOTE.format(env=resources.READ_ONLY_ENV))
        return
    if not selection.catalogues:
        st.markdown(
            "### Welcome\nThis app searches a catalogue of product photos by similarity and shows several "
            "embedding models **side by side**: raw pixels, ImageNet CNNs, SimCLR, CLIP. There is no catalogue "
            "yet: build the demo one (a few thousand fashion products, a few minutes on a laptop CPU) or one "
            "from your own folder of images. When it is ready, the app opens the Search page.")
        new_catalogue_ui(first_run=True)
        return
    cat = selection.catalogue
    if cat is None:
        st.error(selection.error or "The catalogue could not be opened.")
    else:
        overview_ui(cat)
        table = built_table(cat)
        st.markdown("**Indexes**")
        if table.empty:
            st.info("No model has an index here yet.")
        else:
            st.dataframe(table, width="stretch", hide_index=True)
        if not read_only:
            build_missing_ui(cat, selection.built)
    if read_only:
        st.caption(READ_ONLY_NOTE.format(env=resources.READ_ONLY_ENV))
        return
    st.divider()
    with st.expander("Add a catalogue"):
        new_catalogue_ui(first_run=False)

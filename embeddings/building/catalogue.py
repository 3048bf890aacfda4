"""Building a catalogue: the one path both front doors take (the CLI's `build`, the app's
Catalogue page).

`build_catalogue(request, progress)` holds the catalogue's build lock and

1. repairs what a killed build left (a half-swapped folder, staging folders, temp files);
2. scans the source: the request's, or the catalogue's own recorded source and settings
   (adapter, `--limit`, `--seed`, sidecar) when it rebuilds an existing catalogue;
3. builds every model on its own: loads it, embeds what its index lacks (resumable chunks),
   stages the new index folder and the text bridge trained on the new vectors. One model
   failing (weights that cannot load, a full disk, an error mid-build) is recorded in its
   `ModelOutcome` and does not stop the others;
4. commits under the exclusive commit lock: the catalogue's table and every staged index and
   bridge go in place together, so a reader sees the whole old catalogue or the whole new one.
   When no model succeeded nothing is committed and the previous catalogue stays as it was.

When the products changed, the models already built in the catalogue are brought up to date
too (only the new products are embedded), so no index is left behind a newer catalogue.

The bridge settings (the titles no bridge trains on, the recipe) are the catalogue's
(`embeddings.bridge.settings`): recorded in `catalog.json`, reused unless the request changes
them, and when they change the bridges of the other built models are retrained from their
indexes too, so every bridge follows them. `kagl=True` sets up the fashion leaderboard protocol
on a catalogue that has no excluded titles yet (`build.query_titles`): it picks the query titles,
keeps them out of the bridges through the setting, and measures after the commit.
Progress reaches the caller as `embeddings.progress.Progress` events; printing and widgets are
the caller's business.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from embeddings.atomic import recover_interrupted_swap, remove_staging_leftovers
from embeddings.bridge import BridgeFit, commit_bridge, fit_bridge
from embeddings.bridge.artefact import read_bridge_manifest
from embeddings.bridge.recipes import check_recipe
from embeddings.bridge.settings import SETTINGS_KEY, BridgeSettings, catalogue_settings, resolve
from embeddings.building.model import (
    DEFAULT_BATCH_SIZE,
    BuildReport,
    embed_catalogue,
    index_labels,
    index_manifest,
)
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.catalogue.base import CATALOG_FILE
from embeddings.errors import CatalogueError, EmbeddingsError, describe_os_error
from embeddings.index.store import (
    DEFAULT_HNSW_ABOVE,
    StagedIndex,
    commit_staged,
    discard_staged,
    load_model_index,
    read_manifest,
    stage_model_index,
)
from embeddings.locks import build_lock, commit_lock
from embeddings.models import expected_weights_id, get_spec, load_model
from embeddings.models.naming import folder_name
from embeddings.progress import Progress, ProgressFn, no_progress

DEFAULT_MODELS = ("pixels", "efficientnet-lite0")


@dataclass
class IndexOptions:
    """How indexes are stored. None: what the model's existing index used, else the default."""

    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2
    hnsw_above: int | None = None
    store_dtype: str | None = None  # "float32" | "float16" | "uint8" (byte-valued models)
    backend: str | None = None  # "faiss" | "milvus"
    milvus_uri: str | None = None
    milvus_token: str | None = None  # never written to disk
    force: bool = False  # re-embed everything
    engine: str = "local"  # what embeds: "local" (this process) or "ray" (a Ray cluster)
    ray_address: str | None = None  # the cluster (None: $RAY_ADDRESS, else a local one)
    ray_actor_cpus: float = 1.0  # CPUs (ONNX Runtime threads) of each model actor on Ray


@dataclass
class BuildRequest:
    """What to build. Fields left None come from the existing catalogue in `out`, if any."""

    out: Path
    source: str | None = None
    adapter: str | None = None
    limit: int | None = None
    seed: int | None = None
    sidecar: str | None = None
    models: list[str] | None = None
    weights: dict[str, dict] = field(default_factory=dict)  # model id -> load_model options
    index: IndexOptions = field(default_factory=IndexOptions)
    bridges: bool = True
    #: Titles no bridge may train on (`build --bridge-exclude-titles`; see `bridge.exclusion`):
    #: None keeps the catalogue's setting, a list replaces it, [] clears it.
    bridge_exclude_titles: list[str] | None = None
    #: Where those titles came from, recorded for people (a file's name, never its path).
    bridge_exclude_origin: str | None = None
    #: How bridges are made (`bridge.recipes.RECIPES`; None: the catalogue's setting).
    bridge_recipe: str | None = None
    #: Pick the leaderboard's title queries when the catalogue has none, and measure after.
    kagl: bool = False
    new_catalogue: bool = False  # refuse a folder that already holds a catalogue


@dataclass
class ModelOutcome:
    """What happened to one model: "built" (its index was written), "reused" (already up to
    date) or "failed" (`message` says why; its previous index, if any, is untouched)."""

    model_id: str
    status: str
    message: str = ""
    report: BuildReport | None = None
    bridge: str | None = None  # the bridge's summary, or why it was not trained


@dataclass
class CatalogueBuild:
    """The result of `build_catalogue`."""

    catalogue: Catalogue  # as committed (or as scanned, when nothing was committed)
    outcomes: list[ModelOutcome]
    committed: bool
    updated_too: list[str] = field(default_factory=list)  # built models updated for new products
    bridge_settings: BridgeSettings = field(default_factory=BridgeSettings)  # as used
    settings_changes: list[str] = field(default_factory=list)  # what this build changed in them
    bridges_too: list[str] = field(default_factory=list)  # other bridges retrained to follow them
    kagl: str | None = None  # `kagl=True`: what was measured, or why not

    @property
    def failed(self) -> list[ModelOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def succeeded(self) -> list[str]:
        return [o.model_id for o in self.outcomes if o.status != "failed"]


@dataclass
class _Staged:
    outcome: ModelOutcome
    index: StagedIndex | None = None
    bridge: BridgeFit | None = None
    work_dir: Path | None = None


def build_catalogue(request: BuildRequest, progress: ProgressFn | None = None) -> CatalogueBuild:
    """Scan, build every model, and commit them together (see the module docstring).

    Raises `EmbeddingsError` (bad input, a busy catalogue) before any work is done; model
    failures are returned in the outcomes, not raised.
    """
    say = progress or no_progress
    for model_id in request.models or []:
        get_spec(model_id)  # unknown ids fail before any work
    if request.bridge_recipe:
        check_recipe(request.bridge_recipe)
    out = Path(request.out)
    if request.new_catalogue and (out / CATALOG_FILE).exists():
        raise CatalogueError(
            f"a catalogue named {out.name!r} already exists in {out.parent}; "
            "choose another name (or rebuild that one from its own page)"
        )
    engine = _engine(request.index)
    try:
        with build_lock(out):
            repair_catalogue(out)
            previous = _open_previous(out, request)
            catalogue = _scan(request, previous, say)
            settings, changes = _bridge_settings(request, previous, catalogue, say)
            models, updated_too = _models_to_build(request, previous, catalogue)
            bridges_too = _stale_bridges(request, previous, settings, models)
            staged = [_build_model(catalogue, m, request, say, settings, engine) for m in models]
            staged += [_refit_bridge(catalogue, m, request, say, settings) for m in bridges_too]
            committed = _commit(catalogue, staged, say)
            kagl = _measure_kagl(catalogue, say) if request.kagl and committed else None
    finally:
        if engine is not None:
            engine.close()
    return CatalogueBuild(
        catalogue,
        [s.outcome for s in staged],
        committed,
        updated_too,
        bridge_settings=settings,
        settings_changes=changes,
        bridges_too=bridges_too,
        kagl=kagl,
    )


def _bridge_settings(
    request: BuildRequest, previous: Catalogue | None, catalogue: Catalogue, say: ProgressFn
) -> tuple[BridgeSettings, list[str]]:
    """The catalogue's bridge settings with the request's changes, recorded in the catalogue
    about to be saved; each change is announced."""
    current = catalogue_settings(previous) if previous is not None else BridgeSettings()
    titles, origin = request.bridge_exclude_titles, request.bridge_exclude_origin
    if request.kagl and titles is None and current.exclude is None:
        from embeddings.building.query_titles import pick_build_title_queries

        titles, origin = pick_build_title_queries(catalogue)
    settings, changes = resolve(
        current, exclude_titles=titles, origin=origin, recipe=request.bridge_recipe
    )
    catalogue.info[SETTINGS_KEY] = settings.record()
    for change in changes:
        say(Progress("settings", message=f"catalogue setting changed: {change}"))
    return settings, changes


def _stale_bridges(
    request: BuildRequest, previous: Catalogue | None, settings: BridgeSettings, models: list[str]
) -> list[str]:
    """Built image-only models outside this build whose bridge does not follow `settings`."""
    if previous is None or not request.bridges:
        return []
    stale = []
    for model_id in _built_known_models(previous):
        if model_id in models or get_spec(model_id).has_text:
            continue
        manifest = read_bridge_manifest(previous.bridge_dir(model_id))
        if manifest is not None and not settings.matches(manifest):
            stale.append(model_id)
    return stale


def _refit_bridge(
    catalogue: Catalogue,
    model_id: str,
    request: BuildRequest,
    say: ProgressFn,
    settings: BridgeSettings,
) -> _Staged:
    """Retrain a built model's bridge from its index (its index stays as it is)."""
    staged = _Staged(ModelOutcome(model_id, "reused", "bridge retrained to follow the settings"))
    try:
        staged.bridge = _fit_bridge_from_index(
            catalogue, model_id, request, say, staged.outcome, settings
        )
    except Exception as exc:  # noqa: BLE001 - the bridge alone fails; the build goes on
        staged.outcome.bridge = f"not retrained: {_failure_message(exc)}"
    return staged


def _measure_kagl(catalogue: Catalogue, say: ProgressFn) -> str:
    """`kagl=True`: measure the leaderboard protocol on the models just built (a message)."""
    from embeddings.building.query_titles import measure_after_build

    return measure_after_build(catalogue, say)


def _engine(options: IndexOptions):
    """The Ray engine when asked for (checked before any work; it joins the cluster on first
    use), else None: the local engine."""
    from embeddings.building.ray_engine import ENGINES, RayEngine, check_runtime

    if options.engine not in ENGINES:
        raise EmbeddingsError(
            f"unknown engine {options.engine!r}; choose one of: {', '.join(ENGINES)}"
        )
    if options.engine == "local":
        return None
    check_runtime()
    return RayEngine(address=options.ray_address, actor_cpus=options.ray_actor_cpus)


def repair_catalogue(directory: Path) -> None:
    """Undo what a killed build left behind (writers only, under the build lock)."""
    directory = Path(directory)
    for folder in (directory / "models", directory / "bridges"):
        if folder.is_dir():
            for old in folder.glob("*.old"):
                recover_interrupted_swap(old.with_name(old.name[: -len(".old")]))
            remove_staging_leftovers(folder)
    remove_staging_leftovers(directory)


def _open_previous(out: Path, request: BuildRequest) -> Catalogue | None:
    if not (out / CATALOG_FILE).is_file():
        if request.source is None:
            raise CatalogueError(
                f"{out} is not a catalogue (no {CATALOG_FILE}); build one with "
                "`python -m embeddings build --source PATH --out DIR`"
            )
        return None
    return Catalogue.open(out)


def _scan(request: BuildRequest, previous: Catalogue | None, say: ProgressFn) -> Catalogue:
    """Scan the source with the request's settings, else the catalogue's own recorded ones."""
    info = previous.info if previous is not None else {}
    source = request.source or info.get("source")
    same = previous is not None and source == info.get("source")

    def setting(name: str, default=None):
        given = getattr(request, name)
        return given if given is not None else (info.get(name, default) if same else default)

    say(Progress("scan", message=f"reading {source}"))
    return create_catalogue(
        source,
        request.out,
        adapter=setting("adapter"),
        limit=setting("limit"),
        seed=setting("seed", 0),
        sidecar=setting("sidecar"),
        write=False,
    )


def _models_to_build(
    request: BuildRequest, previous: Catalogue | None, catalogue: Catalogue
) -> tuple[list[str], list[str]]:
    """The requested models (default: those already built, or `DEFAULT_MODELS` for a new
    catalogue), plus every built model when the products changed."""
    built = _built_known_models(previous) if previous is not None else []
    wanted = list(request.models or built or DEFAULT_MODELS)
    changed = previous is not None and previous.fingerprint != catalogue.fingerprint
    updated_too = [m for m in built if m not in wanted] if changed else []
    return wanted + updated_too, updated_too


def _built_known_models(catalogue: Catalogue) -> list[str]:
    models_dir = catalogue.directory / "models"
    if not models_dir.is_dir():
        return []
    found = []
    for folder in sorted(models_dir.iterdir()):
        manifest = (
            read_manifest(folder) if folder.is_dir() and not folder.name.startswith(".") else None
        )
        if manifest is None:
            continue
        model_id = manifest.get("model_id") or folder.name
        try:
            get_spec(model_id)
        except EmbeddingsError:
            continue  # a model this version does not know: left as it is
        if folder_name(model_id) == folder.name:
            found.append(model_id)
    return found


def _build_model(
    catalogue: Catalogue,
    model_id: str,
    request: BuildRequest,
    say: ProgressFn,
    settings: BridgeSettings,
    engine=None,
) -> _Staged:
    """Everything for one model short of committing; failures end in the outcome, except a
    lost Ray cluster, which ends the whole build before anything is committed."""
    from embeddings.building.ray_engine import ClusterError

    staged = _Staged(ModelOutcome(model_id, "failed"))
    try:
        _build_model_steps(catalogue, model_id, request, say, staged, settings, engine)
    except ClusterError:
        _discard(staged)
        raise
    except Exception as exc:  # noqa: BLE001 - one model's failure, whatever it is, must not cost the others
        _discard(staged)
        staged.outcome = ModelOutcome(model_id, "failed", _failure_message(exc))
    say(Progress("model-done", model_id, message=staged.outcome.status))
    return staged


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return describe_os_error(exc, building=True)
    if isinstance(exc, EmbeddingsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _build_model_steps(
    catalogue: Catalogue,
    model_id: str,
    request: BuildRequest,
    say: ProgressFn,
    staged: _Staged,
    bridge_settings: BridgeSettings,
    engine=None,
) -> None:
    options = request.weights.get(model_id, {})
    previous = read_manifest(catalogue.model_dir(model_id))
    settings = _index_settings(request.index, previous, model_id)
    if _is_current(previous, catalogue, model_id, options, settings, request.index.force):
        staged.outcome = ModelOutcome(model_id, "reused", "up to date")
        staged.bridge = _fit_bridge_from_index(
            catalogue, model_id, request, say, staged.outcome, bridge_settings
        )
        return
    say(Progress("load", model_id, message=f"loading {model_id}"))
    embedder = load_model(
        model_id, messages=lambda line: say(Progress("load", model_id, message=line)), **options
    )
    embedded = embed_catalogue(
        catalogue,
        embedder,
        batch_size=request.index.batch_size,
        workers=request.index.workers,
        force=request.index.force,
        progress=say,
        engine=engine,
    )
    staged.work_dir = embedded.work_dir
    say(Progress("index", model_id, message="writing the index"))
    staged.index = stage_model_index(
        catalogue.model_dir(model_id),
        ids=embedded.ids,
        vectors=embedded.vectors,
        manifest=index_manifest(catalogue, embedder, embedded.report),
        labels=index_labels(catalogue, embedded.ids, settings["backend"]),
        **settings,
    )
    embedded.report.manifest = staged.index.manifest
    embedded.report.count = len(embedded.ids)
    staged.outcome = ModelOutcome(model_id, "built", report=embedded.report)
    staged.bridge = _fit_bridge(
        catalogue,
        model_id,
        request,
        say,
        staged.outcome,
        embedded.ids,
        embedded.vectors,
        embedder.weights_id,
        bridge_settings,
    )


def _index_settings(options: IndexOptions, previous: dict | None, model_id: str) -> dict:
    """`stage_model_index` keywords: the request's, else the previous index's, else defaults
    (bytes for a model whose vectors are bytes, on FAISS: exact and a quarter of float32)."""
    previous = previous or {}
    backend = options.backend or (
        "milvus" if options.milvus_uri else previous.get("backend", "faiss")
    )
    uri = options.milvus_uri
    if backend == "milvus" and uri is None and previous.get("backend") == "milvus":
        uri = _recorded_milvus_uri(previous)
    return {
        "backend": backend,
        "milvus_uri": uri,
        "milvus_token": options.milvus_token,
        "store_dtype": options.store_dtype
        or previous.get("vectors_dtype", _default_store(model_id, backend)),
        "hnsw_above": (
            options.hnsw_above
            if options.hnsw_above is not None
            else previous.get("hnsw_above", DEFAULT_HNSW_ABOVE)
        ),
    }


def _default_store(model_id: str, backend: str) -> str:
    return "uint8" if backend == "faiss" and get_spec(model_id).byte_valued else "float32"


def _recorded_milvus_uri(manifest: dict) -> str | None:
    """A server URI recorded by the previous build (a Lite path defaults to the catalogue's own)."""
    from embeddings.index.milvus import is_server_uri

    recorded = (manifest.get("milvus") or {}).get("uri")
    return recorded if recorded and is_server_uri(recorded) else None


def _is_current(
    previous: dict | None,
    catalogue: Catalogue,
    model_id: str,
    options: dict,
    settings: dict,
    force: bool,
) -> bool:
    """The model's index already holds this catalogue with these weights and settings."""
    if force or previous is None:
        return False
    same = (
        previous.get("model_id") == model_id
        and previous.get("catalogue_fingerprint") == catalogue.fingerprint
        and previous.get("weights_id") == expected_weights_id(model_id, options)
        and previous.get("backend", "faiss") == settings["backend"]
        and previous.get("vectors_dtype", "float32") == settings["store_dtype"]
        and previous.get("hnsw_above", DEFAULT_HNSW_ABOVE) == settings["hnsw_above"]
    )
    if settings["backend"] == "milvus" and settings["milvus_uri"] is not None:
        same = same and _recorded_milvus_uri(previous) == settings["milvus_uri"]
    return same and _loads(catalogue, model_id)


def _loads(catalogue: Catalogue, model_id: str) -> bool:
    """The index opens and agrees with its manifest (not damaged, its Milvus collection there)."""
    try:
        load_model_index(
            catalogue.model_dir(model_id),
            catalogue_fingerprint=catalogue.fingerprint,
            model_id=model_id,
            mmap=True,
            lock=False,
        )
    except EmbeddingsError:
        return False
    return True


def _wants_bridge(catalogue: Catalogue, model_id: str, request: BuildRequest) -> bool:
    return (
        request.bridges
        and not get_spec(model_id).has_text
        and bool(catalogue.items["title"].ne("").any())
    )


def _fit_bridge(
    catalogue: Catalogue,
    model_id: str,
    request: BuildRequest,
    say: ProgressFn,
    outcome: ModelOutcome,
    ids: list[str],
    vectors,
    weights_id: str,
    settings: BridgeSettings,
) -> BridgeFit | None:
    """Stage the text bridge trained on the vectors about to be committed (None: no bridge).

    A bridge that cannot be trained is reported in the outcome; the model's index still goes in.
    """
    if not _wants_bridge(catalogue, model_id, request):
        return None
    say(Progress("bridge", model_id, message="training the text bridge"))
    try:
        fit = fit_bridge(
            catalogue,
            model_id,
            ids=ids,
            vectors=vectors,
            weights_id=weights_id,
            progress=say,
            **settings.fit_options(),
        )
    except EmbeddingsError as exc:
        outcome.bridge = f"not trained: {exc}"
        return None
    outcome.bridge = fit.summary if fit else "no titles to learn from"
    return fit


def _fit_bridge_from_index(
    catalogue: Catalogue,
    model_id: str,
    request: BuildRequest,
    say: ProgressFn,
    outcome: ModelOutcome,
    settings: BridgeSettings,
) -> BridgeFit | None:
    if not _wants_bridge(catalogue, model_id, request):
        return None
    from embeddings.index.store import load_vectors

    ids, vectors = load_vectors(catalogue.model_dir(model_id))
    weights_id = read_manifest(catalogue.model_dir(model_id))["weights_id"]
    return _fit_bridge(
        catalogue, model_id, request, say, outcome, ids, vectors, weights_id, settings
    )


def _commit(catalogue: Catalogue, staged: list[_Staged], say: ProgressFn) -> bool:
    """Put the catalogue and every staged index and bridge in place at once (or nothing)."""
    if not any(s.outcome.status != "failed" for s in staged):
        return False
    say(Progress("commit", message="putting the new indexes in place"))
    try:
        with commit_lock(catalogue.directory, exclusive=True):
            catalogue.save()  # first: a full disk fails here, before any folder moves
            for item in staged:
                if item.index is not None:
                    commit_staged(item.index)
                if item.bridge is not None and item.bridge.staging is not None:
                    commit_bridge(item.bridge.staging, catalogue.bridge_dir(item.outcome.model_id))
    except BaseException:
        for item in staged:
            _discard(item)
        raise
    for item in staged:
        if item.work_dir is not None:
            shutil.rmtree(item.work_dir, ignore_errors=True)
    return True


def _discard(staged: _Staged) -> None:
    if staged.index is not None and staged.index.staging.exists():
        discard_staged(staged.index)
    if staged.bridge is not None and staged.bridge.staging is not None:
        shutil.rmtree(staged.bridge.staging, ignore_errors=True)
    staged.index = staged.bridge = None

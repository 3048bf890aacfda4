"""The Catalogue page's model picker: add a preset, or any model named by its family id, to an
existing catalogue. Only that model is embedded (the others' indexes are left as they are);
before it starts, the page says what it downloads and roughly how long it takes here.

Shown only where the app may build (`catalogue_ui.catalogue_page` calls it outside read-only
mode): a public read-only deployment offers no typed ids, so no visitor can make this server
download a model or read one of its folders.
"""

from __future__ import annotations

import streamlit as st

from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError
from embeddings.models import get_spec
from embeddings.models.presets import PRESETS, get_preset

OTHER = "another model (type its id)"
#: Image tower cost (billions of multiply-accumulates per image, as timm lists them) of the
#: built-in models whose measured build rate here the estimate scales from.
REFERENCE_GMACS = {"efficientnet-lite0": 0.4, "resnet50": 4.1, "simclr": 4.1, "clip": 4.4}
#: Fewer images than this in a build say little about its rate.
MIN_TIMED = 32
#: The cost assumed for a typed id (a ViT-B/16 at 224 px).
DEFAULT_GMACS = 17.6


def measured_rate(cat: Catalogue) -> tuple[str, float, float] | None:
    """(model, images/s, its GMACs) of the last build here of a reference model that embedded
    enough images to time, from its index manifest; None when there is none."""
    from embeddings.index.store import read_manifest

    for model_id, gmacs in REFERENCE_GMACS.items():
        manifest = read_manifest(cat.model_dir(model_id)) or {}
        embedded, seconds = manifest.get("embedded_this_run", 0), manifest.get("build_seconds", 0)
        if embedded >= MIN_TIMED and seconds > 0:
            return model_id, embedded / seconds, gmacs
    return None


def estimate(cat: Catalogue, model_id: str) -> str:
    """What building `model_id` over `cat` costs here: its download and rough time."""
    from embeddings.models.family import cache_status

    status = cache_status(model_id)
    download = "nothing to download (cached)" if status == "cached" else status
    preset = get_preset(model_id)
    gmacs = preset.gmacs if preset is not None else DEFAULT_GMACS
    reference = measured_rate(cat)
    if reference is None:
        return (
            f"{download}; time: no build here to scale from (the progress bar shows the rate); "
            "plus a one-time ONNX export"
        )
    name, rate, reference_gmacs = reference
    rate = rate * reference_gmacs / gmacs
    seconds = len(cat) / rate
    basis = "" if preset is not None else ", assuming a ViT-B/16's cost"
    return (
        f"{download}; roughly {_duration(seconds)} for {len(cat):,} products at ~{rate:.1f} "
        f"images/s (scaled from {name}'s {reference[1]:.0f} images/s built here by the "
        f"architectures' cost{basis}), plus a one-time ONNX export of a few minutes"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _chosen_model(built: list[str]) -> str | None:
    options = [p.id for p in PRESETS if p.id not in built] + [OTHER]
    choice = st.selectbox(
        "Model",
        options,
        key="zoo_choice",
        format_func=lambda m: m if m == OTHER else f"{m} — {get_preset(m).description}",
    )
    if choice != OTHER:
        return choice
    typed = st.text_input(
        "Model id",
        key="zoo_typed",
        placeholder="hf:facebook/dinov2-base · open_clip:ViT-B-16/laion2b_s34b_b88k · "
        "timm:convnext_small.fb_in22k_ft_in1k",
        help="A transformers model (hf:REPO_OR_FOLDER), an open_clip model "
        "(open_clip:ARCH/PRETRAINED, open_clip:hf-hub:REPO, open_clip:local-dir:FOLDER) or a "
        "timm model (timm:NAME, timm:hf-hub:REPO, timm:local-dir:FOLDER).",
    ).strip()
    if not typed:
        return None
    try:
        get_spec(typed)
    except EmbeddingsError as exc:
        st.error(str(exc))
        return None
    if typed in built:
        st.info(f"{typed} already has an index here.")
        return None
    return typed


def model_picker_ui(cat: Catalogue, built: list[str]) -> None:
    """Pick a zoo model, see its cost, and embed the catalogue with it alone."""
    st.markdown("**Add a model from the zoo**")
    model_id = _chosen_model(built)
    if model_id is None:
        return
    st.caption(f"{model_id}: {estimate(cat, model_id)}.")
    bridges = st.checkbox(
        "Train a text bridge if it has no text tower", value=True, key="zoo_bridges"
    )
    if st.button(f"Add {model_id}", type="primary", key="zoo_add"):
        from app_support import build_runs

        request = build_runs.build_request(cat.directory, models=[model_id], bridges=bridges)
        result = build_runs.run_build_ui(request)
        if result is None:
            return
        notes, failed = build_runs.outcome_lines(result)
        for note in notes:
            st.success(note)
        for failed_id, reason in failed.items():
            st.error(f"{failed_id} was not built: {reason}")
        if result.committed:
            st.button("Show the new model", key="zoo_refresh")

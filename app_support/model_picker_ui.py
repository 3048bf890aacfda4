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
#: The ONNX export made once per model and weights, on 2 cores (bench/bench_zoo.py: 20-120 s).
EXPORT_SECONDS = 90
#: Images per second assumed for a model that is not a preset (a ViT-B/16 here, ONNX Runtime).
DEFAULT_IMAGES_PER_S = 12.0


def estimate(model_id: str, products: int) -> str:
    """What building `model_id` over `products` costs here: its download and rough time."""
    from embeddings.models.family import cache_status

    status = cache_status(model_id)
    preset = get_preset(model_id)
    rate = preset.images_per_s if preset is not None else DEFAULT_IMAGES_PER_S
    seconds = products / rate + (0 if status == "cached" else EXPORT_SECONDS)
    basis = "measured for this architecture" if preset is not None else "assumed (a ViT-B/16)"
    download = "nothing to download (cached)" if status == "cached" else status
    return (
        f"{download}; about {_duration(seconds)} for {products:,} products at ~{rate:.0f} "
        f"images/s ({basis} on 2 CPU cores), plus the one-time ONNX export"
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
    st.caption(f"{model_id}: {estimate(model_id, len(cat))}.")
    bridges = st.checkbox(
        "Train a text bridge if it has no text tower", value=True, key="zoo_bridges"
    )
    if st.button(f"Add {model_id}", type="primary", key="zoo_add"):
        from app_support import catalogue_ui  # it shows this picker: imported when used

        request = catalogue_ui._request(cat.directory, models=[model_id], bridges=bridges)
        result = catalogue_ui.run_build_ui(request)
        if result is None:
            return
        notes, failed = catalogue_ui.outcome_lines(result)
        for note in notes:
            st.success(note)
        for failed_id, reason in failed.items():
            st.error(f"{failed_id} was not built: {reason}")
        if result.committed:
            st.button("Show the new model", key="zoo_refresh")

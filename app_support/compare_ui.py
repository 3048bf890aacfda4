"""The Compare page: each model's precision@k by label over many queries, its score scale, and
where the selected models disagree (per label value, confusions, queries: `disagreement_ui`).

Reads the evaluation saved next to the indexes (`python -m embeddings evaluate`, or an earlier
run from this page). When there is none, or it lacks a selected model, the page computes one on a
sample of queries with a progress bar and saves it, so the next visit (and every other session)
reads it back.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app_support import disagreement_ui, resources, sidebar
from app_support.progress_ui import ProgressUI
from app_support.sidebar import Selection
from embeddings.bridge.settings import catalogue_settings
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError
from embeddings.index.fused import is_fused
from embeddings.quality import disagreement, evaluate
from embeddings.quality import kagl as leaderboard

DEFAULT_QUERIES = 200
CHANCE = "chance (random)"
PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d"]


def model_colours(models: list[str], *, chance: bool = True) -> alt.Scale:
    """The same colour for a model on every chart; chance is grey."""
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(models))]
    if chance:
        return alt.Scale(domain=[*models, CHANCE], range=[*colours, "#9ca3af"])
    return alt.Scale(domain=list(models), range=colours)


def results_frame(result) -> pd.DataFrame:
    """The result's rows as a table (model, task, label, metric, k, value)."""
    frame = pd.DataFrame(
        list(result.rows), columns=["model", "task", "label", "metric", "k", "value"]
    )
    frame["k"] = pd.to_numeric(frame["k"], errors="coerce")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def precision_frame(
    frame: pd.DataFrame,
    label: str,
    models: list[str],
    task: str = "image",
    metric: str = "precision",
) -> pd.DataFrame:
    """Rows of `metric`@k for `label` per model, plus a 'chance' series (the label-frequency
    baseline)."""
    rows = frame[(frame["task"] == task) & (frame["label"] == label)]
    measured = rows[(rows["metric"] == metric) & rows["model"].isin(models)][
        ["model", "k", "value"]
    ]
    chance = (
        rows[(rows["metric"] == "chance") & rows["model"].isin(models)]
        .groupby("k", as_index=False)["value"]
        .mean()
    )
    chance["model"] = CHANCE
    return pd.concat([measured, chance[["model", "k", "value"]]], ignore_index=True).sort_values(
        ["model", "k"]
    )


def precision_chart(data: pd.DataFrame, title: str, models: list[str]) -> alt.Chart:
    dashed = alt.condition(alt.datum.model == CHANCE, alt.value([5, 4]), alt.value([0]))
    return (
        alt.Chart(data, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("k:O", title="k (results per query)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("value:Q", title="precision@k", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("model:N", title="model", scale=model_colours(models)),
            strokeDash=dashed,
            tooltip=["model", "k", alt.Tooltip("value:Q", format=".3f")],
        )
    )


def score_frame(result, models: list[str]) -> pd.DataFrame:
    samples = getattr(result, "score_samples", {}) or {}
    parts = [
        pd.DataFrame({"model": model, "score": list(samples[model])})
        for model in models
        if samples.get(model)
    ]
    return (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["model", "score"])
    )


def score_chart(scores: pd.DataFrame, models: list[str]) -> alt.Chart:
    low = min(0.0, float(scores["score"].min()))
    return (
        alt.Chart(scores, title="Cosine scores of the top-k results")
        .transform_density(
            "score", groupby=["model"], as_=["score", "density"], extent=[low, 1.0], steps=300
        )
        .mark_area(opacity=0.5, interpolate="monotone")
        .encode(
            x=alt.X("score:Q", title="cosine similarity", scale=alt.Scale(domain=[low, 1.0])),
            y=alt.Y("density:Q", title="density"),
            color=alt.Color("model:N", title="model", scale=model_colours(models, chance=False)),
        )
    )


def score_summary(scores: pd.DataFrame) -> pd.DataFrame:
    grouped = scores.groupby("model")["score"]
    return pd.DataFrame(
        {
            "median": grouped.median(),
            "10th pct": grouped.quantile(0.1),
            "90th pct": grouped.quantile(0.9),
            "scores": grouped.size(),
        }
    )


def measure_then_rerun(measure) -> None:
    """Run `measure(progress)` with progress bars: rerun the page with what it saved, or show
    why it could not be measured."""
    try:
        measure(ProgressUI())
    except EmbeddingsError as exc:
        st.error(str(exc))
        return
    st.rerun()


def compute_ui(cat: Catalogue, models: list[str], default_queries: int) -> None:
    """The button that measures `models` on a sample of queries and saves the result."""
    top = max(1, min(1000, len(cat)))
    queries = st.slider(
        "Queries to sample",
        min(10, top),
        top,
        min(default_queries, top),
        key="eval_queries",
        help="Each query is a catalogue product; its neighbours are scored by their labels.",
    )
    if st.button(
        f"Measure {', '.join(models)} on {queries:,} queries", type="primary", key="eval_run"
    ):

        def measure(progress) -> None:
            result = evaluate.evaluate_catalogue(
                cat, models, queries=queries, seed=0, progress=progress
            )
            evaluate.save_results(cat, result)

        measure_then_rerun(measure)


def saved_result_ui(cat: Catalogue, selection: Selection):
    """The saved evaluation (None when there is none), with a way to measure missing models."""
    try:
        result = evaluate.load_results(cat)
    except EmbeddingsError as exc:
        st.warning(f"The saved evaluation could not be read ({exc}); measure again below.")
        result = None
    manifest = result.manifest if result is not None else {}
    covered = set(results_frame(result)["model"].dropna()) if result is not None else set()
    missing = [m for m in selection.models if m not in covered]
    # Per-query neighbours (the disagreement figures) are kept only by newer evaluations.
    no_neighbours = [
        m
        for m in selection.models
        if m in covered and m not in disagreement.available_models(result, [m])
    ]
    if result is not None:
        sampled = (manifest.get("image_queries") or {}).get("sampled", "?")
        st.caption(
            f"Saved evaluation: {sampled} image queries (seed {manifest.get('seed', '?')}), "
            f"measured {manifest.get('created_at', '')} in {manifest.get('seconds', '?')} s. "
            f"Recompute with `python -m embeddings evaluate --catalog {cat.directory}`."
        )
    if no_neighbours:
        st.info(
            f"The saved evaluation has no per-query neighbours for {', '.join(no_neighbours)} (it "
            "was measured before they were kept), so 'Where the models disagree' leaves them "
            "out; measure again to see them."
        )
    if missing or no_neighbours:
        if missing:
            st.info(
                f"No saved measurement for {', '.join(missing)} yet."
                if result is not None
                else "This catalogue has not been measured yet; measure it on a sample of queries "
                "here (or run `python -m embeddings evaluate --catalog ...`)."
            )
        if resources.read_only():
            st.caption(
                f"Measure on the server: `python -m embeddings evaluate --catalog {cat.directory}`."
            )
        else:
            compute_ui(
                cat,
                sorted(covered | set(selection.models)),
                int(manifest.get("queries_requested") or DEFAULT_QUERIES),
            )
    return result


def image_figures_ui(result, frame: pd.DataFrame, label: str, shown: list[str]) -> None:
    """Precision@k by label beside chance, and each model's score distribution."""
    left, right = st.columns(2, gap="large")
    with left:
        data = precision_frame(frame, label, shown)
        st.altair_chart(
            precision_chart(data, f"Image → image: precision@k by {label}", shown), width="stretch"
        )
        with st.expander("The figures"):
            table = data.pivot_table(index="model", columns="k", values="value")
            st.dataframe(table.style.format("{:.3f}"), width="stretch")
    with right:
        cosines = [m for m in shown if not is_fused(m)]  # a fused model's scores are not cosines
        scores = score_frame(result, cosines)
        if len(cosines) < len(shown):
            st.caption("Fused models are left out here: their scores are not cosines.")
        if scores.empty:
            st.info("This evaluation holds no score samples.")
            return
        st.altair_chart(score_chart(scores, cosines), width="stretch")
        st.caption(
            "Cosine scores are not comparable across models: a 0.8 from raw pixels and a 0.8 from "
            "CLIP mean different things. Read a score against its own model's distribution."
        )
        st.dataframe(
            score_summary(scores).style.format(
                {"median": "{:.3f}", "10th pct": "{:.3f}", "90th pct": "{:.3f}", "scores": "{:,}"}
            ),
            width="stretch",
        )


def text_figures_ui(
    result, frame: pd.DataFrame, cat: Catalogue, label: str, shown: list[str]
) -> None:
    """Text-to-image recall of a title's own product, and label precision of text queries."""
    text = frame[frame["task"] == "text"]
    if text.empty:
        return
    kinds = {
        m: (entry or {}).get("text") for m, entry in (result.manifest.get("models") or {}).items()
    }
    st.subheader("Text → image")
    st.markdown(
        "Each query is a product's own title. **Recall@k**: how often that product is among the "
        "top-k results; a model without a text tower answers through its text bridge."
    )
    recall = text[
        text["metric"].isin(["recall", "chance"])
        & ~text["label"].isin(cat.label_fields)
        & text["model"].isin(shown)
    ]
    if not recall.empty:
        table = recall[recall["metric"] == "recall"].pivot_table(
            index="model", columns="k", values="value"
        )
        table.index = [f"{m} ({kinds.get(m) or 'text'})" for m in table.index]
        table.loc[CHANCE] = recall[recall["metric"] == "chance"].groupby("k")["value"].mean()
        table.columns = [f"recall@{k}" for k in table.columns]
        st.dataframe(table.style.format("{:.3f}"), width="stretch")
    label_rows = text[
        (text["metric"] == "precision") & (text["label"] == label) & text["model"].isin(shown)
    ]
    if not label_rows.empty:
        data = precision_frame(frame, label, shown, task="text")
        st.altair_chart(
            precision_chart(data, f"Text → image: precision@k by {label}", shown), width="stretch"
        )


def compare_page(selection: Selection) -> None:
    st.title("Compare models")
    cat = selection.catalogue
    if cat is None:
        st.info("There is no catalogue yet: build one on the Catalogue page.")
        return
    if not selection.models:
        st.warning("Select at least one model in the sidebar.")
        return
    st.markdown(
        "How often do a model's nearest neighbours share the query's label? Each query is a "
        "catalogue product; **precision@k** is the share of its top-k neighbours with the same "
        "label (the query itself excluded). The dashed line is chance: picking products at random."
    )
    result = saved_result_ui(cat, selection)
    if result is None:
        return
    frame = results_frame(result)
    shown = [m for m in selection.models if m in set(frame["model"].dropna())]
    labels = sorted(set(frame.loc[frame["task"] == "image", "label"].dropna()))
    if not labels or not shown:
        return
    st.session_state["w_label"] = selection.label if selection.label in labels else labels[0]
    label = st.selectbox(
        "Label field",
        labels,
        key="w_label",
        on_change=sidebar._copy,
        args=("w_label", "label"),
        width=320,
    )
    image_figures_ui(result, frame, label, shown)
    disagreement_ui.disagreement_ui(result, selection, label, shown)
    text_figures_ui(result, frame, cat, label, shown)


# -- the Marqo fashion leaderboard protocol ------------------------------------------------------
def leaderboard_frame(result, models: list[str]) -> pd.DataFrame:
    """The protocol's table (anchors, the selected models, chance) as one row per figure."""
    fields = [f for f in ("articleType", "baseColour") if f in result.manifest["label_fields"]]
    fields = fields or list(result.manifest["label_fields"])[:2]
    columns = {
        "recall@1": "title R@1",
        "recall@10": "title R@10",
        "mrr@10": "title MRR@10",
        **{f: f"{f} P@10" for f in fields},
    }
    rows = []
    for row in leaderboard.table_rows(result, fields):
        name = row["model"]
        if name in result.figures and name not in models:
            continue
        for key, column in columns.items():
            if row.get(key) is not None:
                rows.append({"model": name, "figure": column, "value": float(row[key])})
    return pd.DataFrame(rows, columns=["model", "figure", "value"])


def leaderboard_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame, title="Text queries: our models beside the public anchors")
        .mark_bar()
        .encode(
            x=alt.X("model:N", title=None, axis=alt.Axis(labelAngle=-30), sort=None),
            y=alt.Y("value:Q", title="value", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("model:N", title="model", sort=None),
            column=alt.Column("figure:N", title=None, sort=None),
            tooltip=["model", "figure", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=110)
    )


def leaderboard_measure_ui(cat: Catalogue, models: list[str]) -> None:
    """Measure the protocol here when the bridges recorded the title queries they excluded."""
    try:
        titles = leaderboard.default_title_queries(cat, models)
    except EmbeddingsError as exc:
        st.caption(str(exc))
        return
    if resources.read_only():
        return
    if st.button(f"Measure {', '.join(models)} on {len(titles):,} titles", key="kagl_run"):

        def measure(progress) -> None:
            result = leaderboard.evaluate_leaderboard(cat, models, titles, progress=progress)
            leaderboard.save_leaderboard(cat, result)

        measure_then_rerun(measure)


def leaderboard_ui(selection: Selection) -> None:
    """Text search held to the Marqo fashion leaderboard's protocol, beside its anchors."""
    cat = selection.catalogue
    if cat is None or not selection.models:
        return
    st.subheader("Text search on the Marqo fashion leaderboard protocol")
    st.markdown(
        "**Title queries**: product titles the text bridges never trained on; relevant = every "
        "product with that title, over the whole catalogue (recall@k, MRR@10). **Label "
        'queries**: a label\'s bare value ("Tshirts", "Navy Blue"); precision@10 = share of '
        "the top 10 with that value. The two anchors are the public table's fashion CLIPs."
    )
    result = leaderboard.load_leaderboard(cat)
    text_models = [m for m in selection.models if m in search_text_models(cat)]
    if result is None:
        if catalogue_settings(cat).exclude is None:
            st.info(
                "Not measured yet: this catalogue keeps no titles out of its bridges, so there "
                "are no unseen title queries. One command picks them, retrains the bridges "
                f"without them and measures: `python -m embeddings build --catalog "
                f"{cat.directory} --kagl`."
            )
        else:
            st.info("Not measured yet (or the indexes or bridges changed since).")
        if text_models:
            leaderboard_measure_ui(cat, text_models)
        return
    frame = leaderboard_frame(result, selection.models)
    st.altair_chart(leaderboard_chart(frame), width="content")
    with st.expander("The figures"):
        st.dataframe(
            frame.pivot_table(
                index="model", columns="figure", values="value", sort=False
            ).style.format("{:.3f}"),
            width="stretch",
        )
    manifest = result.manifest
    st.caption(
        f"{manifest['title_queries']:,} title queries, measured {manifest['created_at']} in "
        f"{manifest['seconds']:.0f} s."
    )
    note = subset_note(cat, manifest)
    if note:
        st.info(note)
    for model_id, reason in manifest.get("refused_titles", {}).items():
        st.warning(f"{model_id}: no title figures ({reason})")
    missing = [m for m in text_models if m not in result.figures]
    if missing:
        leaderboard_measure_ui(cat, sorted(set(result.figures) | set(missing)))


#: The full fashion set the public table was measured on.
FULL_SET_PRODUCTS = 44_441


def subset_note(cat: Catalogue, manifest: dict) -> str | None:
    """Why figures measured on a subset (the demo) are not the full set's (None: full set)."""
    count = manifest.get("catalogue", {}).get("count", len(cat))
    if cat.info.get("limit") is None and count >= FULL_SET_PRODUCTS:
        return None
    return (
        f"Measured on a catalogue of {count:,} products with {manifest['title_queries']:,} "
        f"title queries, not on the full set ({FULL_SET_PRODUCTS:,} products, 2,000 queries) "
        "the public table uses: with fewer products to rank among, recall is easier to reach, "
        "and with fewer titles the bridges have less to learn from. Read these figures as this "
        "catalogue's, not as the full set's; the anchors' are the full set's."
    )


def search_text_models(cat: Catalogue) -> dict[str, str]:
    return resources.text_capable(cat)

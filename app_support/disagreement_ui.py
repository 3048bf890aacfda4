"""The Compare page's "where models disagree": per-label-value precision@10, the
values where a model is worst with the labels of its wrong neighbours, and the queries that
split the selected models, each one click away from the Search page.

It reads the evaluation's saved neighbours through `embeddings.quality.disagreement`; nothing is
searched
here.
"""

from __future__ import annotations

import html

import altair as alt
import pandas as pd
import streamlit as st

from app_support import resources, thumbs
from app_support.sidebar import Selection, escape_markdown
from embeddings.quality import disagreement

#: Label values shown in the per-value chart (the worst on average first).
SHOWN_VALUES = 25
#: A value needs this many sampled queries to be called a model's worst.
MIN_QUERIES = 5
SHOWN_QUERIES = 8


def value_chart(table: pd.DataFrame, label: str, models: list[str]) -> alt.Chart:
    """A heatmap: label values (rows, worst first) x models, coloured by precision@10."""
    shown = table.head(SHOWN_VALUES)
    data = (
        shown[models]
        .reset_index(names="value")
        .melt(id_vars="value", var_name="model", value_name="precision")
    )
    data = data.merge(shown[["queries"]].reset_index(names="value"), on="value")
    order = shown.index.tolist()
    base = alt.Chart(data, title=f"Precision@10 by {label} value (worst on average first)")
    encode = {
        "x": alt.X("model:N", title=None, sort=models, axis=alt.Axis(labelAngle=0, orient="top")),
        "y": alt.Y("value:N", title=label, sort=order),
    }
    cells = base.mark_rect().encode(
        **encode,
        color=alt.Color(
            "precision:Q", title="P@10", scale=alt.Scale(domain=[0, 1], scheme="redyellowgreen")
        ),
        tooltip=["value", "model", alt.Tooltip("precision:Q", format=".2f"), "queries"],
    )
    text = base.mark_text(fontSize=11).encode(**encode, text=alt.Text("precision:Q", format=".2f"))
    # Streamlit fits the whole chart (title, axes, legend) into this height: leave room for them.
    return (cells + text).properties(height=150 + 22 * len(order))


def confusion_chart(data: pd.DataFrame, label: str, model: str, order: list[str]) -> alt.Chart:
    """For each of `model`'s worst values: the share of its wrong neighbours per label."""
    return (
        alt.Chart(data, title=f"{model}: the {label} of its wrong neighbours")
        .mark_bar()
        .encode(
            y=alt.Y("value:N", title=f"query's {label}", sort=order),
            x=alt.X("share:Q", title="share of the wrong neighbours", stack="normalize"),
            color=alt.Color("neighbour:N", title=f"neighbour's {label}"),
            tooltip=["value", "neighbour", alt.Tooltip("share:Q", format=".0%")],
        )
        .properties(height=max(220, 90 + 34 * len(order)))  # title, axis and legend included
    )


def per_value_ui(result, selection: Selection, label: str, models: list[str]) -> None:
    cat = selection.catalogue
    frame = disagreement.query_precision(result, cat, label, models)
    table = disagreement.value_precision(frame)
    if table.empty:
        st.info(f"No sampled query has a {label} value.")
        return
    st.altair_chart(value_chart(table, label, models), width="stretch")
    with st.expander(f"Every {label} value ({len(table)})"):
        st.dataframe(
            table,
            width="stretch",
            column_config={
                m: st.column_config.ProgressColumn(m, format="%.2f", min_value=0.0, max_value=1.0)
                for m in models
            },
        )
    model = st.selectbox("Where is this model worst?", models, key="w_confusion_model")
    values = disagreement.worst_values(table, model, min_queries=MIN_QUERIES)
    data = disagreement.wrong_neighbour_labels(result, cat, label, model, values)
    if data.empty:
        st.caption(
            f"No {label} value has {MIN_QUERIES} or more sampled queries with wrong results."
        )
        return
    st.altair_chart(confusion_chart(data, label, model, values), width="stretch")
    st.caption(
        f"The {len(values)} {label} values where {model} has the lowest precision@10 (values "
        f"with at least {MIN_QUERIES} sampled queries), and which {label} its wrong neighbours "
        "have there."
    )


def _query_card_html(image: str, title: str, value: str, item_id: str) -> str:
    esc = html.escape
    return (
        '<div data-testid="disagreement" data-id="' + esc(item_id) + '" style="display:flex;'
        'gap:8px;align-items:center;font-size:.85rem"><img src="' + esc(image) + '" alt="" '
        'style="width:42px;height:56px;object-fit:contain;background:#fff;border-radius:4px">'
        f"<div><div>{esc(title)}</div><div style='opacity:.7'>{esc(value)}</div></div></div>"
    )


def disagreements_ui(result, selection: Selection, label: str, models: list[str]) -> None:
    cat = selection.catalogue
    frame = disagreement.disagreements(result, cat, label, models)
    if frame.empty:
        return
    order = st.radio(
        "Queries where the models disagree most, by",
        ["lowest top-10 overlap", "largest precision gap"],
        horizontal=True,
        key="w_disagree_order",
    )
    if order == "largest precision gap":
        frame = frame.sort_values(["gap", "overlap"], ascending=[False, True], kind="stable")
    table = resources.products(cat)
    for row in frame.head(SHOWN_QUERIES).to_dict("records"):
        item_id = row["query"]
        card, figures, link = st.columns([3, 3, 2], vertical_alignment="center")
        card.html(
            _query_card_html(
                thumbs.thumbnail(cat, item_id),
                table.title(item_id) or item_id,
                row["value"],
                item_id,
            )
        )
        precisions = " · ".join(f"{m} {row[m]:.1f}" for m in models)
        figures.caption(
            escape_markdown(
                f"overlap {row['overlap']:.0%} · P@10 {precisions} · gap {row['gap']:.1f}"
            )
        )
        link.page_link(
            "app_pages/search.py",
            label="Search side by side",
            icon=":material/compare:",
            query_params={
                "catalog": cat.name,
                "models": ",".join(models),
                "k": "10",
                "label": label,
                "item": item_id,
            },
        )


def disagreement_ui(result, selection: Selection, label: str, shown: list[str]) -> None:
    """The whole section (models whose neighbours the evaluation lacks are left out: the page
    offers to measure them again, see `compare_ui.saved_result_ui`)."""
    models = disagreement.available_models(result, shown)
    if not models:
        return
    st.subheader("Where the models disagree")
    per_value_ui(result, selection, label, models)
    if len(models) > 1:
        disagreements_ui(result, selection, label, models)

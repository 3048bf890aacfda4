"""Text search held to the protocol of the Marqo fashion leaderboard ("KAGL"), on any catalogue.

The public benchmark of fashion CLIP models on this dataset; here for every model that answers
text (a native text tower, or a text bridge):

- **title queries**: N product titles (2,000 by default) drawn with a seed from the catalogue's
  distinct titles (`pick_title_queries`); relevant = every product carrying that exact title,
  ranked over the whole catalogue. recall@1, recall@10 and MRR@10, chance beside each
  (definitions in `embeddings.quality.kagl_metrics`).
- **label queries**, per label field: every value of the field as a bare text ("Tshirts",
  "Navy Blue"); relevant = the products with that value. precision@1 and precision@10, chance
  beside each.

A bridge learns from titles, so its title figures count only when it never trained on the query
titles: evaluation checks, for every bridge involved, that each product carrying a query title
(compared by `bridge.exclusion.title_key`) is among the products the bridge never trained on
(`holdout_ids.txt`), and refuses the title figures of a model otherwise, with the reason. The
recipe: `python -m embeddings pick-titles` writes the query titles, `build ...
--bridge-exclude-titles FILE` trains the bridges without them, and `evaluate --protocol kagl`
(which by default reads the titles back from the bridges) measures. Label queries are not titles,
so the exclusion does not apply to them.

Queries go through the same path as the CLI's `search --queries` (`Searcher.search_texts`): the
figures are those a user gets. Results are saved in `<catalogue>/evaluation/leaderboard.json`
with a Markdown table beside it; `load_leaderboard` returns None once an index or bridge changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from embeddings.artefacts import Recorded, model_record, read_report, save_report, stale_reason
from embeddings.bridge import read_bridge_manifest, read_excluded_titles, read_holdout_ids
from embeddings.bridge.exclusion import title_key
from embeddings.catalogue import Catalogue
from embeddings.errors import EmbeddingsError
from embeddings.progress import Progress, ProgressFn, no_progress
from embeddings.quality.kagl_metrics import MRR_DEPTH, label_figures, title_figures

PROTOCOL = "kagl"
DEFAULT_TITLE_QUERIES = 2000
LEADERBOARD_FILE = "leaderboard.json"
LEADERBOARD_SUMMARY = "leaderboard.md"
LEADERBOARD_FORMAT = 1
#: The two anchors of the public table (their figures; zero-shot, full-resolution images).
ANCHORS = {
    "Marqo-FashionSigLIP": {
        "recall@1": 0.179,
        "recall@10": 0.489,
        "mrr@10": 0.293,
        "articleType": 0.629,
        "baseColour": 0.502,
    },
    "FashionCLIP 2.0": {
        "recall@1": 0.122,
        "recall@10": 0.404,
        "mrr@10": 0.217,
        "articleType": 0.577,
        "baseColour": 0.443,
    },
}


def pick_title_queries(catalogue: Catalogue, n: int = DEFAULT_TITLE_QUERIES, seed: int = 0):
    """`n` distinct titles of the catalogue drawn with `seed` (all of them when fewer), sorted.

    Drawn uniformly over distinct titles (not products), as the public protocol does.
    """
    if n < 1:
        raise EmbeddingsError(f"the number of title queries must be at least 1 (got {n})")
    titles = catalogue.items["title"].astype(str).str.strip()
    distinct = sorted(set(titles[titles != ""]))
    if not distinct:
        raise EmbeddingsError(f"catalogue {catalogue.name!r} has no product titles to query with")
    if len(distinct) <= n:
        return distinct
    chosen = np.random.default_rng(seed).choice(len(distinct), n, replace=False)
    return sorted(distinct[i] for i in chosen)


@dataclass
class LeaderboardResult:
    """`figures[model]`: {"title": {...} or None, "labels": {field: {...}}}; `manifest`: what
    was measured (queries, models and their index/bridge builds, refusals, time)."""

    figures: dict[str, dict]
    manifest: dict

    def to_json(self) -> dict:
        return {"format": LEADERBOARD_FORMAT, "figures": self.figures, "manifest": self.manifest}


def bridge_parts(model_id: str) -> list[str]:
    """The models whose bridges a (possibly fused `A+B`) model's text queries go through."""
    from embeddings.models import get_spec

    parts = []
    for part in model_id.split("+"):
        try:
            if not get_spec(part).has_text:
                parts.append(part)
        except EmbeddingsError:
            continue
    return parts


def unseen_title_problem(catalogue: Catalogue, model_id: str, titles: Sequence[str]) -> str | None:
    """Why `titles` are not honest title queries for `model_id`'s bridges (None: they are).

    Every product whose title matches a query title (by `title_key`) must be one the bridge
    never trained on.
    """
    keys = {title_key(t) for t in titles}
    carriers = [
        item_id
        for item_id, title in catalogue.items["title"].astype(str).items()
        if title_key(title) in keys
    ]
    for part in bridge_parts(model_id):
        bridge_dir = catalogue.bridge_dir(part)
        if read_bridge_manifest(bridge_dir) is None:
            return f"the {part!r} text bridge is missing"
        unseen = set(read_holdout_ids(bridge_dir))
        seen = [i for i in carriers if i not in unseen]
        if seen:
            seen_titles = {title_key(catalogue.items.at[i, "title"]) for i in seen}
            return (
                f"the {part!r} text bridge trained on {len(seen_titles):,} of the "
                f"{len(keys):,} query titles ({len(seen):,} products); retrain it without them: "
                f"python -m embeddings bridge --catalog {catalogue.directory} --models {part} "
                "--exclude-titles FILE"
            )
    return None


def default_title_queries(catalogue: Catalogue, models: Sequence[str]) -> list[str]:
    """The titles the catalogue keeps out of its bridges (its bridge setting, see
    `embeddings.bridge.settings`), else those the models' bridges were built without.

    Raises when there are none, or the bridges disagree.
    """
    from embeddings.bridge.settings import BridgeSettings

    recorded = BridgeSettings.recorded(catalogue.info)
    if recorded is not None and recorded.exclude:
        return sorted(recorded.exclude.titles)
    found: dict[str, list[str]] = {}
    for model_id in models:
        for part in bridge_parts(model_id):
            found[part] = read_excluded_titles(catalogue.bridge_dir(part))
    sets = {tuple(sorted(v)) for v in found.values() if v}
    if len(sets) == 1 and all(found.values()):
        return list(next(iter(sets)))
    raise EmbeddingsError(
        "give the title queries with --title-queries FILE: "
        + (
            "the bridges were built without --bridge-exclude-titles"
            if not sets
            else "the bridges were built without the same --bridge-exclude-titles"
        )
        + f"; let the build pick them: python -m embeddings build --catalog {catalogue.directory}"
        " --kagl (or pick-titles --out titles.txt, then build --bridge-exclude-titles titles.txt)"
    )


def evaluate_leaderboard(
    catalogue: Catalogue,
    models: Sequence[str],
    title_queries: Sequence[str] | None = None,
    *,
    label_fields: Sequence[str] | None = None,
    searcher=None,
    progress: ProgressFn | None = None,
) -> LeaderboardResult:
    """Measure `models` on the protocol (see the module docstring).

    `title_queries`: default, the titles the bridges were built without. `searcher`: a
    `Searcher` (default `make_searcher(catalogue)`). A model whose title queries are not unseen
    by its bridges gets label figures only; the reason is in `manifest["refused_titles"]`.
    """
    from embeddings.search.searcher import make_searcher

    started = time.perf_counter()
    models = list(models)
    if not models:
        raise EmbeddingsError("name at least one model that answers text")
    titles = list(title_queries) if title_queries else default_title_queries(catalogue, models)
    fields = list(label_fields) if label_fields is not None else list(catalogue.label_fields)
    for field_name in fields:
        if field_name not in catalogue.label_fields:
            raise EmbeddingsError(
                f"catalogue {catalogue.name!r} has no label field {field_name!r}; "
                f"label fields: {', '.join(catalogue.label_fields) or 'none'}"
            )
    searcher = searcher or make_searcher(catalogue)
    relevance = _Relevance(catalogue)
    unknown = [t for t in titles if not relevance.title(t)]
    if unknown:
        raise EmbeddingsError(
            f"{len(unknown):,} title queries are titles of no product in catalogue "
            f"{catalogue.name!r}, e.g. {unknown[0]!r}"
        )
    figures, refused = {}, {}
    steps = iter(range(len(models) * (1 + len(fields))))
    total = len(models) * (1 + len(fields))

    def say(message: str) -> None:
        (progress or no_progress)(Progress("kagl", None, next(steps), total, message))

    for model_id in models:
        say(f"{model_id}: {len(titles):,} title queries")
        problem = unseen_title_problem(catalogue, model_id, titles)
        entry: dict = {"title": None, "labels": {}}
        if problem is None:
            found = _ranked(searcher, model_id, titles, relevance)
            relevant = [relevance.title(t) for t in titles]
            entry["title"] = title_figures(found, relevant, len(relevance))
        else:
            refused[model_id] = problem
        for field_name in fields:
            values = relevance.values(field_name)
            say(f"{model_id}: {len(values):,} {field_name} queries")
            found = _ranked(searcher, model_id, values, relevance)
            sets = [relevance.label(field_name, v) for v in values]
            entry["labels"][field_name] = label_figures(found, sets, len(relevance))
        figures[model_id] = entry
    manifest = {
        "protocol": PROTOCOL,
        "catalogue": {
            "name": catalogue.name,
            "fingerprint": catalogue.fingerprint,
            "count": len(catalogue),
        },
        "models": {m: _model_entry(catalogue, m) for m in models},
        "title_queries": len(titles),
        "title_queries_sha256": _titles_sha(titles),
        "label_fields": fields,
        "refused_titles": refused,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return LeaderboardResult(figures, manifest)


class _Relevance:
    """Catalogue positions of the products relevant to a title or a label value."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.position = {item_id: row for row, item_id in enumerate(catalogue.ids)}
        titles = catalogue.items["title"].astype(str).str.strip()
        self._titles = _groups(titles)
        self._labels: dict[str, dict[str, set[int]]] = {}

    def __len__(self) -> int:
        return len(self.position)

    def title(self, title: str) -> set[int]:
        return self._titles.get(str(title).strip(), set())

    def _field(self, field_name: str) -> dict[str, set[int]]:
        if field_name not in self._labels:
            values = self.catalogue.items[field_name].fillna("").astype(str).str.strip()
            self._labels[field_name] = _groups(values)
        return self._labels[field_name]

    def values(self, field_name: str) -> list[str]:
        return sorted(self._field(field_name))

    def label(self, field_name: str, value: str) -> set[int]:
        return self._field(field_name).get(value, set())


def _groups(values) -> dict[str, set[int]]:
    groups: dict[str, set[int]] = {}
    for row, value in enumerate(values.tolist()):
        if value:
            groups.setdefault(value, set()).add(row)
    return groups


def _ranked(searcher, model_id: str, texts: list[str], relevance: _Relevance) -> np.ndarray:
    """Catalogue positions of each text's top MRR_DEPTH results (-1 padding)."""
    answers = searcher.search_texts(texts, [model_id], MRR_DEPTH)
    found = np.full((len(texts), MRR_DEPTH), -1, dtype=np.int64)
    for i, answer in enumerate(answers):
        rows = [relevance.position.get(hit.id, -1) for hit in answer[model_id]]
        found[i, : len(rows)] = rows
    return found


def _titles_sha(titles: Sequence[str]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in sorted({title_key(t) for t in titles}):
        digest.update(key.encode() + b"\n")
    return digest.hexdigest()


def _model_entry(catalogue: Catalogue, model_id: str) -> dict:
    entry: dict = {"indexes": {}, "bridges": {}}
    for part in model_id.split("+"):
        entry["indexes"][part] = model_record(catalogue, part).index
    for part in bridge_parts(model_id):
        bridge = read_bridge_manifest(catalogue.bridge_dir(part)) or {}
        entry["bridges"][part] = {
            "trained_at": bridge.get("trained_at"),
            "recipe": bridge.get("recipe", "linear"),
            "excluded_titles": bridge.get("excluded_titles"),
        }
    return entry


# -- saving, loading, reporting ------------------------------------------------------------------
def _records(models: dict) -> Iterator[Recorded]:
    for entry in models.values():
        for part, identity in entry.get("indexes", {}).items():
            yield Recorded(part, identity if identity is not None else "")
        for part, bridge in entry.get("bridges", {}).items():
            yield Recorded(part, bridge=True, bridge_trained_at=bridge.get("trained_at"))


def leaderboard_stale_reason(catalogue: Catalogue, manifest: dict) -> str | None:
    """Why saved figures no longer describe the catalogue's indexes and bridges (None: current)."""
    fingerprint = manifest.get("catalogue", {}).get("fingerprint")
    return stale_reason(catalogue, fingerprint, _records(manifest.get("models", {})))


def save_leaderboard(catalogue: Catalogue, result: LeaderboardResult) -> dict:
    """Write `leaderboard.json` and `leaderboard.md` under `<catalogue>/evaluation/`."""
    return save_report(
        catalogue,
        LEADERBOARD_FILE,
        result.to_json(),
        LEADERBOARD_SUMMARY,
        leaderboard_markdown(result),
    )


def load_leaderboard(catalogue: Catalogue) -> LeaderboardResult | None:
    """The saved figures, or None when there are none, they are unreadable, or stale."""
    data = read_report(catalogue, LEADERBOARD_FILE, LEADERBOARD_FORMAT)
    if data is None:
        return None
    manifest = data.get("manifest") or {}
    if leaderboard_stale_reason(catalogue, manifest) is not None:
        return None
    return LeaderboardResult(data.get("figures") or {}, manifest)


def table_rows(result: LeaderboardResult, fields: Sequence[str] | None = None) -> list[dict]:
    """One row per model (the anchors first): title R@1, R@10, MRR@10 and label P@10 per field,
    then a chance row."""
    fields = list(fields or result.manifest.get("label_fields", []))
    rows = [
        {"model": f"{name} (their table)", **{k: v for k, v in figures.items()}}
        for name, figures in ANCHORS.items()
    ]
    chance: dict = {"model": "chance"}
    for model_id, entry in result.figures.items():
        row: dict = {"model": model_id}
        title = entry.get("title")
        for metric in ("recall@1", "recall@10", f"mrr@{MRR_DEPTH}"):
            row[metric] = title.get(metric) if title else None
            if title:
                chance[metric] = title.get(f"chance_{metric}")
        for field_name in fields:
            figures = entry.get("labels", {}).get(field_name)
            row[field_name] = figures.get("precision@10") if figures else None
            if figures:
                chance[field_name] = figures.get("chance_precision@10")
        rows.append(row)
    return [*rows, chance]


def leaderboard_markdown(result: LeaderboardResult) -> str:
    """The issue's table: title R@1/R@10/MRR@10 and label P@10 per field, anchors and chance."""
    manifest = result.manifest
    fields = manifest.get("label_fields", [])
    header = ["model", "title R@1", "R@10", f"MRR@{MRR_DEPTH}"] + [f"{f} P@10" for f in fields]
    keys = ["recall@1", "recall@10", f"mrr@{MRR_DEPTH}", *fields]
    lines = [
        f"# Text search, Marqo fashion leaderboard protocol: {manifest['catalogue']['name']}",
        "",
        f"{manifest['catalogue']['count']:,} products; {manifest['title_queries']:,} title "
        "queries unseen by every bridge (relevant = every product with the title); label queries "
        f"are each field's bare values. Measured {manifest['created_at']} in "
        f"{manifest['seconds']:.0f} s.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table_rows(result, fields):
        cells = [row["model"]] + [_cell(row.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    p1 = ["", "Label precision@1:", "", "| model | " + " | ".join(fields) + " |"]
    p1.append("|" + "---|" * (len(fields) + 1))
    for model_id, entry in result.figures.items():
        cells = [_cell(entry["labels"].get(f, {}).get("precision@1")) for f in fields]
        p1.append(f"| {model_id} | " + " | ".join(cells) + " |")
    lines += p1
    for model_id, reason in manifest.get("refused_titles", {}).items():
        lines.append(f"\n`{model_id}`: no title figures ({reason})")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2g}" if 0 < abs(value) < 0.001 else f"{value:.3f}"

"""Which parts of the `memory` bridge recipe matter: an ablation on the bridge's held-out titles.

The settings of `embeddings.bridge.recipes.MemoryOptions` were chosen on these figures, never on
a benchmark's queries: the validation queries are 1,000 titles (drawn with seed 1) of the
bridge's own held-out split (the 10% of titles it never trains on), minus any title excluded
with `--title-queries` (the benchmark's, which stay unseen here too). Relevant = every product
with the title, over the whole catalogue, as in `embeddings.quality.kagl`. The head is trained
once (as `fit_bridge` does); each variant only rebuilds the memory, which takes seconds.

    python -m bench.bridge_ablation --catalog data/fashion-full --model efficientnet-lite0 \\
        --title-queries titles.txt

Prints one JSON line per variant: recall@1, recall@10, MRR@10 of the validation titles, and
articleType / baseColour precision@10 of the bare-label queries (which the label sentences of
the memory are made of: read those as "what the labels teach", not as unseen queries).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from embeddings.bridge import TextBridge, title_vectors, train_head
from embeddings.bridge.exclusion import ExcludedTitles, read_title_file
from embeddings.bridge.memory_fit import fit_memory, sentence_vectors
from embeddings.bridge.recipes import MemoryOptions
from embeddings.bridge.training import holdout_titles
from embeddings.catalogue import Catalogue
from embeddings.index.store import load_vectors
from embeddings.quality.kagl_metrics import label_figures, title_figures

VARIANTS = {
    "linear head alone": None,
    "head + memory of titles (MiniLM only)": MemoryOptions(lexical_weight=0.0, label_fields=0),
    "head + memory of titles (MiniLM + TF-IDF)": MemoryOptions(label_fields=0),
    "head + memory of titles and label sentences (default)": MemoryOptions(),
    "memory alone (head weight 0)": MemoryOptions(head_weight=0.0),
    "head + memory, 5 neighbours": MemoryOptions(neighbours=5),
    "head + memory, 20 neighbours": MemoryOptions(neighbours=20),
    "head + memory, head weight 0.7": MemoryOptions(head_weight=0.7),
    "head + memory, label sentences of up to 3 fields": MemoryOptions(label_fields=3),
}


def top10(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ vectors.T
        part = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--title-queries", help="benchmark titles: kept out of training too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    catalogue = Catalogue.open(args.catalog)
    ids, vectors = load_vectors(catalogue.model_dir(args.model))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    titles = catalogue.items["title"].reindex(ids).fillna("").astype(str).str.strip().to_numpy()
    exclude = ExcludedTitles.of(read_title_file(args.title_queries) if args.title_queries else [])
    cache = title_vectors(catalogue)
    held = holdout_titles(cache.titles, seed=args.seed)
    is_excluded = np.array([t in exclude for t in titles])
    is_held = np.array([t in held for t in titles]) & ~is_excluded
    train_rows = np.flatnonzero((titles != "") & ~is_held & ~is_excluded)
    by_title: dict[str, set[int]] = {}
    for row, title in enumerate(titles):
        by_title.setdefault(title, set()).add(row)
    pool = sorted({t for t in titles[is_held] if t})
    chosen = np.random.default_rng(1).choice(len(pool), min(1000, len(pool)), replace=False)
    val = sorted(pool[i] for i in chosen)
    labels = {}
    for field in ("articleType", "baseColour"):
        values = catalogue.items[field].reindex(ids).fillna("").astype(str).to_numpy()
        names = sorted(set(values) - {""})
        labels[field] = (names, [set(np.flatnonzero(values == v)) for v in names])
    started = time.perf_counter()
    weights, bias = train_head(
        cache.for_titles(titles[train_rows]), vectors[train_rows], seed=args.seed
    )
    print(json.dumps({"head_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    label_vectors = {f: sentence_vectors(catalogue, names) for f, (names, _) in labels.items()}
    for name, options in VARIANTS.items():
        started = time.perf_counter()
        memory, basis = (None, None)
        manifest = {"memory": (options or MemoryOptions()).__dict__}
        if options is not None:
            memory, basis = fit_memory(
                catalogue, ids, vectors, titles, train_rows, cache, options, args.seed
            )
        bridge = TextBridge(args.model, weights, bias, manifest, memory, basis)
        queries = bridge.encode_sentence_vectors(cache.for_titles(val), val)
        figures = title_figures(top10(queries, vectors), [by_title[t] for t in val], len(ids))
        row = {
            "variant": name,
            "val R@1": round(figures["recall@1"], 4),
            "val R@10": round(figures["recall@10"], 4),
            "val MRR@10": round(figures["mrr@10"], 4),
        }
        for field, (names, relevant) in labels.items():
            found = top10(bridge.encode_sentence_vectors(label_vectors[field], names), vectors)
            figures = label_figures(found, relevant, len(ids))
            row[f"{field} P@10"] = round(figures["precision@10"], 4)
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Image plus words: "this product, but in <another colour>", measured per model.

    python -m bench.bench_mix --catalog /work/data/fashion-full \\
        --models efficientnet-lite0,pixels,efficientnet-lite0+pixels --queries 500

For sampled products (seeded), a colour word other than the product's own baseColour is drawn
from the common colours (those of at least `--min-colour` products). Three queries per product,
per model, each answered by `Searcher` exactly as the app and the CLI do (`Query`; the product
itself is never a result):

- *image*: the product alone;
- *text*: the colour word alone (through the model's text tower or text bridge);
- *mix w*: the product plus the colour word, with text weight w (several w).

For each, the share of the top 10 with the asked colour, the share keeping the product's
articleType, and the share with both, beside chance (the share of the catalogue with the asked
colour / with the product's articleType, averaged over the queries). Query vectors come from
`Searcher.query_vector`; the searches run batched through each model's index.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from embeddings.catalogue import Catalogue
from embeddings.config import resolve_catalog_dir
from embeddings.index.opening import open_snapshot
from embeddings.search.query import Query, check_query
from embeddings.search.searcher import make_searcher

K = 10
WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
BATCH = 256
EXCLUDED_COLOURS = {"Multi"}  # not a colour a shopper would type


def sample_queries(catalogue: Catalogue, n: int, seed: int, min_colour: int) -> list[dict]:
    """[{id, own colour, asked colour, articleType}] for n sampled products."""
    items = catalogue.items
    counts = catalogue.label_counts("baseColour")
    colours = sorted(
        c for c, count in counts.items() if count >= min_colour and c not in EXCLUDED_COLOURS
    )
    rng = np.random.default_rng(seed)
    pool = items[(items["articleType"] != "") & (items["baseColour"] != "")].index.to_numpy()
    chosen = rng.choice(pool, size=min(n, len(pool)), replace=False)
    out = []
    for item_id in chosen:
        own = items.at[item_id, "baseColour"]
        asked = str(rng.choice([c for c in colours if c != own]))
        out.append(
            {
                "id": str(item_id),
                "own": own,
                "asked": asked,
                "type": items.at[item_id, "articleType"],
            }
        )
    return out


def ranked_ids(index, vectors: np.ndarray, excluded: list[str]) -> list[list[str]]:
    """Top K ids per query vector, leaving out each query's own product."""
    out = []
    for start in range(0, len(vectors), BATCH):
        _, rows = index.search(vectors[start : start + BATCH], K + 1)
        for own, found in zip(excluded[start : start + BATCH], rows, strict=True):
            ids = [index.ids[r] for r in found if r >= 0 and index.ids[r] != own]
            out.append(ids[:K])
    return out


def shares(items, queries: list[dict], results: list[list[str]]) -> dict:
    colour = items["baseColour"].to_dict()
    kind = items["articleType"].to_dict()
    asked, kept, both = [], [], []
    for query, ids in zip(queries, results, strict=True):
        is_colour = np.array([colour[i] == query["asked"] for i in ids], dtype=bool)
        is_type = np.array([kind[i] == query["type"] for i in ids], dtype=bool)
        asked.append(is_colour.mean() if ids else 0.0)
        kept.append(is_type.mean() if ids else 0.0)
        both.append((is_colour & is_type).mean() if ids else 0.0)
    return {
        "asked colour": round(float(np.mean(asked)), 3),
        "articleType kept": round(float(np.mean(kept)), 3),
        "both": round(float(np.mean(both)), 3),
    }


class CachedWords:
    """A text encoder that encodes each distinct text once (the same few colour words recur)."""

    def __init__(self, encoder):
        self._encoder, self._vectors = encoder, {}
        self.kind = getattr(encoder, "kind", "native")
        self.weights_id = encoder.weights_id

    def encode_texts(self, texts):
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._encoder.encode_texts(missing), strict=True))
        return np.stack([self._vectors[t] for t in texts])


def cache_words(searcher) -> None:
    """Make the searcher's text encoders `CachedWords` (one per model, kept)."""
    load, kept = searcher.text_encoder_loader, {}

    def cached(model_id: str):
        if model_id not in kept:
            kept[model_id] = CachedWords(load(model_id))
        return kept[model_id]

    searcher.text_encoder_loader = cached


def measure_model(searcher, catalogue, model_id: str, queries: list[dict]) -> dict:
    index = searcher.index_loader(model_id)
    modes = {"image": None, "text": None, **{f"mix {w}": w for w in WEIGHTS}}
    figures, seconds = {}, {}
    for mode, weight in modes.items():
        started = time.perf_counter()
        vectors = np.stack(
            [
                searcher.query_vector(_query(q, mode, weight, catalogue), model_id, index)
                for q in queries
            ]
        )
        results = ranked_ids(index, vectors, [q["id"] for q in queries])
        figures[mode] = shares(catalogue.items, queries, results)
        seconds[mode] = round(time.perf_counter() - started, 1)
        print(f"[{model_id}] {mode}: {figures[mode]} in {seconds[mode]} s", file=sys.stderr)
    return {"figures": figures, "seconds": seconds}


def _query(q: dict, mode: str, weight: float | None, catalogue) -> Query:
    word = q["asked"].lower()
    if mode == "image":
        query = Query(item=q["id"])
    elif mode == "text":
        query = Query(text=word)
    else:
        query = Query(item=q["id"], text=word, text_weight=weight)
    return check_query(query, catalogue)


def chance(catalogue: Catalogue, queries: list[dict]) -> dict:
    n = len(catalogue)
    colours = catalogue.label_counts("baseColour")
    types = catalogue.label_counts("articleType")
    return {
        "asked colour": round(float(np.mean([colours[q["asked"]] / n for q in queries])), 3),
        "articleType kept": round(float(np.mean([types[q["type"]] / n for q in queries])), 3),
    }


def markdown(report: dict) -> str:
    columns = ["asked colour", "articleType kept", "both"]
    header = ["model", "query", *(f"{c} (top {K})" for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model_id, entry in report["models"].items():
        for mode, f in entry["figures"].items():
            cells = [f"`{model_id}`", mode, *(f"{f[c]:.3f}" for c in columns)]
            lines.append("| " + " | ".join(cells) + " |")
    c = report["chance"]
    lines.append(f"| *chance* |  | {c['asked colour']:.3f} | {c['articleType kept']:.3f} |  |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--models", default="efficientnet-lite0,pixels,efficientnet-lite0+pixels")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-colour", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    catalogue, indexes = open_snapshot(resolve_catalog_dir(args.catalog), models)
    searcher = make_searcher(catalogue, indexes=indexes)
    cache_words(searcher)
    queries = sample_queries(catalogue, args.queries, args.seed, args.min_colour)
    report = {
        "catalogue": catalogue.name,
        "queries": len(queries),
        "seed": args.seed,
        "colours": sorted({q["asked"] for q in queries}),
        "chance": chance(catalogue, queries),
        "models": {m: measure_model(searcher, catalogue, m, queries) for m in models},
    }
    print(
        f"{len(queries)} products of {catalogue.name} (seed {args.seed}), each with a colour "
        f"word other than its own, from: {', '.join(report['colours'])}\n"
    )
    print(markdown(report))
    print(
        "\nseconds per model and query kind:",
        {m: e["seconds"] for m, e in report["models"].items()},
    )
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Query latency on a built catalogue, one query at a time, single thread.

For each model: the tutorial's method (embeddings as Python lists in a pandas column,
`sklearn.metrics.pairwise.cosine_similarity`, sort), a numpy matmul + argpartition, a bare
FAISS scan of the same index, and our search call (`Searcher.search_item`, k=10, the item
excluded). Optionally: an HNSW graph over the same vectors (recall@10 against exact, per
efSearch), a float16 index, a filtered query, and the side-by-side query over every built model.

    python -m bench.bench_query --catalogue /tmp/eval/full --models pixels,efficientnet-lite0 \
        --queries 200 --hnsw efficientnet-lite0 --side-by-side
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.common import (
    emit,
    log,
    machine,
    peak_rss_mib,
    single_thread,
    time_each,
    time_interleaved,
)

single_thread()  # before numpy: BLAS reads its thread count at import

import numpy as np  # noqa: E402

K = 10
#: The tutorial's frame holds one Python float object per dimension (~32 bytes with its list
#: slot); above this it is not run, and the table says why.
TUTORIAL_MAX_GIB = 8.0


def tutorial_frame(ids: list[str], vectors: np.ndarray):
    """The tutorial's storage: a DataFrame with one Python list of floats per product."""
    import pandas as pd

    return pd.DataFrame({"id": ids, "embedding": [row.tolist() for row in vectors]})


def tutorial_query(frame, row: int, k: int = K) -> list[str]:
    """The tutorial's query: cosine_similarity of one list against the column, full argsort."""
    from sklearn.metrics.pairwise import cosine_similarity

    query = frame.at[row, "embedding"]
    similarities = cosine_similarity([query], frame["embedding"].tolist())[0]
    top = similarities.argsort()[::-1]
    return [frame.at[int(i), "id"] for i in top if i != row][:k]


def numpy_query(vectors: np.ndarray, row: int, k: int = K) -> np.ndarray:
    scores = vectors @ vectors[row]
    top = np.argpartition(-scores, k + 1)[: k + 1]
    top = top[np.argsort(-scores[top])]
    return top[top != row][:k]


def overlap(a, b) -> float:
    return len(set(a) & set(b)) / max(1, len(b))


def bench_model(
    catalogue, model_id: str, rows: np.ndarray, *, tutorial_queries: int, with_float16: bool
) -> dict:
    from embeddings.index.opening import open_index
    from embeddings.index.store import load_vectors
    from embeddings.search.searcher import Searcher

    index = open_index(catalogue, model_id)  # as the app opens it (memory-mapped)
    ids, vectors = load_vectors(catalogue.model_dir(model_id))
    n, dim = vectors.shape
    searcher = Searcher(catalogue, lambda m: index)
    query_ids = [ids[r] for r in rows]
    result: dict = {
        "count": n,
        "dim": dim,
        "index_type": index.manifest.get("index_type"),
        "vectors_dtype": index.manifest.get("vectors_dtype"),
    }

    log(
        f"{model_id}: our search call, bare FAISS scan, numpy matmul ({len(rows)} "
        "queries, interleaved)"
    )
    faiss_index = index.index
    result.update(
        time_interleaved(
            {
                "ours": lambda i: searcher.search_item(query_ids[i], [model_id], K),
                "faiss_bare": lambda i: faiss_index.search(vectors[rows[i] : rows[i] + 1], K + 1),
                "numpy": lambda i: numpy_query(vectors, int(rows[i])),
            },
            len(rows),
        )
    )
    # Same answers: our top-10 against numpy's (float sums may swap near-ties).
    agreement = [
        overlap(
            [h.id for h in searcher.search_item(query_ids[i], [model_id], K)[model_id]],
            [ids[j] for j in numpy_query(vectors, int(rows[i]))],
        )
        for i in range(min(50, len(rows)))
    ]
    result["ours_vs_numpy_top10_overlap"] = float(np.mean(agreement))

    need_gib = n * dim * 32 / 2**30
    if tutorial_queries <= 0:
        result["tutorial"] = {"skipped": "not requested"}
    elif need_gib > TUTORIAL_MAX_GIB:
        result["tutorial"] = {
            "skipped": f"the tutorial's frame would hold {n:,} x {dim:,} Python floats "
            f"(~{need_gib:.0f} GiB) on a {machine().get('memory_gib')} GiB machine"
        }
    else:
        log(f"{model_id}: building the tutorial's frame of Python lists (~{need_gib:.1f} GiB)")
        started = time.perf_counter()
        frame = tutorial_frame(ids, vectors)
        frame_s = time.perf_counter() - started
        count = min(tutorial_queries, len(rows))
        log(
            f"{model_id}: tutorial method ({count} queries, each followed by our call "
            "on the same item)"
        )
        # Paired with our call query by query: the ratio then compares the two under the same load.
        paired = time_interleaved(
            {
                "tutorial": lambda i: tutorial_query(frame, int(rows[i])),
                "ours": lambda i: searcher.search_item(query_ids[i], [model_id], K),
            },
            count,
            warmup=1,
        )
        result["tutorial"] = paired["tutorial"]
        result["ours_paired_with_tutorial"] = paired["ours"]
        result["tutorial"]["frame_build_s"] = frame_s
        result["tutorial_vs_ours_top10_overlap"] = float(
            np.mean(
                [
                    overlap(
                        tutorial_query(frame, int(rows[i])),
                        [h.id for h in searcher.search_item(query_ids[i], [model_id], K)[model_id]],
                    )
                    for i in range(min(5, count))
                ]
            )
        )
        del frame
        result["ratio_tutorial_over_ours_p50"] = (
            result["tutorial"]["p50_ms"] / result["ours_paired_with_tutorial"]["p50_ms"]
        )
    result["ratio_ours_over_faiss_bare_p50"] = (
        result["ours"]["p50_ms"] / result["faiss_bare"]["p50_ms"]
    )
    result["ratio_ours_over_numpy_p50"] = result["ours"]["p50_ms"] / result["numpy"]["p50_ms"]
    result["ratio_ours_over_best_bare_p50"] = result["ours"]["p50_ms"] / min(
        result["faiss_bare"]["p50_ms"], result["numpy"]["p50_ms"]
    )

    if with_float16:
        from embeddings.index.store import FaissIndex, make_faiss_index

        half = make_faiss_index(vectors, hnsw_above=n + 1, store_dtype="float16")
        half_index = FaissIndex(model_id, index.manifest, half, ids)
        half_searcher = Searcher(catalogue, lambda m: half_index)
        log(f"{model_id}: float16 index (interleaved with float32)")
        result["ours_float16"] = time_interleaved(
            {
                "float16": lambda i: half_searcher.search_item(query_ids[i], [model_id], K),
                "float32": lambda i: searcher.search_item(query_ids[i], [model_id], K),
            },
            len(rows),
        )["float16"]
        result["float16_vs_float32_top10_overlap"] = float(
            np.mean(
                [
                    overlap(
                        [h.id for h in half_searcher.search_item(q, [model_id], K)[model_id]],
                        [h.id for h in searcher.search_item(q, [model_id], K)[model_id]],
                    )
                    for q in query_ids
                ]
            )
        )
        result["float16_index_mib"] = half.sa_code_size() * n / 2**20
        result["float32_index_mib"] = n * dim * 4 / 2**20

    label = (
        "gender" if "gender" in catalogue.label_fields else (catalogue.label_fields or [None])[0]
    )
    if label:
        value = catalogue.items[label].value_counts().index[0]
        filters = {label: value}
        log(f"{model_id}: filtered by {filters}")
        result["ours_filtered"] = time_each(
            lambda i: searcher.search_item(query_ids[i], [model_id], K, filters=filters), len(rows)
        )
        result["ours_filtered"]["filters"] = filters
        result["ours_filtered"]["allowed"] = int((catalogue.items[label] == value).sum())
    return result


def bench_hnsw(catalogue, model_id: str, rows: np.ndarray, ef_values: list[int]) -> dict:
    """HNSW over the same vectors (the library's M and efConstruction): recall@10 and latency."""
    import faiss

    from embeddings.index.store import HNSW_EF_CONSTRUCTION, HNSW_M, FaissIndex, load_vectors
    from embeddings.search.searcher import Searcher

    ids, vectors = load_vectors(catalogue.model_dir(model_id))
    n, dim = vectors.shape
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    truth = [
        set(r for r in exact.search(vectors[row : row + 1], K + 1)[1][0] if r != row)
        for row in rows
    ]
    graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    build_threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(build_threads)  # the build time is not a single-thread figure
    log(
        f"{model_id}: building HNSW M={HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION} "
        f"over {n:,} vectors"
    )
    started = time.perf_counter()
    graph.add(vectors)
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    manifest = {"model_id": model_id, "dim": dim, "weights_id": "-", "index_type": "hnsw"}
    model_index = FaissIndex(model_id, manifest, graph, ids)
    searcher = Searcher(catalogue, lambda m: model_index)
    query_ids = [ids[r] for r in rows]
    out = {
        "count": n,
        "dim": dim,
        "M": HNSW_M,
        "efConstruction": HNSW_EF_CONSTRUCTION,
        "build_s": build_s,
        "threads_for_build": build_threads,
        "by_efSearch": {},
    }
    for ef in ef_values:
        graph.hnsw.efSearch = ef
        recall = np.mean(
            [
                len(
                    truth[i]
                    & {
                        row_of[h.id]
                        for h in searcher.search_item(query_ids[i], [model_id], K)[model_id]
                    }
                )
                / K
                for i in range(len(rows))
            ]
        )
        log(f"{model_id}: HNSW efSearch={ef}: recall@10 {recall:.4f}")
        timed = time_interleaved(
            {
                "ours": lambda i: searcher.search_item(query_ids[i], [model_id], K),
                "faiss_bare": lambda i: graph.search(vectors[rows[i] : rows[i] + 1], K + 1),
            },
            len(rows),
        )
        out["by_efSearch"][str(ef)] = {"recall_at_10": float(recall), **timed}
    return out


def bench_side_by_side(catalogue, rows_of_ids: list[str], models: list[str]) -> dict:
    from embeddings.search.searcher import make_searcher

    searcher = make_searcher(catalogue)
    for model_id in models:  # open every index first: the figure is the query, not the load
        searcher.search_item(rows_of_ids[0], [model_id], K)
    log(f"side by side over {models}")
    return {
        "models": models,
        "ours": time_each(
            lambda i: searcher.search_item(rows_of_ids[i], models, K), len(rows_of_ids)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", required=True)
    parser.add_argument("--models", default="pixels,efficientnet-lite0")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--tutorial-queries",
        type=int,
        default=None,
        help="queries for the tutorial's method (default: --queries); 0 skips it",
    )
    parser.add_argument(
        "--tutorial-queries-for",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="a different tutorial query count for one model (its method can take seconds)",
    )
    parser.add_argument(
        "--hnsw", default="", help="models to measure an HNSW graph for (comma-separated)"
    )
    parser.add_argument("--ef", default="16,32,64,128", help="efSearch values for --hnsw")
    parser.add_argument("--float16", default="", help="models to measure a float16 index for")
    parser.add_argument(
        "--side-by-side", action="store_true", help="also time one query over every built model"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from embeddings.catalogue import Catalogue
    from embeddings.index.opening import built_models

    catalogue = Catalogue.open(args.catalogue)
    built = built_models(catalogue)
    models = [m for m in args.models.split(",") if m]
    missing = [m for m in models if m not in built]
    if missing:
        print(
            f"error: {args.catalogue} has no index for {', '.join(missing)} (built: "
            f"{', '.join(built) or 'none'})",
            file=sys.stderr,
        )
        return 2
    per_model_tutorial = dict(pair.split("=", 1) for pair in args.tutorial_queries_for)
    rng = np.random.default_rng(args.seed)
    result = {
        "catalogue": str(catalogue.directory),
        "products": len(catalogue),
        "k": K,
        "threads": 1,
        "queries": args.queries,
        "machine": machine(),
        "models": {},
        "hnsw": {},
    }
    for model_id in models:
        ids = (catalogue.model_dir(model_id) / "ids.txt").read_text().splitlines()
        rows = rng.choice(len(ids), size=min(args.queries, len(ids)), replace=False)
        tutorial = int(
            per_model_tutorial.get(
                model_id,
                args.tutorial_queries if args.tutorial_queries is not None else args.queries,
            )
        )
        result["models"][model_id] = bench_model(
            catalogue,
            model_id,
            rows,
            tutorial_queries=tutorial,
            with_float16=model_id in args.float16.split(","),
        )
        if model_id in args.hnsw.split(","):
            result["hnsw"][model_id] = bench_hnsw(
                catalogue, model_id, rows, [int(e) for e in args.ef.split(",")]
            )
    if args.side_by_side:
        # Items every model has a vector for (an unreadable image is missing from all of them).
        every = set(catalogue.ids)
        for model_id in built:
            every &= set((catalogue.model_dir(model_id) / "ids.txt").read_text().splitlines())
        every = sorted(every)
        picks = [
            every[i]
            for i in rng.choice(len(every), size=min(args.queries, len(every)), replace=False)
        ]
        result["side_by_side"] = bench_side_by_side(catalogue, picks, built)
    result["peak_rss_mib"] = peak_rss_mib()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

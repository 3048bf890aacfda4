"""The Ray engine against the local engine: images/s of the embedding step on the same catalogue.

    python -m bench.bench_ray --items 5000 --models efficientnet-lite0,pixels

For each model, the same `--items` products of the shared fashion set (stratified) are embedded
by `embed_catalogue` with the local engine, then with the Ray engine on a local Ray cluster it
starts on this machine (`--ray-address` for a running one), `--rounds` times each, interleaved.
Reported per model and engine: images/s of the embedding step (median of the rounds), the
Ray/local ratio, the Ray engine's time to its first vector (from submitting the job; joining
the cluster is reported apart), each actor's throughput inside the model, and the lowest
cosine between the two engines' vectors of a row. Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from bench.common import SHARED_FASHION, emit, log, machine


def _catalogue(source: Path, work: Path, items: int):
    from embeddings.catalogue import create_catalogue

    out = work / f"fashion-{items}"
    shutil.rmtree(out, ignore_errors=True)
    limit = None if items <= 0 else items
    return create_catalogue(str(source), out, limit=limit)


def _run(catalogue, embedder, engine, batch_size: int) -> dict:
    from embeddings.building.model import embed_catalogue

    started = time.perf_counter()
    embedded = embed_catalogue(
        catalogue, embedder, batch_size=batch_size, force=True, engine=engine
    )
    wall = time.perf_counter() - started
    shutil.rmtree(embedded.work_dir, ignore_errors=True)  # the next round embeds again
    report = embedded.report
    return {
        "images": report.embedded,
        "embed_seconds": round(report.seconds, 2),
        "images_per_second": round(report.items_per_second, 1),
        "wall_seconds": round(wall, 2),
        "vectors": embedded.vectors,
    }


def _lowest_cosine(a, b) -> float:
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosine.min())


def bench_model(catalogue, model_id: str, engine, rounds: int, batch_size: int) -> dict:
    from embeddings.models import load_model

    embedder = load_model(model_id)
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    first, actors = [], []
    for round_number in range(rounds):
        for name in ("local", "ray"):
            log(f"{model_id}: round {round_number + 1}/{rounds}, {name} engine")
            if name == "ray":
                engine.first_vector_seconds = None
                engine.stats.clear()
            runs[name].append(_run(catalogue, embedder, engine if name == "ray" else None,
                                   batch_size))  # fmt: skip
            if name == "ray":
                first.append(engine.first_vector_seconds)
                actors.append({
                    worker: {"images": s.rows, "images_per_second": round(s.rows_per_second, 1)}
                    for worker, s in engine.stats.items()
                })  # fmt: skip
            log(f"  {runs[name][-1]['images_per_second']} img/s")
    rate = {n: statistics.median(r["images_per_second"] for r in runs[n]) for n in runs}
    cosine = _lowest_cosine(runs["local"][-1]["vectors"], runs["ray"][-1]["vectors"])
    for name in runs:
        for run in runs[name]:
            run.pop("vectors")
    return {
        "model": model_id,
        "images": runs["local"][0]["images"],
        "images_per_second": rate,
        "ray_over_local": round(rate["ray"] / rate["local"], 3) if rate["local"] else None,
        "ray_first_vector_seconds": [round(s, 2) for s in first if s is not None],
        "ray_actors": actors,
        "lowest_row_cosine": round(cosine, 7),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED_FASHION)
    parser.add_argument("--items", type=int, default=5000, help="products (0: all)")
    parser.add_argument("--models", default="efficientnet-lite0,pixels")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ray-address", help="a running cluster (default: a local one)")
    parser.add_argument("--actor-cpus", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-ray"))
    args = parser.parse_args(argv)

    from embeddings.building.ray_engine import RayEngine

    catalogue = _catalogue(args.source, args.work, args.items)
    engine = RayEngine(address=args.ray_address, actor_cpus=args.actor_cpus)
    started = time.perf_counter()
    engine.connect()
    connect_seconds = time.perf_counter() - started
    import ray

    try:
        results = [
            bench_model(catalogue, model_id, engine, args.rounds, args.batch_size)
            for model_id in args.models.split(",")
        ]
        cluster_cpus = ray.cluster_resources().get("CPU")
    finally:
        engine.close()
    emit({
        "benchmark": "ray engine against the local engine (embedding step)",
        "machine": machine(),
        "catalogue": {"products": len(catalogue), "source": str(args.source)},
        "batch_size": args.batch_size,
        "ray": {"address": args.ray_address or "local cluster started by the engine",
                "cluster_cpus": cluster_cpus, "actor_cpus": args.actor_cpus,
                "join_seconds": round(connect_seconds, 2)},
        "models": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()

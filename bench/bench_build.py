"""Build throughput: end-to-end items/s of `build_model_index` against the model's forward-only
items/s on the same batches (what decoding, preprocessing and I/O cost).

Forward-only is measured before and after the end-to-end build and averaged, so drift on a
shared machine does not favour either side. `--allocator` adds an A/B of
`embeddings.models.allocator.tune_allocator` (forward-only img/s and page faults per image, each in
a fresh process, since malloc settings are per process).

`--runtimes onnx,torch` measures the same build on ONNX Runtime (the default) and on the torch
path, `--ahead 0,1` with and without decoding the next chunk during the forward pass (default:
the build's own choice), in `--rounds` interleaved rounds; the figures of every run and their
medians go under "runtimes", the ratios under "comparison".

    python -m bench.bench_build --source ../shared/datasets/fashion-product-images-small \
        --models pixels,efficientnet-lite0 --items 1280 --work /tmp/bench-build --allocator
    python -m bench.bench_build --models efficientnet-lite0 --items 1280 --runtimes onnx,torch \
        --ahead auto,0,1 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import SHARED_FASHION, emit, log, machine, peak_rss_mib

NO_TUNE_ENV = "EMBEDDINGS_BENCH_NO_TUNE"


def _maybe_skip_tuning() -> None:
    """For the allocator A/B only: mark the allocator as tuned so models skip `mallopt`."""
    if os.environ.get(NO_TUNE_ENV) == "1":
        import embeddings.models.allocator as runtime

        runtime._tuned = True


def prepared_batches(catalogue, embedder, batch_size: int):
    from embeddings.images import open_rgb

    started = time.perf_counter()
    prepared = [embedder.prepare(open_rgb(catalogue.image_path(i))) for i in catalogue.ids]
    prepare_s = time.perf_counter() - started
    batches = [prepared[s : s + batch_size] for s in range(0, len(prepared), batch_size)]
    return batches, prepare_s


def forward_only(embedder, batches) -> dict:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu = time.process_time()
    started = time.perf_counter()
    for batch in batches:
        embedder.embed_prepared(batch)
    wall = time.perf_counter() - started
    items = sum(len(b) for b in batches)
    return {
        "items": items,
        "seconds": wall,
        "items_per_s": items / wall,
        "items_per_cpu_s": items / max(1e-9, time.process_time() - cpu),
        "page_faults_per_item": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
        / items,
    }


@contextlib.contextmanager
def decode_ahead(ahead: str):
    """Force the build's decode-ahead choice ("0" or "1"); "auto" keeps `_decode_ahead`'s."""
    import embeddings.building.model as build

    if ahead == "auto":
        yield
        return
    real = build._decode_ahead
    build._decode_ahead = lambda embedder, workers: int(ahead)
    try:
        yield
    finally:
        build._decode_ahead = real


def bench_model(
    catalogue,
    model_id: str,
    *,
    batch_size: int,
    workers: int,
    runtime: str | None = None,
    ahead: str = "auto",
    embedder=None,
) -> dict:
    from embeddings.building.model import _decode_ahead, build_model_index
    from embeddings.models import load_model

    embedder = embedder or load_model(model_id, runtime=runtime)
    batches, prepare_s = prepared_batches(catalogue, embedder, batch_size)
    embedder.embed_prepared(batches[0])  # warm-up: kernel selection, first allocations
    log(f"{model_id} ({embedder.runtime}, ahead {ahead}): forward-only (before)")
    before = forward_only(embedder, batches)
    log(f"{model_id}: end-to-end build of {len(catalogue):,} items")
    started, cpu = (
        time.perf_counter(),
        time.process_time(),
    )  # process time covers the decode threads
    with decode_ahead(ahead):
        report = build_model_index(
            catalogue, embedder, batch_size=batch_size, workers=workers, force=True
        )
    total_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    log(f"{model_id}: forward-only (after)")
    after = forward_only(embedder, batches)
    forward_ips = (before["items_per_s"] + after["items_per_s"]) / 2
    forward_cpu = (before["items_per_cpu_s"] + after["items_per_cpu_s"]) / 2
    end_to_end_cpu = report.embedded / build_cpu_s
    return {
        "runtime": embedder.runtime,
        "decode_ahead": int(ahead) if ahead != "auto" else _decode_ahead(embedder, workers),
        "inference_threads": embedder.inference_threads,
        "items": len(catalogue),
        "batch_size": batch_size,
        "decode_workers": workers,
        "prepare_single_thread_items_per_s": len(catalogue) / prepare_s,
        "forward_only_before": before,
        "forward_only_after": after,
        "forward_only_items_per_s": forward_ips,
        "end_to_end_items_per_s": report.items_per_second,
        "end_to_end_embed_seconds": report.seconds,
        "end_to_end_total_seconds": total_s,
        "end_to_end_over_forward": report.items_per_second / forward_ips,
        "forward_only_items_per_cpu_s": forward_cpu,
        "end_to_end_items_per_cpu_s": end_to_end_cpu,
        "end_to_end_over_forward_cpu": end_to_end_cpu / forward_cpu,
        "failed": len(report.failed),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def compare_runtimes(
    catalogue,
    model_id: str,
    runtimes: list[str],
    aheads: list[str],
    batch_sizes: list[int],
    rounds: int,
    workers: int,
) -> dict:
    """Every (runtime, ahead, batch size) variant `rounds` times, interleaved; medians, ratios."""
    from embeddings.models import load_model

    embedders = {runtime: load_model(model_id, runtime=runtime) for runtime in runtimes}
    variants = [
        (runtime, ahead, batch) for runtime in runtimes for ahead in aheads for batch in batch_sizes
    ]
    runs: dict[str, list[dict]] = {f"{r}/ahead-{a}/batch-{b}": [] for r, a, b in variants}
    for number in range(rounds):
        for runtime, ahead, batch in variants:
            log(
                f"round {number + 1}/{rounds}: {model_id} on {runtime}, ahead {ahead}, "
                f"batch {batch}"
            )
            runs[f"{runtime}/ahead-{ahead}/batch-{batch}"].append(
                bench_model(
                    catalogue,
                    model_id,
                    runtime=runtime,
                    ahead=ahead,
                    embedder=embedders[runtime],
                    batch_size=batch,
                    workers=workers,
                )
            )
    keys = (
        "end_to_end_items_per_s",
        "forward_only_items_per_s",
        "end_to_end_over_forward",
        "end_to_end_items_per_cpu_s",
        "forward_only_items_per_cpu_s",
    )
    medians = {
        name: {key: statistics.median(run[key] for run in done) for key in keys}
        for name, done in runs.items()
    }
    comparison = {}
    baseline = next((name for name in medians if name.startswith("torch/")), None)
    for name, median in medians.items():
        if name.startswith("onnx/") and baseline:
            for key in ("end_to_end_items_per_s", "end_to_end_items_per_cpu_s"):
                comparison[f"{name} over {baseline}: {key}"] = median[key] / medians[baseline][key]
        comparison[f"{name}: end-to-end over forward-only"] = median["end_to_end_over_forward"]
    return {"runs": runs, "medians": medians, "comparison": comparison}


def allocator_probe(catalogue_dir: str, model_id: str, batch_size: int) -> dict:
    """One process's forward-only figures (run by `--allocator` with and without tuning)."""
    _maybe_skip_tuning()
    from embeddings.catalogue import Catalogue
    from embeddings.models import load_model
    from embeddings.models.allocator import _tuned

    catalogue = Catalogue.open(catalogue_dir)
    embedder = load_model(model_id, runtime="torch")  # the allocator fix is for torch's heap
    batches, _ = prepared_batches(catalogue, embedder, batch_size)
    embedder.embed_prepared(batches[0])
    runs = [forward_only(embedder, batches) for _ in range(2)]
    return {
        "tuned": bool(_tuned) and os.environ.get(NO_TUNE_ENV) != "1",
        "runs": runs,
        "items_per_s": max(r["items_per_s"] for r in runs),
        "items_per_cpu_s": max(r["items_per_cpu_s"] for r in runs),
        "page_faults_per_item": min(r["page_faults_per_item"] for r in runs),
    }


def allocator_ab(catalogue_dir: str, model_id: str, batch_size: int, rounds: int) -> dict:
    results: dict[str, list] = {"tuned": [], "glibc_defaults": []}
    for _ in range(rounds):  # interleaved, so load changes hit both sides alike
        for name, env in (("tuned", {}), ("glibc_defaults", {NO_TUNE_ENV: "1"})):
            log(f"allocator A/B: {name}")
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    __spec__.name,
                    "--probe",
                    catalogue_dir,
                    "--models",
                    model_id,
                    "--batch-size",
                    str(batch_size),
                ],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "items_per_s": max(r["items_per_s"] for r in runs),
            "items_per_cpu_s": max(r["items_per_cpu_s"] for r in runs),
            "page_faults_per_item": min(r["page_faults_per_item"] for r in runs),
            "runs": runs,
        }
    summary["speedup_cpu"] = (
        summary["tuned"]["items_per_cpu_s"] / summary["glibc_defaults"]["items_per_cpu_s"]
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(SHARED_FASHION))
    parser.add_argument("--models", default="pixels,efficientnet-lite0")
    parser.add_argument(
        "--items", type=int, default=1280, help="products in the benchmark catalogue"
    )
    parser.add_argument(
        "--items-for",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="another catalogue size for one model (pixels is fast, CNNs are not)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="/tmp/embeddings-bench-build")
    parser.add_argument("--allocator", action="store_true", help="also A/B the allocator tuning")
    parser.add_argument("--allocator-model", default="efficientnet-lite0")
    parser.add_argument("--allocator-rounds", type=int, default=2)
    parser.add_argument(
        "--runtimes", help="compare runtimes, e.g. onnx,torch (default: the build's own)"
    )
    parser.add_argument(
        "--ahead", default="auto", help="decode-ahead variants to compare: auto, 0, 1 (e.g. 0,1)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of --runtimes")
    parser.add_argument(
        "--batch-sizes", help="batch sizes to compare with --runtimes (default: --batch-size)"
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        emit(allocator_probe(args.probe, args.models, args.batch_size))
        return 0

    _maybe_skip_tuning()
    from embeddings.catalogue import create_catalogue

    sizes = {m: args.items for m in args.models.split(",") if m}
    sizes.update({m: int(n) for m, n in (pair.split("=", 1) for pair in args.items_for)})
    result = {"machine": machine(), "source": args.source, "models": {}}
    catalogues = {}
    for model_id, size in sizes.items():
        if size not in catalogues:
            out = Path(args.work) / f"build-{size}"
            log(f"catalogue of {size:,} products in {out}")
            catalogues[size] = create_catalogue(args.source, out, limit=size)
        if args.runtimes and model_id != "pixels":
            result.setdefault("runtimes", {})[model_id] = compare_runtimes(
                catalogues[size],
                model_id,
                args.runtimes.split(","),
                args.ahead.split(","),
                [int(b) for b in (args.batch_sizes or str(args.batch_size)).split(",")],
                args.rounds,
                args.workers,
            )
            continue
        result["models"][model_id] = bench_model(
            catalogues[size], model_id, batch_size=args.batch_size, workers=args.workers
        )
    if args.allocator:
        size = sizes.get(args.allocator_model, args.items)
        if size not in catalogues:
            catalogues[size] = create_catalogue(
                args.source, Path(args.work) / f"build-{size}", limit=size
            )
        result["allocator"] = allocator_ab(
            str(catalogues[size].directory),
            args.allocator_model,
            args.batch_size,
            args.allocator_rounds,
        )
    result["peak_rss_mib"] = peak_rss_mib()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

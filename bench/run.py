"""Run every benchmark and write BENCHMARKS.md (machine, versions, commands, figures, targets).

    python -m bench.run                    # default; measured here (2 shared cores): 38 min the
                                           # first time, 7 of them building the 1M HNSW graph,
                                           # which later runs reuse from the work folder
    python -m bench.run --quick            # 6.5 min here: smaller sizes, fewer tutorial queries
    python -m bench.run --full             # also the slow rows: tutorial on pixels x 200, and
                                           # Milvus Lite at 1M (it took 1.2 GB at 100K; expect ~10x)
    python -m bench.run --full-catalogue /tmp/eval/full --work /tmp/bench

Sections run in fresh processes (`bench_query.py`, `bench_build.py`, `bench_memory.py`,
`bench_scale.py`, and the app engineer's `bench_app.py` when present); each prints JSON, kept
in `<work>/results.json`. The full catalogue (44,441 products with `pixels` and
`efficientnet-lite0`) is built by `python -m embeddings build --source
../shared/datasets/fashion-product-images-small` (~10+ minutes); without it the 44K rows say
"not measured". The 5,000-product catalogue is the stratified `--limit 5000` subset of the
same source; its indexes reuse the full build's vectors of the same images (the same model on
the same image gives the same vector), so it costs no second embedding run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, SHARED_FASHION, evict_from_page_cache, log, machine, page_cache_share

BENCH = Path(__file__).resolve().parent
MODELS = ["pixels", "efficientnet-lite0"]


# -- catalogues ------------------------------------------------------------------------------


def default_full_catalogue() -> Path:
    from embeddings.config import data_dir

    return data_dir() / "fashion-product-images-small"


def has_models(directory: Path, models: list[str]) -> bool:
    return all((directory / "models" / m / "manifest.json").is_file() for m in models)


def subset_catalogue(full_dir: Path, out: Path, limit: int, models: list[str]) -> Path:
    """A stratified `limit`-product catalogue of the same source, indexed with the full build's
    vectors of its items (no second embedding run)."""
    import numpy as np

    from embeddings.catalogue import Catalogue, create_catalogue
    from embeddings.index.store import read_manifest, write_model_index

    full = Catalogue.open(full_dir)
    small = create_catalogue(
        full.info["root"],
        out,
        adapter=full.info["adapter"],
        limit=limit,
        seed=full.info.get("seed", 0),
    )
    for model_id in models:
        manifest = read_manifest(small.model_dir(model_id)) or {}
        source = read_manifest(full.model_dir(model_id))
        if (
            manifest.get("catalogue_fingerprint") == small.fingerprint
            and manifest.get("derived_from") == source["built_at"]
        ):
            continue
        ids = (full.model_dir(model_id) / "ids.txt").read_text().splitlines()
        vectors = np.load(
            full.model_dir(model_id) / "vectors.npy", mmap_mode="r"
        )  # only the subset is read
        row_of = {item_id: row for row, item_id in enumerate(ids)}
        keep = [item_id for item_id in small.ids if item_id in row_of]
        log(f"{limit:,}-product catalogue: {model_id} index from the full build's vectors")
        write_model_index(
            small.model_dir(model_id),
            ids=keep,
            vectors=np.asarray(vectors[[row_of[i] for i in keep]], dtype=np.float32),
            manifest={
                "model_id": model_id,
                "weights_id": source["weights_id"],
                "description": source.get("description", ""),
                "has_text": source.get("has_text", False),
                "catalogue_fingerprint": small.fingerprint,
                "catalogue_count": len(small),
                "failed": [],
                "derived_from": source["built_at"],
            },
        )
    return out


def built_catalogue(source: str, out: Path, limit: int, models: list[str]) -> Path:
    """Fallback without a full build: embed a small catalogue (slow for CNNs on 2 cores)."""
    if not has_models(out, models):
        log(
            f"building a {limit:,}-product catalogue in {out} (no full catalogue to derive it from)"
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "embeddings",
                "build",
                "--source",
                source,
                "--out",
                str(out),
                "--limit",
                str(limit),
                "--models",
                ",".join(models),
                "--no-bridge",
            ],
            cwd=REPO,
            check=True,
            env=_env(),
        )
    return out


def milvus_copy(catalogue_dir: Path, out: Path, source: str, limit: int) -> Path:
    """The catalogue rebuilt with `--backend milvus` (Milvus Lite), reusing its vectors."""
    import shutil

    from embeddings.index.store import read_manifest

    if not all(
        (read_manifest(out / "models" / m) or {}).get("backend") == "milvus" for m in MODELS
    ):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(catalogue_dir, out)
        log(f"Milvus Lite copy of {catalogue_dir.name} in {out}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "embeddings",
                "build",
                "--source",
                source,
                "--out",
                str(out),
                "--limit",
                str(limit),
                "--models",
                ",".join(MODELS),
                "--backend",
                "milvus",
                "--no-bridge",
            ],
            cwd=REPO,
            check=True,
            env=_env(),
            stdout=subprocess.DEVNULL,
        )
    return out


# -- running ---------------------------------------------------------------------------------


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def index_cache_state(catalogue_dir: Path | None, models: list[str]) -> dict:
    """Share of each index file in the page cache (what a cold start will not have to read)."""
    if catalogue_dir is None:
        return {}
    return {m: page_cache_share(Path(catalogue_dir) / "models" / m / "index.faiss") for m in models}


def run_json(name: str, command: list[str], results: dict, commands: list[str]) -> dict | None:
    """Run one benchmark script; keep its JSON (or the error) and the command line."""
    shown = (
        " ".join(str(c) for c in command)
        .replace(sys.executable, "python")
        .replace(str(REPO) + "/", "")
    )
    commands.append(shown)
    log(f"== {name}: {shown}")
    cached_before = (
        index_cache_state(Path(command[command.index("--catalog") + 1]), MODELS)
        if "--catalog" in command
        else None
    )
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    text = done.stdout.strip()
    if done.returncode != 0 or not text:
        results[name] = {
            "error": f"exit code {done.returncode}",
            "seconds": seconds,
            "command": shown,
        }
        log(f"{name} failed (exit {done.returncode})")
        return None
    try:  # one JSON document: indented (bench_app.py) or on the last line after other output
        data = json.loads(text)
    except ValueError:
        try:
            data = json.loads(text.splitlines()[-1])
        except ValueError:
            results[name] = {"error": "no JSON on stdout", "seconds": seconds, "command": shown}
            return None
    data["seconds"] = seconds
    data["command"] = shown
    if "--catalog" in command:  # an app run: how much of its indexes the page cache held at start
        data["page_cache_before"] = cached_before
    results[name] = data
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="minutes, not half an hour")
    mode.add_argument("--full", action="store_true", help="also the slowest rows")
    parser.add_argument(
        "--full-catalogue",
        type=Path,
        help="the 44,441-product catalogue (default: the data "
        "folder's fashion-product-images-small)",
    )
    parser.add_argument("--source", default=str(SHARED_FASHION), help="the shared fashion dataset")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--only", help="comma-separated sections: query,build,memory,scale,app")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections' figures from <work>/results.json (with --only)",
    )
    args = parser.parse_args(argv)

    sections = set((args.only or "query,build,memory,scale,app").split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    full_dir = args.full_catalogue or default_full_catalogue()
    have_full = has_models(full_dir, MODELS)
    small_limit = 5000
    previous = {}
    if args.merge and (args.work / "results.json").is_file():
        previous = json.loads((args.work / "results.json").read_text())
    results: dict = {
        "mode": "quick" if args.quick else "full" if args.full else "default",
        "machine_start": machine(),
        "full_catalogue": str(full_dir) if have_full else None,
    }
    commands: list[str] = []
    started = time.perf_counter()
    py = sys.executable

    small_dir = None
    if sections & {"query", "memory", "app"}:
        if have_full:
            small_dir = subset_catalogue(
                full_dir, args.work / f"fashion-{small_limit}", small_limit, MODELS
            )
        else:
            small_limit = 1000 if args.quick else small_limit
            small_dir = built_catalogue(
                args.source, args.work / f"fashion-{small_limit}", small_limit, MODELS
            )
    results["small_limit"] = small_limit

    if "query" in sections:
        tutorial_pixels = "200" if args.full else "5" if args.quick else "20"
        tutorial_default = "20" if args.quick else "200"
        query = [
            py,
            "-m",
            "bench.bench_query",
            "--models",
            ",".join(MODELS),
            "--queries",
            "200",
            "--tutorial-queries",
            tutorial_default,
            "--tutorial-queries-for",
            f"pixels={tutorial_pixels}",
        ]
        run_json(
            "query_small",
            query
            + [
                "--catalogue",
                str(small_dir),
                "--float16",
                "efficientnet-lite0",
                "--hnsw",
                "efficientnet-lite0",
                "--ef",
                "16,32,64,128",
            ],
            results,
            commands,
        )
        if have_full and not args.quick:
            run_json(
                "query_full",
                query
                + [
                    "--catalogue",
                    str(full_dir),
                    "--float16",
                    "efficientnet-lite0",
                    "--hnsw",
                    "efficientnet-lite0",
                    "--ef",
                    "16,24,32,48,64,128",
                    "--side-by-side",
                ],
                results,
                commands,
            )
        elif have_full:
            run_json(
                "query_full",
                [
                    py,
                    "-m",
                    "bench.bench_query",
                    "--catalogue",
                    str(full_dir),
                    "--models",
                    "efficientnet-lite0",
                    "--queries",
                    "200",
                    "--tutorial-queries",
                    "20",
                    "--hnsw",
                    "efficientnet-lite0",
                    "--ef",
                    "32,64",
                    "--side-by-side",
                ],
                results,
                commands,
            )

    if "build" in sections:
        build = [
            py,
            "-m",
            "bench.bench_build",
            "--source",
            args.source,
            "--work",
            str(args.work / "build"),
            "--models",
            ",".join(MODELS),
            "--items",
            "256" if args.quick else "1280",
            "--items-for",
            f"pixels={1000 if args.quick else 5000}",
        ]
        if not args.quick:
            build += ["--allocator", "--allocator-rounds", "2" if args.full else "1"]
        run_json("build", build, results, commands)

    if "memory" in sections:
        target = full_dir if have_full and not args.quick else small_dir
        run_json(
            "memory",
            [
                py,
                "-m",
                "bench.bench_memory",
                "--catalogue",
                str(target),
                "--models",
                ",".join(MODELS),
                "--work",
                str(args.work / "memory"),
            ],
            results,
            commands,
        )

    if "scale" in sections:
        scale = [
            py,
            "-m",
            "bench.bench_scale",
            "--work",
            str(args.work / "scale"),
            "--queries",
            "200",
        ]
        if args.quick:
            scale += [
                "--sizes",
                "100000",
                "--engines",
                "faiss-flat,faiss-hnsw,milvus-hnsw,server-hnsw",
                "--ef",
                "32,64,128",
                "--milvus-ef",
                "64",
            ]
        elif args.full:
            scale += ["--sizes", "100000,1000000"]
        else:
            # Milvus Lite at 1M only with --full: at 100K it already holds ~5x the vectors' size in
            # RAM and walks every row in Python per query (see BENCHMARKS.md), so 1M needs ~10+ GB
            # and hours. The real Milvus server runs at both sizes.
            scale += [
                "--sizes",
                "100000,1000000",
                "--engines-for",
                "1000000=faiss-flat,faiss-hnsw,server-flat,server-hnsw",
                "--milvus-ef",
                "64,128",
            ]
        run_json("scale", scale, results, commands)

    if "app" in sections:
        if (BENCH / "bench_app.py").is_file():
            app_dir = full_dir if have_full else small_dir or full_dir
            app = [py, "-m", "bench.bench_app", "--catalog", str(app_dir)]
            app += ["--models", ",".join(MODELS)]
            if not args.quick:
                # A cold page cache first (as after a reboot: the first query reads the indexes from
                # disk), then the usual run, whose indexes the cold run left in the cache.
                for model_id in MODELS:
                    evict_from_page_cache(Path(app_dir) / "models" / model_id / "index.faiss")
                run_json("app_cold_cache", app + ["--clicks", "5"], results, commands)
            run_json("app", app, results, commands)
            if (
                have_full and not args.quick
            ):  # without the 2.4 GiB pixel index: what a compact model costs
                run_json(
                    "app_compact", app[:5] + ["--models", "efficientnet-lite0"], results, commands
                )
            float16_dir = args.work / "memory" / "float16"
            if have_full and not args.quick and (float16_dir / "models").is_dir():
                # The same catalogue with float16 indexes (written by the memory section).
                run_json(
                    "app_float16",
                    app[:4] + [str(float16_dir), "--models", ",".join(MODELS)],
                    results,
                    commands,
                )
            if small_dir is not None and not args.quick:
                # The same app on the Milvus backend: a Milvus Lite copy of the small catalogue.
                milvus_dir = milvus_copy(
                    small_dir, args.work / f"fashion-{small_limit}-milvus", args.source, small_limit
                )
                run_json(
                    "app_milvus",
                    [
                        *app[:4],
                        str(milvus_dir),
                        "--models",
                        ",".join(MODELS),
                        "--clicks",
                        "10",
                    ],
                    results,
                    commands,
                )
        else:
            results["app"] = {
                "error": "bench/bench_app.py is not there yet (written by the app engineer)"
            }

    results["machine_end"] = machine()
    results["total_seconds"] = time.perf_counter() - started
    results["commands"] = commands
    results["invocations"] = [" ".join(sys.argv[1:] if argv is None else argv)]
    results["run_seconds"] = [results["total_seconds"]]
    if previous:  # sections not re-run keep their figures; the report lists both runs' commands
        merged = {k: v for k, v in previous.items() if k not in results or k in ("machine_start",)}
        merged["commands"] = previous.get("commands", []) + commands
        merged["invocations"] = previous.get("invocations", []) + results["invocations"]
        merged["run_seconds"] = (
            previous.get("run_seconds", [previous.get("total_seconds", 0)]) + results["run_seconds"]
        )
        merged["total_seconds"] = previous.get("total_seconds", 0) + results["total_seconds"]
        merged["merged_runs"] = previous.get("merged_runs", 1) + 1
        results = {**results, **merged}
    (args.work / "results.json").write_text(json.dumps(results, indent=2, default=float))
    from bench.report import keep_appendix, write_report

    appendix = keep_appendix(args.out.read_text()) if args.out.is_file() else ""
    args.out.write_text(write_report(results, argv=sys.argv[1:]) + appendix)
    log(
        f"wrote {args.out} and {args.work / 'results.json'} in "
        f"{results['total_seconds'] / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

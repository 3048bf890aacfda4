"""Serving memory and index open time: a catalogue with two models, as the app holds them.

Each variant runs in a fresh process: open the catalogue, open both indexes (time it), run
item queries on each (pages the vectors in), then report resident memory split into
anonymous (private copies) and file-backed (memory-mapped, shared with the page cache and
reclaimable), the peak, and whether torch was imported (browsing must not import it).

Variants: `mmap` (what `open_index` does by default), `copy` (read into private memory,
the old default), `float16` (a float16 copy of the same indexes, memory-mapped).

    python -m bench.bench_memory --catalogue /tmp/eval/full --models pixels,efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import emit, log, machine, page_cache_share, rss_mib

VARIANTS = ("mmap", "copy", "float16")


def float16_copy(catalogue_dir: Path, models: list[str], out: Path) -> Path:
    """The same catalogue with its indexes rewritten as float16 (made once, then reused)."""
    from embeddings.catalogue import Catalogue
    from embeddings.index.store import load_vectors, read_manifest, write_model_index

    source = Catalogue.open(catalogue_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("catalog.json", "items.csv"):
        shutil.copy2(catalogue_dir / name, out / name)
    for model_id in models:
        target = out / "models" / model_id
        manifest = read_manifest(source.model_dir(model_id))
        if (read_manifest(target) or {}).get("built_at") == f"float16 of {manifest['built_at']}":
            continue
        log(f"writing a float16 copy of {model_id}")
        ids, vectors = load_vectors(source.model_dir(model_id))
        keep = {
            k: manifest[k]
            for k in (
                "model_id",
                "weights_id",
                "description",
                "has_text",
                "catalogue_fingerprint",
                "catalogue_count",
                "failed",
            )
            if k in manifest
        }
        written = write_model_index(
            target, ids=ids, vectors=vectors, manifest=keep, store_dtype="float16"
        )
        written["built_at"] = f"float16 of {manifest['built_at']}"
        (target / "manifest.json").write_text(json.dumps(written, indent=2))
    return out


def probe(catalogue_dir: str, models: list[str], mmap: bool, queries: int) -> dict:
    """Run in a fresh process: what serving these indexes costs in memory and time."""
    cached = {
        m: page_cache_share(Path(catalogue_dir) / "models" / m / "index.faiss") for m in models
    }
    started = time.perf_counter()
    from embeddings.catalogue import Catalogue
    from embeddings.index.opening import open_index
    from embeddings.search.searcher import Searcher

    catalogue = Catalogue.open(catalogue_dir)
    after_catalogue = rss_mib()
    catalogue_s = time.perf_counter() - started
    indexes, open_s = {}, {}
    for model_id in models:
        began = time.perf_counter()
        indexes[model_id] = open_index(catalogue, model_id, mmap=mmap)
        open_s[model_id] = time.perf_counter() - began
    after_open = rss_mib()
    searcher = Searcher(catalogue, indexes.__getitem__)
    ids = [i for i in catalogue.ids if all(i in index.row_of for index in indexes.values())]
    began = time.perf_counter()
    first = searcher.search_item(ids[0], models, 10)  # the first query pages the vectors in
    first_query_s = time.perf_counter() - began
    step = max(1, len(ids) // queries)
    for item_id in ids[::step][:queries]:
        searcher.search_item(item_id, models, 10)
    return {
        "mmap": mmap,
        "page_cache_before": cached,
        "catalogue_open_s": catalogue_s,
        "index_open_s": open_s,
        "first_query_s": first_query_s,
        "first_query_hits": {m: len(h) for m, h in first.items()},
        "rss_after_catalogue": after_catalogue,
        "rss_after_open": after_open,
        "rss_after_queries": rss_mib(),
        "torch_imported": "torch" in sys.modules,
        "index_files_mib": {
            m: (catalogue.model_dir(m) / "index.faiss").stat().st_size / 2**20 for m in models
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", required=True)
    parser.add_argument("--models", default="pixels,efficientnet-lite0")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--work", default="/tmp/embeddings-bench-memory")
    parser.add_argument("--probe", choices=["mmap", "copy"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if args.probe:
        emit(probe(args.catalogue, models, args.probe == "mmap", args.queries))
        return 0
    result = {"machine": machine(), "catalogue": args.catalogue, "models": models, "variants": {}}
    for variant in args.variants.split(","):
        directory = args.catalogue
        if variant == "float16":
            directory = str(float16_copy(Path(args.catalogue), models, Path(args.work) / "float16"))
        log(f"memory probe: {variant}")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                __spec__.name,
                "--catalogue",
                directory,
                "--models",
                args.models,
                "--queries",
                str(args.queries),
                "--probe",
                "copy" if variant == "copy" else "mmap",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            result["variants"][variant] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        result["variants"][variant] = json.loads(done.stdout.strip().splitlines()[-1])
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ONNX Runtime against torch on the same batches, and the settings the build uses.

    python -m bench.bench_onnx sweep --items 512 --batch-sizes 16,32,64,128 --threads 1,2
    python -m bench.bench_onnx clip --batch-size 32 --batches 4 --rounds 3

- `sweep`: EfficientNet-Lite0 forward-only on ONNX Runtime, on real product images of the shared
  set already prepared, for every (batch size, intra-op threads, idle threads spinning or not);
  interleaved rounds, img/s and img per CPU-second (what picked the defaults of
  `embeddings.models.onnx_session` and the build's batch size).
- `clip`: the CLIP ViT-B/32 image tower's shapes with random weights (transformers'
  `CLIPVisionModelWithProjection` from a config: nothing downloaded), exported by
  `embeddings.models.export` and run by ONNX Runtime, against torch eager on the same batches,
  interleaved; img/s, the ratio, and the smallest cosine between the two outputs.

Prints one JSON object on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import SHARED_FASHION, emit, log, machine


def _timed(run, batches) -> dict:
    cpu, started = time.process_time(), time.perf_counter()
    for batch in batches:
        run(batch)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    items = sum(len(b) for b in batches)
    return {"items_per_s": items / wall, "items_per_cpu_s": items / max(cpu, 1e-9)}


def _prepared(items: int):
    from embeddings.images import open_rgb
    from embeddings.models import load_model

    paths = sorted((SHARED_FASHION / "images").glob("*.jpg"))[:items]
    embedder = load_model("efficientnet-lite0")
    return embedder, [embedder.prepare(open_rgb(path)) for path in paths]


def sweep(args) -> dict:
    """Forward-only img/s of every (batch, threads, spinning) on the same prepared images."""
    from embeddings.models.onnx_session import SPINNING_ENV, OnnxSession

    embedder, prepared = _prepared(args.items)
    path = embedder.session.path
    variants = list(
        itertools.product(
            [int(b) for b in args.batch_sizes.split(",")],
            [int(t) for t in args.threads.split(",")],
            [0, 1] if args.spinning else [0],
        )
    )
    sessions = {}
    for _, threads, spinning in variants:
        if (threads, spinning) not in sessions:
            os.environ[SPINNING_ENV] = str(spinning)
            sessions[threads, spinning] = OnnxSession(path, threads=threads)
            _ = sessions[threads, spinning].session  # created now, with this spinning setting
    runs: dict[str, list[dict]] = {f"batch {b}, {t} threads, spin {s}": [] for b, t, s in variants}
    for number in range(args.rounds):
        for batch_size, threads, spinning in variants:
            session = sessions[threads, spinning]
            batches = [
                np.stack(prepared[s : s + batch_size]) for s in range(0, len(prepared), batch_size)
            ]
            session.run({"pixel_values": batches[0]})  # warm-up for this shape
            name = f"batch {batch_size}, {threads} threads, spin {spinning}"
            log(f"round {number + 1}: {name}")
            runs[name].append(_timed(lambda b, s=session: s.run({"pixel_values": b}), batches))
    return {
        "items": len(prepared),
        "runs": runs,
        "median_items_per_s": {
            n: statistics.median(r["items_per_s"] for r in v) for n, v in runs.items()
        },
        "median_items_per_cpu_s": {
            n: statistics.median(r["items_per_cpu_s"] for r in v) for n, v in runs.items()
        },
    }


def clip_vision(args) -> dict:
    """The ViT-B/32 image tower on torch and on ONNX Runtime, random weights, same batches."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from embeddings.models.allocator import tune_allocator
    from embeddings.models.export import export_onnx, measure_drift
    from embeddings.models.onnx_session import OnnxSession

    tune_allocator()  # what the torch embedders do
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        projection_dim=512,
    )
    model = CLIPVisionModelWithProjection(config).eval()

    class ImageEmbeds(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values).image_embeds

    module = ImageEmbeds().eval()
    rng = np.random.default_rng(0)
    batches = [
        rng.standard_normal((args.batch_size, 3, 224, 224)).astype(np.float32)
        for _ in range(args.batches)
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.onnx"
        log("exporting the ViT-B/32 image tower")
        export_onnx(module, (torch.from_numpy(batches[0]),), path, ["pixel_values"], "image_embeds")
        session = OnnxSession(path)

        def on_torch(batch):
            with torch.inference_mode():
                return module(torch.from_numpy(batch)).numpy()

        def on_onnx(batch):
            return session.run({"pixel_values": batch})

        drift = measure_drift(on_torch(batches[0]), on_onnx(batches[0]))
        runs: dict[str, list[dict]] = {"torch": [], "onnx": []}
        for number in range(args.rounds):
            for name, run in (("torch", on_torch), ("onnx", on_onnx)):
                log(f"round {number + 1}/{args.rounds}: {name}")
                runs[name].append(_timed(run, batches))
    medians = {n: statistics.median(r["items_per_s"] for r in v) for n, v in runs.items()}
    cpu = {n: statistics.median(r["items_per_cpu_s"] for r in v) for n, v in runs.items()}
    return {
        "batch_size": args.batch_size,
        "images_per_round": args.batch_size * args.batches,
        "torch_threads": torch.get_num_threads(),
        "onnx_threads": session.threads,
        "runs": runs,
        "median_items_per_s": medians,
        "median_items_per_cpu_s": cpu,
        "onnx_over_torch": medians["onnx"] / medians["torch"],
        "onnx_over_torch_cpu": cpu["onnx"] / cpu["torch"],
        "drift": drift,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("sweep", help="batch size x threads x spinning, forward-only")
    grid.add_argument("--items", type=int, default=512)
    grid.add_argument("--batch-sizes", default="16,32,64,128")
    grid.add_argument("--threads", default="1,2")
    grid.add_argument("--spinning", action="store_true", help="also with spinning idle threads")
    grid.add_argument("--rounds", type=int, default=2)
    clip = commands.add_parser("clip", help="CLIP ViT-B/32 image tower: ONNX vs torch")
    clip.add_argument("--batch-size", type=int, default=32)
    clip.add_argument("--batches", type=int, default=4)
    clip.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = {"machine": machine(), "command": args.command}
    result.update(sweep(args) if args.command == "sweep" else clip_vision(args))
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The scale section of BENCHMARKS.md: FAISS, Milvus Lite and a real Milvus server, from the JSON
of `bench/bench_scale.py` (the runner's `results["scale"]`).

`write_report` (report.py) includes it; alone, it replaces that section of an existing
BENCHMARKS.md with the figures of one `bench_scale.py` run, leaving the other sections as they
are (and the section's line in "Commands run"):

    python -m bench.bench_scale ... > bench/out/scale.json
    python -m bench.report_scale bench/out/scale.json --out BENCHMARKS.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MISSING = "not measured"
HEADING = "## Scale: synthetic clustered vectors, FAISS, Milvus Lite and a Milvus server"
ENGINE_NAMES = {
    "faiss-flat": "FAISS flat",
    "faiss-hnsw": "FAISS HNSW",
    "milvus-flat": "Milvus Lite FLAT",
    "milvus-hnsw": "Milvus Lite HNSW",
    "server-flat": "Milvus server FLAT",
    "server-hnsw": "Milvus server HNSW",
}


def ms(block: dict | None, key: str = "p50_ms") -> str:
    if not block or key not in block:
        return "—"
    value = block[key]
    return f"{value:,.3f}" if value < 1 else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def p50_p95(block: dict | None) -> str:
    return "—" if not block else f"{ms(block)} / {ms(block, 'p95_ms')}"


def mib(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MiB"


def cpu(engine: str, figures: dict) -> str:
    """The querying thread's CPU time; for a server, also the server's CPU time per query."""
    latency = figures["latency"]
    if engine.startswith("milvus"):
        return "n/a (server threads)"  # Milvus Lite answers on its in-process server's threads
    own = f"{ms(latency, 'cpu_p50_ms')} / {ms(latency, 'cpu_p95_ms')}"
    if "server_cpu_ms_per_query" in figures:
        return f"client {own}; server {figures['server_cpu_ms_per_query']:,.2f} mean"
    return own


def build_text(r: dict) -> str:
    text = f"{r['build_s']:.1f} s"
    if "index_s" in r:
        text += f" (insert {r['insert_s']:.1f} s, index {r['index_s']:.1f} s)"
    elif "insert_s" in r:
        text += f" (insert {r['insert_s']:.1f} s)"
    if "cached_graph" in r:
        text += f" (built {r.get('built_at', 'earlier')}, graph reused)"
    return text


def memory_text(r: dict) -> str:
    if "serving_rss_mib" in r:
        return f"{mib(r['serving_rss_mib'])} (server RSS)"
    return mib(r.get("memory_mib"))


def main_table(scale: dict) -> list[str]:
    out = [
        "| vectors | engine | setting | recall@10 | p50 / p95 ms | thread CPU p50 / p95 ms | "
        "build | memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, engines in scale["sizes"].items():
        for engine, r in engines.items():
            name = ENGINE_NAMES.get(engine, engine)
            if "error" in r:
                out.append(f"| {int(size):,} | {name} | | {MISSING}: {r['error']} | | | | |")
                continue
            if "by_ef" in r:
                rows = [
                    (
                        f"M={r['M']}, efC={r['efConstruction']}, ef={ef}"
                        if ef != "None"
                        else "exact",
                        f,
                    )
                    for ef, f in r["by_ef"].items()
                ]
            else:
                rows = [("exact", r)]
            for setting, f in rows:
                out.append(
                    f"| {int(size):,} | {name} | {setting} | {f['recall_at_10']:.4f} | "
                    f"{p50_p95(f['latency'])} | {cpu(engine, f)} | {build_text(r)} | "
                    f"{memory_text(r)} |"
                )
    out += lite_at_a_million(scale)
    return out


def lite_at_a_million(scale: dict) -> list[str]:
    """Why Milvus Lite has no 1M row, from its own 100K figures."""
    sizes = scale["sizes"]
    if "1000000" not in sizes or any(e.startswith("milvus") for e in sizes["1000000"]):
        return []
    lite = next(
        (
            r
            for e, r in sizes.get("100000", {}).items()
            if e.startswith("milvus") and "memory_mib" in r
        ),
        None,
    )
    why = (
        f"at 100,000 vectors ({100_000 * scale.get('dim', 512) * 4 / 2**20:.0f} MiB) it grew the "
        f"process by {lite['memory_mib']:,.0f} MiB (peak RSS {lite['peak_rss_mib']:,.0f} MiB), so "
        "1M would need roughly ten times that on a machine shared with others, and its per-query "
        "time grows with the row count"
        if lite
        else "its memory and per-query time grow with the row count"
    )
    return [f"| 1,000,000 | Milvus Lite | | not run (`--full` runs it): {why} | | | | |"]


def server_tables(scale: dict) -> list[str]:
    """The server's build steps and memory, and its filtered searches."""
    servers = [
        (size, engine, r)
        for size, engines in scale["sizes"].items()
        for engine, r in engines.items()
        if engine.startswith("server") and "error" not in r
    ]
    if not servers:
        return []
    out = [
        "",
        "The Milvus server's build, step by step (seconds), and its memory (RSS of its processes: "
        "idle after start-up, the peak while building, and serving after the queries):",
        "",
        "| vectors | engine | server start | create | insert | flush | index | load | total | "
        "RSS idle / build peak / serving |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, engine, r in servers:
        steps = " | ".join(f"{r[f'{step}_s']:.1f}" for step in ("create", "insert", "flush"))
        out.append(
            f"| {int(size):,} | {ENGINE_NAMES[engine]} | {r['start_s']:.1f} | {steps} | "
            f"{r['index_s']:.1f} | {r['load_s']:.1f} | {r['build_s']:.1f} | "
            f"{r['idle_rss_mib']:,.0f} / {r['build_peak_rss_mib']:,.0f} / "
            f"{r['serving_rss_mib']:,.0f} MiB |"
        )
    out += [
        "",
        "Filtered search on the Milvus server (`MilvusIndex.search(filters=...)`, as the app "
        "sends a sidebar filter): a label with 10 values (one allows 10% of the rows) or 100 "
        "values (1%), independent of the clusters; recall@10 against the exact top-10 among the "
        "allowed rows. *app*: `ef` widened by the share the filter hides (what the app does); "
        "*fixed ef*: the same search at the unwidened ef.",
        "",
        "| vectors | engine | filter | ef | recall@10 | p50 / p95 ms | server CPU ms / query |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, engine, r in servers:
        for name, f in r.get("filtered", {}).items():
            ef = "—" if f.get("ef") is None else f"{f['ef']:,}"
            out.append(
                f"| {int(size):,} | {ENGINE_NAMES[engine]} | {name} | {ef} | "
                f"{f['recall_at_10']:.4f} | {p50_p95(f['latency'])} | "
                f"{f['server_cpu_ms_per_query']:,.2f} |"
            )
    return out


def at_ef(scale: dict, size: str, engine: str, ef: str = "128") -> dict | None:
    """The figures of one engine at one size and ef (an exact engine: its own)."""
    r = scale["sizes"].get(size, {}).get(engine)
    if not r or "error" in r:
        return None
    return (
        r["by_ef"].get(ef) if "by_ef" in r and ef in r["by_ef"] else r if "latency" in r else None
    )


def comparison(scale: dict) -> list[str]:
    """The engines side by side at ef 128, in words, from the table's figures."""
    lines = []
    for size in scale["sizes"]:
        server = at_ef(scale, size, "server-hnsw")
        if server is None:
            continue
        p50 = server["latency"]["p50_ms"]
        parts = [
            f"at {int(size):,} vectors (HNSW, ef 128) the Milvus server answers one query in "
            f"{ms(server['latency'])} ms p50 (recall@10 {server['recall_at_10']:.4f})"
        ]
        for engine, name in (("milvus-hnsw", "Milvus Lite"), ("faiss-hnsw", "FAISS in-process")):
            other = at_ef(scale, size, engine)
            if other is not None:
                factor = other["latency"]["p50_ms"] / p50
                how = f"{factor:,.0f}x slower" if factor >= 1 else f"{1 / factor:,.0f}x faster"
                parts.append(f"{name} in {ms(other['latency'])} ms ({how})")
        lines.append("; ".join(parts) + ".")
    if not lines:
        return []
    return ["", "In short, " + " And ".join(lines)]


def scale_section(scale: dict) -> list[str]:
    """The whole section, heading included."""
    out = [
        HEADING,
        "",
        f"{scale.get('clusters', 1000):,} clusters in {scale.get('dim', 512)}-d (each point: its "
        f"cluster's centre + a Gaussian spread in a {scale.get('latent', 16)}-d subspace of its "
        f"own + small noise, L2-normalised); {scale.get('queries', 200)} held-out queries, one at "
        "a time, one thread; recall@10 against the exact top-10. HNSW graphs use the library's "
        "build settings unless the row says otherwise (M=32, efConstruction=200: what `build "
        "--hnsw-above` makes). Build: FAISS uses every core; Milvus Lite's time is insert + "
        "flush + its index build; the Milvus server's (a Milvus 2.3.5 standalone server from "
        "the `milvus` package, on this machine, reached over gRPC on 127.0.0.1; queries through "
        "`MilvusIndex`, the app's own path) is create + insert + flush + index + load, broken "
        "down below. Memory: growth of the process's anonymous RSS during the build (FAISS; "
        "Milvus Lite runs inside the process); for the server, its processes' RSS while serving. "
        "Thread CPU: the querying thread's; a server's own CPU time per query (mean) is added.",
        "",
    ]
    if scale.get("machine"):
        info = scale["machine"]
        out += [
            f"Machine: {info.get('cpu', '?')}, {info.get('cpus', '?')} cores, "
            f"{info.get('memory_gib', '?')} GiB; load average (1/5/15 min) at the start "
            f"{info.get('load_average')}: shared with other engineers' builds and tests, so "
            "absolute times are noisy; compare engines within the run.",
            "",
        ]
    if not scale.get("sizes"):
        return out + [f"{MISSING}: {scale.get('error', 'section not run')}", ""]
    out += main_table(scale)
    out += comparison(scale)
    out += server_tables(scale)
    out += [
        "",
        "Milvus Lite (the `milvus-lite` 3.x package) is a pure-Python engine behind a local "
        "gRPC server: every search walks all rows in Python to resolve deletes and versions "
        "before the FAISS index runs (`milvus_lite/search/executor_indexed.py`), so its "
        "latency grows with the collection whatever the index. It is the local, zero-setup "
        "default; a Milvus server (`--milvus-uri`) is the engine for serving at scale (see the "
        "README, section Scale).",
        "",
    ]
    if scale.get("command"):
        when = f" ({scale['measured_at']})" if scale.get("measured_at") else ""
        out += [f"Measured{when} with `{scale['command']}`.", ""]
    return out


def replace_section(markdown: str, section: list[str], command: str | None) -> str:
    """`markdown` with its scale section (any earlier heading of it) replaced by `section`, and
    its `bench_scale.py` line in "Commands run" by `command`."""
    start = markdown.find("## Scale:")
    if start < 0:
        raise SystemExit("no '## Scale:' section to replace")
    end = markdown.find("\n## ", start + 1)
    end = len(markdown) if end < 0 else end + 1
    markdown = markdown[:start] + "\n".join(section) + "\n" + markdown[end:]
    if command:
        markdown = re.sub(
            r"(?m)^python (?:bench/bench_scale\.py|-m bench\.bench_scale).*$",
            lambda _: command,
            markdown,
        )
    return markdown


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the scale section from bench_scale.py's JSON")
    parser.add_argument("scale_json", type=Path)
    parser.add_argument("--out", type=Path, help="replace the section in this BENCHMARKS.md")
    args = parser.parse_args()
    scale = json.loads(args.scale_json.read_text())
    section = scale_section(scale)
    if args.out:
        section[-1:-1] = [
            "",
            "This section was replaced alone (`python -m bench.report_scale`): the rest of the "
            "file, the targets table at the top included, comes from the runs listed under "
            "Commands run.",
        ]
        text = replace_section(args.out.read_text(), section, scale.get("command"))
        args.out.write_text(text)
    else:
        sys.stdout.write("\n".join(section) + "\n")

"""The app in a real browser: cold start, click-to-grid, and the server's peak memory.

    python -m bench.bench_app --catalog /tmp/cat [--models pixels,efficientnet-lite0] [--clicks 15]

Starts `streamlit run app.py` on the catalogue (its parent folder becomes EMBEDDINGS_DATA) and
drives headless Chromium (Debian's /usr/bin/chromium, through Playwright):

- cold start: from spawning the server process to the first frame in which every model's grid
  shows scored tiles for an item query opened by URL (server start-up, imports, index loading
  and the first render, all included);
- warm page load: the same URL opened in a new tab of the running server (a new session);
- click-to-grid: a click on a result tile (a new item query, side by side over the models) to
  the first frame in which every grid shows the new query's tiles; timed inside the page
  (`performance.now()` in the click handler's frame to the frame the grids change), median of N;
- the serving process's peak RSS (`VmHWM` from /proc, else the largest psutil sample), and
  whether torch was ever loaded into it (item queries should not load it).

Prints one JSON object on stdout (progress goes to stderr). Figures, not a test: the machine may
be shared, so compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from app_support import browser
from embeddings.catalogue import Catalogue
from embeddings.config import data_dir
from embeddings.index.opening import built_models

REPO = Path(__file__).resolve().parent.parent

#: In-page: every listed model's grid shows `query` with scored tiles (grids live in shadow roots).
_GRIDS_READY_JS = """
([models, query]) => {
  const grids = [];
  for (const host of document.querySelectorAll('*')) {
    if (host.shadowRoot) grids.push(...host.shadowRoot.querySelectorAll('.grid'));
  }
  return models.every(m => grids.some(g => g.dataset.model === m && g.dataset.query === query
                                         && g.querySelector('a.tile[data-score]')));
}
"""

#: In-page: click the tile `target` in `model`'s grid and resolve with the milliseconds until the
#: first animation frame where every grid shows `target`'s results.
_CLICK_TO_GRID_JS = """
([models, model, target]) => new Promise((resolve, reject) => {
  const ready = __READY__;
  let tile = null;
  for (const host of document.querySelectorAll('*')) {
    const grid = host.shadowRoot && host.shadowRoot.querySelector(`.grid[data-model="${model}"]`);
    if (grid) tile = grid.querySelector(`a.tile[data-id="${CSS.escape(target)}"]`);
    if (tile) break;
  }
  if (!tile) { reject(new Error('no tile ' + target + ' in ' + model)); return; }
  const started = performance.now();
  const deadline = started + 60000;
  tile.click();
  const check = () => {
    if (ready([models, target])) resolve(performance.now() - started);
    else if (performance.now() > deadline) reject(new Error('grids did not update within 60 s'));
    else requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})
""".replace("__READY__", _GRIDS_READY_JS.strip())


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _torch_loaded(pid: int) -> bool | None:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


class RssSampler(threading.Thread):
    """Samples a process's RSS (psutil) every 50 ms: the peak where /proc has no VmHWM."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:  # the process is gone
                return
            self.stopped.wait(0.05)


def _wait_in_page(page, models: list[str], query: str, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(_GRIDS_READY_JS, arg=[models, query], timeout=timeout_ms, polling="raf")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def run(
    catalog: Path,
    models: list[str] | None,
    clicks: int,
    k: int,
    log_dir: Path,
    report_as: Path | None = None,
) -> dict:
    """Measure the app on `catalog` (a folder whose parent is the data folder to serve)."""
    catalogue = Catalogue.open(catalog)
    built = built_models(catalogue)
    models = models or built
    missing = [m for m in models if m not in built]
    if missing:
        raise SystemExit(
            f"{catalog}: no index for {', '.join(missing)} (built: {', '.join(built) or 'none'})"
        )
    if not browser.chromium_available():
        raise SystemExit(f"no Chromium at {browser.CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    item = catalogue.ids[0]
    params = f"catalog={catalogue.name}&models={','.join(models)}&k={k}&item={item}"
    with sync_playwright() as playwright:
        chromium = browser.launch_chromium(playwright)  # started first: not part of the cold start
        context = chromium.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        spawned_wall = time.time()
        server = browser.start_app(catalog.parent, log_path=log_dir / "streamlit.log")
        sampler = RssSampler(server.process.pid)
        sampler.start()
        try:
            ready_s = time.time() - spawned_wall
            print(f"server answering after {ready_s:.2f} s", file=sys.stderr)
            page.goto(f"{server.url}/?{params}")
            _wait_in_page(page, models, item)
            first_grid_wall = page.evaluate(
                "() => (performance.timeOrigin + performance.now()) / 1000"
            )
            cold_start_s = first_grid_wall - spawned_wall

            warm = context.new_page()
            opened = time.perf_counter()
            warm.goto(f"{server.url}/?{params}")
            _wait_in_page(warm, models, item)
            warm_load_s = time.perf_counter() - opened
            warm.close()

            timings, current = [], item
            for number in range(clicks):
                tiles = page.locator(f"{browser.grid_selector(models[0])} a.tile").evaluate_all(
                    "links => links.map(a => a.dataset.id)"
                )
                target = tiles[number % len(tiles)]
                elapsed = page.evaluate(_CLICK_TO_GRID_JS, [models, models[0], target])
                timings.append(elapsed)
                current = target
                print(
                    f"click {number + 1}/{clicks}: {elapsed:.0f} ms (query {current})",
                    file=sys.stderr,
                )
            peak = _peak_rss_mb(server.process.pid)
            sampler.stopped.set()
            sampler.join()
            torch_loaded = _torch_loaded(server.process.pid)
        finally:
            server.stop()
            chromium.close()
    import streamlit

    return {
        "catalogue": str(report_as or catalog),
        "products": len(catalogue),
        "models": models,
        "k": k,
        "cold_start_s": round(cold_start_s, 3),
        "server_answering_s": round(ready_s, 3),
        "warm_page_load_s": round(warm_load_s, 3),
        "click_to_grid_ms": {
            "median": round(statistics.median(timings), 1),
            "p90": round(_percentile(timings, 0.9), 1),
            "min": round(min(timings), 1),
            "max": round(max(timings), 1),
            "n": len(timings),
        },
        "peak_rss_mb": round(peak if peak is not None else sampler.peak / 2**20, 1),
        "peak_rss_source": "VmHWM" if peak is not None else "psutil samples every 50 ms",
        "torch_loaded_in_server": torch_loaded,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "streamlit": streamlit.__version__,
            "platform": platform.platform(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalog", required=True, help="catalogue folder (or its name in the data folder)"
    )
    parser.add_argument("--models", help="comma-separated model ids (default: every built model)")
    parser.add_argument(
        "--clicks", type=int, default=15, help="click-to-grid repetitions (default 15)"
    )
    parser.add_argument("-k", type=int, default=10, help="results per model (default 10)")
    args = parser.parse_args(argv)
    catalog = Path(args.catalog).expanduser()
    if not catalog.is_dir():
        catalog = data_dir() / args.catalog
    if not (catalog / "catalog.json").is_file():
        parser.error(f"{args.catalog}: not a catalogue folder (no catalog.json)")
    if args.clicks < 1:
        parser.error("--clicks must be at least 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    with tempfile.TemporaryDirectory(prefix="bench-app-") as scratch:
        # A data folder of its own holding only this catalogue (a link), so the app lists nothing
        # else.
        data = Path(scratch) / "data"
        data.mkdir()
        (data / catalog.resolve().name).symlink_to(catalog.resolve(), target_is_directory=True)
        figures = run(
            data / catalog.resolve().name,
            models,
            args.clicks,
            args.k,
            Path(scratch),
            report_as=catalog.resolve(),
        )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

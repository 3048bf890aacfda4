"""Many sessions at once against one `streamlit run app.py`: errors, cross-session leaks, latency.

    python -m bench.bench_load --sessions 20 --seconds 60 [--catalog DIR] [--models a,b] [-k 10]

Starts the app on loopback and opens `--sessions` browser contexts (separate cookies, separate
Streamlit sessions) in one headless Chromium (Debian's /usr/bin/chromium, through Playwright's
async API). Once every session has loaded its page, each one loops for `--seconds` over the three
ways of asking, in turn: an *item* query (a click on a result tile), a *text* query (typed in the
box, Enter) and an *upload* (an image drawn for the session: its own colour, a bar coding the
query number). Every session finishes at least one round of the three.

What is checked, per query:

- errors: the grids did not show the query within `--timeout`, the page showed an error or an
  exception, a JavaScript dialog opened or the page threw, the server logged a traceback;
- leaks: another session's query seen in this session's page. Each session's text queries and
  upload names carry a marker `zs<session>q<n>`; the page's text (shadow roots, input values,
  attributes the grids carry, the URL included) may hold no marker of another session, and an
  upload's query card must show this session's own image (its colour, decoded from the card);
- wrong results: after the run, every ranking a session was shown is recomputed by the core
  (`embeddings.search.searcher`) for that session's own query; a ranking that differs (beyond
  display rounding) is counted. A session shown another session's results would be caught here.

Latency is from the action (click, Enter, file set) to the first poll (every 50 ms) in which every
model's grid shows the new query with scored tiles; the models loaded on first use (text encoder,
image embedder) are warmed up by one session before the clock starts. The server's peak RSS is
`VmHWM` of its process. `cpu_s` splits the CPU time of the run between the server, the browser
(Chromium and Playwright's driver) and this script: they share the machine's cores, so on a small
machine the latencies include waiting for the browser's own rendering.

Without `--catalog`, a 400-product stratified sample of the shared fashion dataset is built once
into `--work` (pixels and efficientnet-lite0, with efficientnet-lite0's text bridge). A given
catalogue needs one selected model that takes text (a text tower or a bridge: `python -m
embeddings.bridge --catalog DIR --models efficientnet-lite0`).

Prints one JSON object on stdout (progress on stderr). Figures, not a test: the machine may be
shared. `tests/test_load.py` runs a small form of this with the same checks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import colorsys
import io
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app_support import browser
from embeddings.catalogue import Catalogue
from embeddings.index.opening import built_models
from embeddings.search.searcher import text_capable_models

REPO = Path(__file__).resolve().parent.parent

SHARED_FASHION = REPO.parent / "shared" / "datasets" / "fashion-product-images-small"
DEFAULT_WORK = Path(tempfile.gettempdir()) / "embeddings-bench-load"
KINDS = ("item", "text", "upload")
#: Scores are shown rounded to 4 decimals, and another process may differ in the last float bits.
SCORE_TOLERANCE = 2e-3
MARKER = re.compile(r"zs(\d{2})q(\d+)")
UPLOAD_SIZE = (60, 80)

#: In-page: the hosts of `st.components.v2` components (their markup sits in shadow roots).
_HOSTS_JS = """
const hosts = () => {
  const found = document.querySelectorAll('[data-testid="stBidiComponentIsolated"]');
  return found.length ? Array.from(found) \
: Array.from(document.querySelectorAll('*')).filter(e => e.shadowRoot);
};
"""

#: In-page: every grid as {model, query, tiles: [[id, score|null]]}.
GRIDS_JS = (
    "() => {"
    + _HOSTS_JS
    + """
  const grids = [];
  for (const host of hosts()) {
    const grid = host.shadowRoot && host.shadowRoot.querySelector('.grid');
    if (!grid) continue;
    grids.push({model: grid.dataset.model, query: grid.dataset.query,
                tiles: Array.from(grid.querySelectorAll('a.tile')).map(
                  a => [a.dataset.id, a.dataset.score === undefined \
? null : Number(a.dataset.score)])});
  }
  return grids;
}"""
)

#: In-page: every model in `models` has a grid showing `query` with scored tiles.
READY_JS = (
    "([models, query]) => {"
    + _HOSTS_JS
    + """
  const grids = hosts().map(h => h.shadowRoot && h.shadowRoot.querySelector('.grid'))\
.filter(g => g);
  return models.every(m => grids.some(g => g.dataset.model === m && g.dataset.query === query
                                         && g.querySelector('a.tile[data-score]')));
}"""
)

#: In-page: everything a person or a script could read off the page, as one string.
PAGE_TEXT_JS = (
    "() => {"
    + _HOSTS_JS
    + """
  const parts = [location.href, document.body.innerText];
  for (const input of document.querySelectorAll('input, textarea')) parts.push(input.value || '');
  for (const host of hosts()) {
    if (!host.shadowRoot) continue;
    parts.push(host.shadowRoot.textContent);
    for (const node of host.shadowRoot.querySelectorAll('[data-query], [title], [alt], a[href]')) {
      parts.push(node.dataset.query || '', node.title || '', node.alt || '', \
node.getAttribute('href') || '');
    }
  }
  return parts.join('\\n');
}"""
)

#: In-page: the script run is over: Streamlit's app root says so, and no element is left stale.
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.dataset.testScriptState === 'notRunning' \
&& !document.querySelector('[data-stale="true"]');
}"""

#: In-page: the page's websocket state ("CONNECTED" while it is).
CONNECTION_JS = (
    "() => (document.querySelector('[data-testid=\"stApp\"]') || {dataset: "
    "{}}).dataset.testConnectionState"
)

ERROR_SELECTOR = "[data-testid='stAlertContentError'], [data-testid='stException']"


# -- what each session asks ---------------------------------------------------------------------
def marker(session: int, number: int) -> str:
    """The token that makes a session's query recognisable anywhere: `zs07q3`."""
    return f"zs{session:02d}q{number}"


def session_colour(session: int, sessions: int) -> tuple[int, int, int]:
    """A colour of its own per session: hues spread evenly around the wheel."""
    red, green, blue = colorsys.hsv_to_rgb(session / max(sessions, 1), 0.85, 0.9)
    return round(red * 255), round(green * 255), round(blue * 255)


def session_image(session: int, sessions: int, number: int) -> bytes:
    """The PNG a session uploads: its colour, with a white bar whose height codes the query number
    (each upload differs, so a stale result of the previous one is not mistaken for it)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", UPLOAD_SIZE, session_colour(session, sessions))
    ImageDraw.Draw(image).rectangle(
        (0, 0, UPLOAD_SIZE[0] - 1, 4 + 3 * (number % 8)), fill=(255, 255, 255)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def foreign_markers(text: str, session: int) -> list[str]:
    """Markers of any session but `session` in `text` (each at most once, in order)."""
    found = [m.group(0) for m in MARKER.finditer(text) if int(m.group(1)) != session]
    return list(dict.fromkeys(found))


def nearest_session(rgb: tuple[float, float, float], sessions: int) -> int:
    """The session whose colour is nearest to `rgb`."""

    def distance(s):
        return sum((a - b) ** 2 for a, b in zip(rgb, session_colour(s, sessions), strict=True))

    return min(range(sessions), key=distance)


def card_colour(data_uri: str) -> tuple[float, float, float]:
    """The median colour of the lower half of an image given as a data URI (below the white bar)."""
    import numpy as np
    from PIL import Image

    _, _, payload = data_uri.partition(",")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        pixels = np.asarray(image.convert("RGB"))
    lower = pixels[pixels.shape[0] // 2 :].reshape(-1, 3)
    return tuple(float(v) for v in np.median(lower, axis=0))


def ranking_problem(shown: list, expected: list, k: int) -> str | None:
    """Why the tiles `shown` [(id, score)] are not the ranking `expected` [Hit] (top k, a few more
    beyond k so that ties at the cut-off are judged fairly); None when they agree."""
    cut = expected[:k]
    if len(shown) != len(cut):
        return f"{len(shown)} tiles where the core ranks {len(cut)}"
    scores = {hit.id: hit.score for hit in expected}
    for rank, ((item_id, score), hit) in enumerate(zip(shown, cut, strict=True), start=1):
        if score is None or abs(score - hit.score) > SCORE_TOLERANCE:
            return f"rank {rank}: score {score} where the core has {hit.score:.4f}"
        if item_id not in scores or abs(scores[item_id] - score) > SCORE_TOLERANCE:
            return (
                f"rank {rank}: {item_id} ({score}) is not the core's product at that "
                f"score ({hit.id})"
            )
    return None


# -- one session ---------------------------------------------------------------------------------
@dataclass
class Observation:
    """One query a session asked and what its page showed (checked against the core afterwards)."""

    session: int
    kind: str
    query: str  # item id, text, or upload file name
    grids: dict[str, list]  # model -> [(id, score)]
    upload: bytes | None = None


@dataclass
class SessionLog:
    session: int
    page_load_s: float | None = None
    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)


@dataclass
class Plan:
    """What every session shares: where the app is and what to ask of it."""

    url: str
    catalogue: Catalogue
    models: list[str]
    text_models: list[str]
    k: int
    sessions: int
    seconds: float
    timeout_s: float
    think_s: float
    seed: int

    def page_url(self, item: str) -> str:
        from urllib.parse import urlencode

        return f"{self.url}/?" + urlencode(
            {
                "catalog": self.catalogue.name,
                "models": ",".join(self.models),
                "k": self.k,
                "item": item,
            }
        )


def _css_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Session:
    """One browser context driving one Streamlit session."""

    def __init__(self, plan: Plan, number: int, chromium):
        self.plan = plan
        self.number = number
        self.chromium = chromium
        self.log = SessionLog(number)
        self.rng = random.Random(plan.seed * 1000 + number)
        self.asked = 0
        self.page = None
        self.context = None
        self.current: str | None = None

    # -- page plumbing
    async def open(self) -> None:
        self.context = await self.chromium.new_context(viewport={"width": 1280, "height": 900})
        self.page = await self.context.new_page()
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda exc: self.log.errors.append(f"page error: {exc}"))
        start_item = self.plan.catalogue.ids[self.number % len(self.plan.catalogue)]
        started = time.perf_counter()
        await self.page.goto(self.plan.page_url(start_item))
        await self._wait_ready(self.plan.models, start_item)
        self.log.page_load_s = time.perf_counter() - started
        self.current = start_item

    def _on_dialog(self, dialog) -> None:
        self.log.errors.append(f"a JavaScript dialog opened: {dialog.type} {dialog.message!r}")
        asyncio.ensure_future(dialog.dismiss())

    async def close(self) -> None:
        if self.context is not None:
            await self.context.close()

    async def _wait_ready(self, models: list[str], query: str) -> None:
        await self.page.wait_for_function(
            READY_JS, arg=[models, query], polling=50, timeout=self.plan.timeout_s * 1000
        )

    async def _grids(self) -> dict[str, dict]:
        return {grid["model"]: grid for grid in await self.page.evaluate(GRIDS_JS)}

    # -- the three ways of asking: each returns (query, models that must answer, action, upload)
    async def ask_item(self):
        """Click a result tile (not the current query's product)."""
        grids = await self._grids()
        candidates = sorted(
            {
                (model, tile[0])
                for model, grid in grids.items()
                if model != "browse"
                for tile in grid["tiles"]
                if tile[0] != self.current
            }
        )
        if not candidates:
            raise RuntimeError(f"no result tile to click (grids: {sorted(grids)})")
        model, target = self.rng.choice(candidates)
        tile = self.page.locator(
            f"{browser.grid_selector(model)} a.tile[data-id={_css_string(target)}]"
        ).first
        return target, self.plan.models, tile.click, None

    async def ask_text(self):
        """Type a text carrying this session's marker into the box, press Enter."""
        text = f"{self.rng.choice(TEXTS)} {marker(self.number, self.asked)}"
        box = self.page.get_by_label("Describe a product")

        async def act():
            await box.fill(text)
            await box.press("Enter")

        return text, self.plan.text_models, act, None

    async def ask_upload(self):
        """Upload this session's image (named with its marker)."""
        name = f"{marker(self.number, self.asked)}.png"
        data = session_image(self.number, self.plan.sessions, self.asked)
        chooser = self.page.locator("input[type=file]")

        async def act():
            await chooser.set_input_files({"name": name, "mimeType": "image/png", "buffer": data})

        return name, self.plan.models, act, data

    async def ask(self, kind: str) -> None:
        """Ask one query of `kind`, time it to the grids, then check the page."""
        query, models, act, upload = await {
            "item": self.ask_item,
            "text": self.ask_text,
            "upload": self.ask_upload,
        }[kind]()
        self.asked += 1
        started = time.perf_counter()
        await act()
        await self._wait_ready(models, query)
        self.log.latencies[kind].append(time.perf_counter() - started)
        self.current = query
        await self.page.wait_for_function(IDLE_JS, polling=50, timeout=self.plan.timeout_s * 1000)
        await self._check(kind, query, models, upload)

    async def _check(self, kind: str, query: str, models: list[str], upload: bytes | None) -> None:
        """After the run that answered `query`: errors shown, foreign queries, the card's image."""
        page = self.page
        connection = await page.evaluate(CONNECTION_JS)
        if connection != "CONNECTED":
            self.log.errors.append(f"{kind} {query!r}: the page's connection is {connection!r}")
        shown_errors = await page.locator(ERROR_SELECTOR).all_inner_texts()
        for message in shown_errors:
            self.log.errors.append(f"{kind} {query!r}: the page shows an error: {message[:300]}")
        text = await page.evaluate(PAGE_TEXT_JS)
        own = MARKER.search(query)
        if (
            own and own.group(0) not in text
        ):  # the scan must see this query to be able to see others'
            self.log.errors.append(
                f"{kind} {query!r}: the page's text does not hold the query's marker"
            )
        for foreign in foreign_markers(text, self.number):
            self.log.leaks.append(f"session {self.number} after {kind} {query!r} shows {foreign}")
        grids = await self._grids()
        for model in models:
            if grids.get(model, {}).get("query") != query:
                self.log.errors.append(
                    f"{kind} {query!r}: {model}'s grid shows {grids.get(model, {}).get('query')!r} "
                    "once the run is over"
                )
        if kind == "upload":
            card = page.locator("[data-testid=query-card] img").first
            colour = card_colour(await card.get_attribute("src"))
            owner = nearest_session(colour, self.plan.sessions)
            if owner != self.number:
                self.log.leaks.append(
                    f"session {self.number}'s query card after uploading {query} shows an "
                    f"image in session {owner}'s colour {tuple(round(c) for c in colour)}"
                )
        self.log.observations.append(
            Observation(
                self.number,
                kind,
                query,
                {m: [tuple(t) for t in grids[m]["tiles"]] for m in models if m in grids},
                upload,
            )
        )

    # -- the loop
    async def run(self, start: asyncio.Event, deadline_box: list[float]) -> SessionLog:
        await start.wait()
        done = 0
        while done < len(KINDS) or time.monotonic() < deadline_box[0]:
            kind = KINDS[(self.number + done) % len(KINDS)]
            try:
                await self.ask(kind)
            except Exception as exc:  # a timeout or a broken page: count it, reload, go on
                self.log.errors.append(
                    f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                )
                await self._recover()
            done += 1
            if self.plan.think_s:
                await asyncio.sleep(self.rng.uniform(0, 2 * self.plan.think_s))
        return self.log

    async def _recover(self) -> None:
        try:
            item = self.plan.catalogue.ids[self.rng.randrange(len(self.plan.catalogue))]
            await self.page.goto(self.plan.page_url(item))
            await self._wait_ready(self.plan.models, item)
            self.current = item
        except Exception as exc:
            self.log.errors.append(
                f"reload after an error failed: {type(exc).__name__}: {str(exc)[:200]}"
            )


TEXTS = (
    "red shirt",
    "blue jeans",
    "black shoes",
    "white sneakers",
    "green dress",
    "leather bag",
    "sports watch",
    "yellow top",
    "red circle",
    "blue square",
    "green triangle",
    "yellow product",
)


# -- the run --------------------------------------------------------------------------------------
async def _warm_up(plan: Plan, chromium) -> float:
    """One session asks one text and one upload: the server loads its models before the clock."""
    started = time.perf_counter()
    warm = Session(plan, plan.sessions, chromium)  # a number no measured session has
    warm.plan = Plan(**{**plan.__dict__, "sessions": plan.sessions + 1})
    try:
        await warm.open()
        for kind in ("text", "upload"):
            await warm.ask(kind)
    finally:
        await warm.close()
    if warm.log.errors or warm.log.leaks:
        raise RuntimeError(f"the warm-up query failed: {(warm.log.errors + warm.log.leaks)[:3]}")
    return time.perf_counter() - started


class CpuAccount(threading.Thread):
    """CPU seconds spent between `begin()` and `end()` by the server, by the browser (every other
    process this one started: Playwright's driver, Chromium and its renderers) and by this script.

    Processes are sampled every 0.5 s (a renderer that exits loses at most its last half second):
    on a shared 2-core machine the browser competes with the server, and these figures say how much.
    """

    def __init__(self, server_pid: int):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.server = psutil.Process(server_pid)
        self.first: dict[tuple, float] = {}
        self.last: dict[tuple, float] = {}
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.figures: dict[str, float] = {}

    def _sample(self) -> None:
        for process in self.me.children(recursive=True):
            if process.pid == self.server.pid:
                continue
            try:
                key = (process.pid, process.create_time())
                used = sum(process.cpu_times()[:2])
            except self.psutil.Error:  # gone since the listing
                continue
            with self.lock:
                self.first.setdefault(key, used)
                self.last[key] = used

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            if self.running.is_set():
                self._sample()

    def begin(self) -> None:
        self._sample()
        self.server_start = sum(self.server.cpu_times()[:2])
        self.own_start = time.process_time()
        self.wall_start = time.perf_counter()
        self.running.set()
        self.start()

    def end(self) -> dict[str, float]:
        self._sample()
        self.running.clear()
        self.stopped.set()
        with self.lock:
            browser_s = sum(self.last[key] - self.first[key] for key in self.last)
        self.figures = {
            "server": round(sum(self.server.cpu_times()[:2]) - self.server_start, 1),
            "browser": round(browser_s, 1),
            "this_script": round(time.process_time() - self.own_start, 1),
            "wall": round(time.perf_counter() - self.wall_start, 1),
        }
        return self.figures


async def drive(plan: Plan, cpu: CpuAccount) -> dict:
    """Warm up; open every session, release them together, run them for `plan.seconds`; `cpu`
    counts from the sessions' opening to the end of their last query."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=browser.CHROMIUM, args=browser.CHROMIUM_ARGS, headless=True
        )
        try:
            warmup_s = await _warm_up(plan, chromium)
            print(
                f"warm-up done in {warmup_s:.1f} s; opening {plan.sessions} sessions",
                file=sys.stderr,
            )
            sessions = [Session(plan, number, chromium) for number in range(plan.sessions)]
            cpu.begin()
            opened = time.perf_counter()
            outcomes = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
            open_s = time.perf_counter() - opened
            for session, outcome in zip(sessions, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    session.log.errors.append(
                        f"opening the page: {type(outcome).__name__}: {str(outcome)[:300]}"
                    )
                    await session._recover()
            print(
                f"{plan.sessions} sessions open in {open_s:.1f} s; running for "
                f"{plan.seconds:.0f} s",
                file=sys.stderr,
            )
            start, deadline = asyncio.Event(), [0.0]
            runs = [asyncio.ensure_future(s.run(start, deadline)) for s in sessions]
            began = time.monotonic()
            deadline[0] = began + plan.seconds
            start.set()
            logs = await asyncio.gather(*runs)
            ran_s = time.monotonic() - began
            cpu.end()
            for session in sessions:
                await session.close()
        finally:
            await chromium.close()
    return {"logs": logs, "warmup_s": warmup_s, "open_s": open_s, "ran_s": ran_s}


def verify(plan: Plan, logs: list[SessionLog]) -> list[str]:
    """Recompute every ranking the sessions were shown for their own queries; the mismatches."""
    from app_support.search_ui import accept_upload
    from embeddings.search.searcher import make_searcher

    searcher = make_searcher(plan.catalogue)
    extra = 5  # a few beyond k: ties at the cut-off
    problems = []
    for log in logs:
        for seen in log.observations:
            for model, tiles in seen.grids.items():
                if seen.kind == "item":
                    expected = searcher.search_item(seen.query, [model], plan.k + extra)[model]
                elif seen.kind == "text":
                    expected = searcher.search_text(seen.query, [model], plan.k + extra)[model]
                else:
                    image = accept_upload(seen.query, seen.upload).image
                    expected = searcher.search_image(image, [model], plan.k + extra)[model]
                problem = ranking_problem(tiles, expected, plan.k)
                if problem:
                    problems.append(
                        f"session {seen.session} {seen.kind} {seen.query!r} on {model}: {problem}"
                    )
    return problems


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _latency(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(share):
        return round(
            1000 * ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))], 1
        )

    return {
        "n": len(ordered),
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
        "max_ms": round(1000 * ordered[-1], 1),
        "mean_ms": round(1000 * statistics.fmean(ordered), 1),
    }


def run(
    catalog: Path,
    *,
    sessions: int,
    seconds: float,
    models: list[str] | None = None,
    k: int = 10,
    timeout_s: float = 180.0,
    think_s: float = 0.0,
    seed: int = 0,
    log_dir: Path,
) -> dict:
    """Serve `catalog` (alone, from a data folder of its own) and run the sessions; the figures."""
    catalogue = Catalogue.open(catalog)
    built = built_models(catalogue)
    models = models or built[:4]
    missing = [m for m in models if m not in built]
    if missing:
        raise SystemExit(
            f"{catalog}: no index for {', '.join(missing)} (built: {', '.join(built) or 'none'})"
        )
    text_models = [m for m in models if m in text_capable_models(catalogue)]
    if not text_models:
        raise SystemExit(
            f"{catalog}: none of {', '.join(models)} takes text queries; train a text bridge: "
            f"python -m embeddings bridge --catalog {catalog} --models {models[0]}"
        )
    if len(catalogue) < 3:
        raise SystemExit(f"{catalog}: {len(catalogue)} products; the load test needs at least 3")
    k = max(1, min(k, len(catalogue) - 1))
    if not browser.chromium_available():
        raise SystemExit(f"no Chromium at {browser.CHROMIUM}: apt-get install chromium")

    data = log_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    link = data / catalog.resolve().name
    if not link.exists():
        link.symlink_to(catalog.resolve(), target_is_directory=True)
    server = browser.start_app(data, log_path=log_dir / "streamlit.log", timeout=180)
    try:
        import psutil

        process = psutil.Process(server.process.pid)
        plan = Plan(
            url=server.url,
            catalogue=Catalogue.open(link),
            models=models,
            text_models=text_models,
            k=k,
            sessions=sessions,
            seconds=seconds,
            timeout_s=timeout_s,
            think_s=think_s,
            seed=seed,
        )
        cpu = CpuAccount(server.process.pid)
        outcome = asyncio.run(drive(plan, cpu))
        peak = _peak_rss_mb(server.process.pid)
        if peak is None:
            peak = round(process.memory_info().rss / 2**20, 1)
    finally:
        server.stop()
    logs: list[SessionLog] = outcome["logs"]
    print("checking every ranking shown against the core…", file=sys.stderr)
    wrong = verify(plan, logs)
    tracebacks = server.log().count("Traceback")
    errors = [f"session {log.session}: {e}" for log in logs for e in log.errors]
    if tracebacks:
        errors.append(f"the server logged {tracebacks} traceback(s); see {server.log_path}")
    leaks = [leak for log in logs for leak in log.leaks]
    latencies = {kind: [v for log in logs for v in log.latencies[kind]] for kind in KINDS}
    import streamlit

    return {
        "catalogue": str(catalog.resolve()),
        "products": len(catalogue),
        "models": models,
        "text_models": text_models,
        "k": k,
        "sessions": sessions,
        "seconds": seconds,
        "ran_s": round(outcome["ran_s"], 1),
        "think_s": think_s,
        "queries": {kind: len(values) for kind, values in latencies.items()},
        "queries_total": sum(len(values) for values in latencies.values()),
        "per_session": {
            str(log.session): {kind: len(log.latencies[kind]) for kind in KINDS} for log in logs
        },
        "errors": len(errors),
        "error_samples": errors[:20],
        "leaks": len(leaks),
        "leak_samples": leaks[:20],
        "wrong_results": len(wrong),
        "wrong_result_samples": wrong[:20],
        "rankings_checked": sum(len(seen.grids) for log in logs for seen in log.observations),
        "latency_ms": {kind: _latency(values) for kind, values in latencies.items()},
        "page_load_ms": _latency([log.page_load_s for log in logs if log.page_load_s is not None]),
        "warmup_s": round(outcome["warmup_s"], 1),
        "sessions_open_s": round(outcome["open_s"], 1),
        "server_peak_rss_mb": peak,
        "cpu_s": cpu.figures,  # from the sessions' opening to their last answer: who used the cores
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "streamlit": streamlit.__version__,
            "platform": platform.platform(),
        },
    }


def default_catalogue(work: Path, products: int = 400) -> Path:
    """A stratified sample of the shared fashion dataset with pixels and efficientnet-lite0 and the
    latter's text bridge, built once into `work` (reused while it is complete)."""
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.building.model import build_model_index
    from embeddings.catalogue import create_catalogue
    from embeddings.models import load_model

    out = work / "catalogues" / f"fashion-{products}"
    models = ["pixels", "efficientnet-lite0"]
    if (
        (out / "catalog.json").is_file()
        and set(models) <= set(built_models(Catalogue.open(out)))
        and "efficientnet-lite0" in text_capable_models(Catalogue.open(out))
    ):
        return out
    if not (SHARED_FASHION / "styles.csv").is_file():
        raise SystemExit(
            f"no --catalog given and the shared dataset is absent ({SHARED_FASHION}); "
            "pass --catalog DIR (a built catalogue with a model that takes text)"
        )
    print(f"building the load catalogue ({products} products) into {out}", file=sys.stderr)
    catalogue = create_catalogue(str(SHARED_FASHION), out, limit=products, seed=1)
    for model_id in models:
        build_model_index(catalogue, load_model(model_id))
    train_bridge_for_catalogue(catalogue, "efficientnet-lite0")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions", type=int, default=20, help="concurrent browser sessions (default 20)"
    )
    parser.add_argument(
        "--seconds", type=float, default=60, help="how long every session keeps asking (default 60)"
    )
    parser.add_argument(
        "--catalog",
        help="a built catalogue folder (default: a 400-product fashion sample built into --work)",
    )
    parser.add_argument(
        "--models", help="comma-separated model ids (default: up to 4 built models)"
    )
    parser.add_argument("-k", type=int, default=10, help="results per model (default 10)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=180,
        help="seconds one query may take before it counts as an error (default 180)",
    )
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean pause between a session's queries, in seconds (default 0: back to back)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work",
        default=str(DEFAULT_WORK),
        help=f"where the default catalogue is built (default {DEFAULT_WORK})",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.sessions > 99:
        parser.error("--sessions must be between 1 and 99 (markers have two digits)")
    if args.seconds < 0:
        parser.error("--seconds must be 0 or more")
    if args.catalog:
        catalog = Path(args.catalog).expanduser()
        if not (catalog / "catalog.json").is_file():
            parser.error(f"{args.catalog}: not a catalogue folder (no catalog.json)")
    else:
        catalog = default_catalogue(Path(args.work).expanduser())
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        figures = run(
            catalog,
            sessions=args.sessions,
            seconds=args.seconds,
            models=models,
            k=args.k,
            timeout_s=args.timeout,
            think_s=args.think,
            seed=args.seed,
            log_dir=Path(scratch),
        )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

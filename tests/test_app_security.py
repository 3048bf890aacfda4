"""Bad input at the app level, in a real browser against `streamlit run app.py`.

Already covered elsewhere, and not repeated here:

- tests/test_app.py::test_bad_urls_get_a_clear_message_and_the_app_stays_up (AppTest, one
  session): unknown item, unknown model, unknown catalogue, k=abc, k=100000, k=0, malformed and
  unknown filters, unknown label field, empty and overlong text, an overlong parameter;
  ::test_k_larger_than_the_catalogue_is_clamped;
- test_app.py::test_bad_uploads_get_a_message_and_keep_the_previous_results: a text file named
  .png, an empty file, a truncated JPEG, a decompression bomb, and the app's own size check
  (`accept_upload` refuses more than 16 MB whatever the browser let through);
- test_app.py::test_product_titles_are_shown_as_text_not_html: the query card's HTML escapes
  titles and the grid receives them as data (AppTest has no DOM: the browser side is here);
- tests/test_browser.py::test_a_file_that_is_not_an_image_is_refused_and_the_app_stays_up: a
  text file renamed .jpg, in the browser.

Added here, each asserting a clear message (naming the thing and what to do), that the page
still works, that no JavaScript dialog opened and no HTML element was made from the input, and
that another session open at the same time (the *bystander*) is unaffected and still answers:

- uploads over `server.maxUploadSize`: refused by the browser's uploader, and, sent past the
  browser's check straight to the upload endpoint, refused by the server (HTTP 413);
- uploads of the wrong type: a .pdf, a PDF renamed .png, and a non-image whose *file name* is
  HTML and markdown;
- URL parameters: unknown ids, models and catalogue (some written as HTML or markdown),
  k=10**9, k=ten, k=1e9;
- `<script>` and `<img onerror>` in a text query, typed and from a link;
- product titles and label values holding HTML (`<img src=x onerror=alert(1)>`, `<b>bold</b>`)
  in a catalogue built here (folder adapter + metadata.csv, pixels with a text bridge).

Needs Debian's chromium (`apt-get install chromium`); elsewhere the tests skip, in CI
(`CI=true`) they fail instead.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from app_support import browser
from tests.harness.chromium import require_browser as _require_browser
from tests.harness.paths import REPO
from tests.harness.products import draw_product

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TITLE_HTML = "<img src=x onerror=alert(1)> <b>bold</b>"
LABEL_HTML = "<b>bold</b>"
MODELS = ["pixels"]
WAIT_MS = 120_000  # the machine may be shared: generous waits (never asserted on)

#: In-page: what a reader (or a script) can read: the page's text, inputs, and the components'
#: shadow roots (the tile grids) with their tooltips and image alt texts.
PAGE_TEXT_JS = """() => {
  const parts = [document.body.innerText];
  for (const input of document.querySelectorAll('input, textarea')) parts.push(input.value || '');
  const walk = (root) => {
    for (const element of root.querySelectorAll('*')) {
      if (!element.shadowRoot) continue;
      parts.push(element.shadowRoot.textContent);
      for (const node of element.shadowRoot.querySelectorAll('[title], [alt]')) \
parts.push(node.title || '', node.alt || '');
      walk(element.shadowRoot);
    }
  };
  walk(document);
  return parts.join('\\n');
}"""

#: In-page: script elements (in the document or any shadow root) whose code calls alert.
ALERT_SCRIPTS_JS = """() => {
  let found = 0;
  const walk = (root) => {
    for (const element of root.querySelectorAll('*')) {
      if (element.tagName === 'SCRIPT' && (element.textContent || '').includes('alert(')) found++;
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  return found;
}"""


def upload_limit_mb() -> int:
    """`server.maxUploadSize` from the repository's .streamlit/config.toml (Streamlit's default:
    200)."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    return int(config.get("server", {}).get("maxUploadSize", 200))


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


# -- the catalogue, the server, the browser -------------------------------------------------------
@pytest.fixture(scope="module")
def evil_catalogue(tmp_path_factory):
    """18 products (3 colours x 2 shapes x 3) whose titles and `style` labels hold HTML; pixels
    index and a pixels text bridge (so text queries are answered)."""
    _require_browser()
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.building.model import build_model_index
    from embeddings.catalogue import create_catalogue
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("security")
    source = root / "source"
    rows = []
    for colour in ("red", "green", "blue"):
        (source / colour).mkdir(parents=True)
        for shape in ("circle", "square"):
            for variant in range(3):
                name = f"{colour}/{shape}_{variant}.png"
                draw_product(colour, shape, variant).save(source / name)
                rows.append(
                    {
                        "file": name,
                        "title": f"{TITLE_HTML} {colour} {shape} {variant}",
                        "style": LABEL_HTML if shape == "circle" else "<i>plain</i>",
                    }
                )
    with open(source / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "title", "style"])
        writer.writeheader()
        writer.writerows(rows)
    catalogue = create_catalogue(str(source), root / "data" / "evil")
    assert catalogue.items.at["red/circle_0", "title"].startswith(
        TITLE_HTML
    )  # the sidecar was read
    build_model_index(catalogue, load_model("pixels"))
    train_bridge_for_catalogue(catalogue, "pixels")
    return catalogue


@pytest.fixture(scope="module")
def server(evil_catalogue, app_server):
    return app_server(evil_catalogue.directory.parent)


@dataclass
class Watched:
    """A browser context (its own Streamlit session) whose dialogs and page errors are recorded."""

    context: object
    page: object
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, chromium) -> Watched:
        context = chromium.new_context(viewport={"width": 1440, "height": 1000})
        watched = cls(context, context.new_page())

        def on_dialog(dialog):
            watched.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        watched.page.on("dialog", on_dialog)
        watched.page.on("pageerror", lambda exc: watched.page_errors.append(str(exc)))
        return watched

    def goto(self, server, **params) -> None:
        """Open the app with `params` in its URL; return once the page has drawn a tile grid."""
        self.page.goto(f"{server.url}/?{urlencode(params)}")
        self.page.locator(".grid a.tile").first.wait_for(state="attached", timeout=WAIT_MS)

    def text(self) -> str:
        return self.page.evaluate(PAGE_TEXT_JS)

    def alerts(self) -> str:
        """The texts of every warning, error, info and success box on the page."""
        return "\n".join(self.page.locator("[data-testid^='stAlertContent']").all_inner_texts())

    def results(self, query: str) -> dict:
        return browser.wait_for_results(self.page, MODELS, query=query, timeout=WAIT_MS / 1000)


def assert_inert(watched: Watched) -> None:
    """No dialog opened, no page error, and nothing the input held became an element."""
    page = watched.page
    page.wait_for_timeout(700)  # an `onerror` handler fires as soon as its image fails to load
    assert watched.dialogs == [], watched.dialogs
    assert watched.page_errors == [], watched.page_errors
    assert page.locator("img[src=x]").count() == 0  # Playwright's CSS locators pierce shadow roots
    assert page.locator("b").filter(has_text=re.compile(r"^\s*bold\s*$")).count() == 0
    assert page.locator("i").filter(has_text=re.compile(r"^\s*plain\s*$")).count() == 0
    assert page.locator("a[href^='javascript:' i]").count() == 0
    assert page.evaluate(ALERT_SCRIPTS_JS) == 0


@pytest.fixture
def watched(chromium):
    tab = Watched.open(chromium)
    yield tab
    tab.context.close()


class Bystander:
    """A second session, open through the whole module on an item query: after each bad input it
    must still show its own results, with no message, and answer a new query correctly."""

    def __init__(self, chromium, server, catalogue):
        from embeddings.search.searcher import make_searcher

        self.tab = Watched.open(chromium)
        self.server = server
        self.searcher = make_searcher(catalogue)
        self.query = "green/square_0"
        self.tab.goto(server, item=self.query)
        self.shown = self.tab.results(self.query)
        self._assert_core_ranking()

    def _assert_core_ranking(self) -> None:
        expected = self.searcher.search_item(self.query, MODELS, 10)["pixels"]
        assert self.shown["pixels"]["tiles"] == [(hit.id, round(hit.score, 4)) for hit in expected]

    def assert_unaffected(self) -> None:
        assert (
            browser.wait_for_results(self.tab.page, MODELS, query=self.query, timeout=30)
            == self.shown
        )
        assert self.tab.alerts() == ""
        assert_inert(self.tab)
        tiles = [tile_id for tile_id, _ in self.shown["pixels"]["tiles"]]
        target = tiles[len(tiles) // 2]
        self.tab.page.locator(
            f"{browser.grid_selector('pixels')} a.tile[data-id='{target}']"
        ).click()
        self.query = target
        self.shown = self.tab.results(target)
        self._assert_core_ranking()


@pytest.fixture(scope="module")
def bystander(chromium, server, evil_catalogue):
    other = Bystander(chromium, server, evil_catalogue)
    yield other
    other.tab.context.close()


# -- the watch itself -----------------------------------------------------------------------------
def test_the_watch_catches_a_real_injection(watched):
    """The checks below can fail: markup that does run trips them."""
    watched.page.set_content("<p>x</p><img src=x onerror=\"alert('injected')\"><b>bold</b>")
    watched.page.wait_for_timeout(500)
    assert watched.dialogs == ["alert: injected"]
    with pytest.raises(AssertionError):
        assert_inert(watched)


# -- uploads --------------------------------------------------------------------------------------
def test_an_oversize_upload_is_refused_by_the_uploader(watched, server, bystander, tmp_path):
    from app_support.search_ui import MAX_UPLOAD_BYTES

    limit = upload_limit_mb()
    assert limit * 2**20 == MAX_UPLOAD_BYTES, (
        "the app's own upload check and server.maxUploadSize disagree"
    )
    watched.goto(server, item="red/circle_0")
    before = watched.results("red/circle_0")
    big = tmp_path / "holiday.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * ((limit + 1) * 2**20))
    watched.page.locator("input[type=file]").set_input_files(str(big))
    watched.page.get_by_text(f"File must be {limit:.1f}MB or smaller", exact=False).wait_for(
        timeout=WAIT_MS
    )
    assert watched.results("red/circle_0") == before  # the file never became the query
    assert "holiday.png" not in watched.page.locator("[data-testid=query-card]").inner_text()
    assert watched.alerts() == ""
    assert_inert(watched)
    bystander.assert_unaffected()


#: In-page: PUT `size` bytes as a multipart file to Streamlit's upload endpoint `url`, as the
#: frontend does, but without its size check; resolves with the HTTP status.
PUT_UPLOAD_JS = """async ([url, token, size]) => {
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(size)], {type: 'image/png'}), 'sneaky.png');
  const response = await fetch(url, {method: 'PUT', body: form, credentials: 'same-origin',
                                     headers: token ? {'X-Xsrftoken': token} : {}});
  return response.status;
}"""


def test_an_oversize_upload_sent_past_the_browser_check_is_refused_by_the_server(
    watched, server, bystander
):
    limit = upload_limit_mb()
    watched.goto(server)
    page = watched.page
    with page.expect_request(
        lambda r: r.method == "PUT" and "/_stcore/upload_file/" in r.url
    ) as sent:
        page.locator("input[type=file]").set_input_files(
            {
                "name": "small.png",
                "mimeType": "image/png",
                "buffer": png_bytes(draw_product("blue", "square", 1)),
            }
        )
    request = sent.value
    before = watched.results("small.png")
    token = request.all_headers().get("x-xsrftoken")
    # The same request with a small body is accepted: a refusal below is about the size alone.
    assert page.evaluate(PUT_UPLOAD_JS, [request.url, token, 1024]) == 204
    assert page.evaluate(PUT_UPLOAD_JS, [request.url, token, (limit + 1) * 2**20]) == 413
    page.get_by_role("button", name="Random product").click()  # the session still works
    after = browser.wait_for_results(page, MODELS, not_query="small.png", timeout=WAIT_MS / 1000)
    assert after["pixels"]["query"] != before["pixels"]["query"]
    assert watched.alerts() == ""
    assert_inert(watched)
    bystander.assert_unaffected()


@pytest.mark.parametrize(
    ("name", "mime", "expected"),
    [
        ("report.pdf", "application/pdf", "application/pdf files are not allowed"),
        ("photo.png", "image/png", "photo.png: not an image Pillow can read"),
        (
            "<img src=x onerror=alert(1)> [a](javascript:alert(2)) **x**.png",
            "image/png",
            "<img src=x onerror=alert(1)> [a](javascript:alert(2)) **x**.png: not an "
            "image Pillow can read",
        ),
    ],
    ids=["pdf", "pdf-renamed-png", "html-file-name"],
)
def test_a_file_of_the_wrong_type_is_refused(watched, server, bystander, name, mime, expected):
    watched.goto(server, item="red/circle_0")
    before = watched.results("red/circle_0")
    watched.page.locator("input[type=file]").set_input_files(
        {"name": name, "mimeType": mime, "buffer": PDF}
    )
    watched.page.get_by_text(expected, exact=False).first.wait_for(timeout=WAIT_MS)
    if mime == "image/png":  # past the browser's type check: the app's own message, as an error box
        assert expected in watched.alerts()
        assert "(is it a JPEG, PNG, WebP or GIF?)" in watched.alerts()  # what to do about it
    assert watched.results("red/circle_0") == before  # the previous results stay
    assert_inert(watched)
    bystander.assert_unaffected()


# -- URL parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"item": "no/such_product"},
            "There is no product with id “no/such_product” in catalogue “evil”",
        ),
        (
            {"item": "[a](javascript:alert(1)) **x** <img src=x onerror=alert(2)>"},
            "There is no product with id “[a](javascript:alert(1)) **x** <img src=x "
            "onerror=alert(2)>”",
        ),
        (
            {"models": "pixels,<img src=x onerror=alert(1)>"},
            "The link asks for <img src=x onerror=alert(1)>, which has no index in catalogue evil",
        ),
        (
            {"catalog": "<b>nowhere</b>"},
            "There is no catalogue named <b>nowhere</b> in the data folder",
        ),
        ({"k": str(10**9), "item": "red/circle_0"}, "k=1000000000 in the link is out of range"),
        ({"k": "ten"}, "k='ten' in the link is not a whole number"),
        ({"k": "1e9"}, "k='1e9' in the link is not a whole number"),
    ],
    ids=[
        "unknown-item",
        "item-as-markup",
        "unknown-model-as-html",
        "unknown-catalogue-as-html",
        "k-1e9-int",
        "k-ten",
        "k-1e9-text",
    ],
)
def test_a_bad_link_gets_a_clear_message_and_the_page_works(
    watched, server, bystander, params, expected
):
    watched.goto(server, **params)
    page = watched.page
    page.locator("[data-testid^='stAlertContent']").first.wait_for(timeout=WAIT_MS)
    assert expected in watched.alerts()
    assert page.locator(browser.grid_selector("browse") + " a.tile").count() > 0  # still usable
    k = int(parse_qs(urlparse(page.url).query).get("k", ["10"])[0])
    assert 1 <= k <= 17  # the URL the app wrote back holds a k it can serve (18 products)
    if "item" in params and params["item"] == "red/circle_0":
        assert (
            len(watched.results("red/circle_0")["pixels"]["tiles"]) == 17
        )  # k clamped to the others
    assert_inert(watched)
    bystander.assert_unaffected()


# -- HTML in text queries and in product data -----------------------------------------------------
def test_script_tags_in_a_text_query_show_as_text(watched, server, chromium, bystander):
    text = "<script>alert(1)</script> red <img src=x onerror=alert(2)> circle"
    watched.goto(server)
    box = watched.page.get_by_label("Describe a product")
    box.fill(text)
    box.press("Enter")
    shown = watched.results(text)
    assert len(shown["pixels"]["tiles"]) == 10
    card = watched.page.locator("[data-testid=query-card]")
    assert f"“{text}”" in card.inner_text()
    assert_inert(watched)
    link = watched.page.url
    assert parse_qs(urlparse(link).query)["text"] == [text]
    # The link it leaves in the address bar, opened in another session, is just as inert.
    other = Watched.open(chromium)
    try:
        other.page.goto(link)
        assert other.results(text) == shown
        assert f"“{text}”" in other.page.locator("[data-testid=query-card]").inner_text()
        assert_inert(other)
    finally:
        other.context.close()
    bystander.assert_unaffected()


def test_html_in_product_titles_and_labels_shows_as_text(
    watched, server, evil_catalogue, bystander
):
    watched.goto(server, item="red/circle_0", label="style")
    shown = watched.results("red/circle_0")
    page_text = watched.text()
    assert page_text.count(TITLE_HTML) >= 11  # the card and at least every result tile
    titles = evil_catalogue.items["title"]
    for tile_id, _ in shown["pixels"]["tiles"]:
        assert titles[tile_id] in page_text  # each result's title, literally, in its tile
    card = watched.page.locator("[data-testid=query-card]").inner_text()
    assert titles["red/circle_0"] in card and f"style: {LABEL_HTML}" in card
    matches = sum(
        evil_catalogue.items.at[tile_id, "style"] == LABEL_HTML
        for tile_id, _ in shown["pixels"]["tiles"]
    )
    assert f"{matches} of 10 share style = {LABEL_HTML}" in page_text  # the badge
    first = watched.page.locator(f"{browser.grid_selector('pixels')} a.tile").first
    assert first.get_attribute("title").startswith(
        titles[shown["pixels"]["tiles"][0][0]]
    )  # the tooltip
    assert first.locator("img").get_attribute("alt") == titles[shown["pixels"]["tiles"][0][0]]
    assert_inert(watched)
    # The browse strip (the first page, no query) shows titles the same way.
    watched.goto(server)
    browse_text = watched.text()
    for tile_id in watched.page.locator(f"{browser.grid_selector('browse')} a.tile").evaluate_all(
        "links => links.map(a => a.dataset.id)"
    ):
        assert titles[tile_id] in browse_text
    assert_inert(watched)
    bystander.assert_unaffected()


def test_the_server_log_names_no_failure(server):
    """Every bad input above was handled: nothing reached the server log as a traceback."""
    assert "Traceback" not in server.log(), server.log()[-4000:]

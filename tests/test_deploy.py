"""The Streamlit Community Cloud deployment, played on this machine.

As Community Cloud would: an environment made from `deploy/requirements.txt` alone (no torch:
`tests/harness/serving_env.py`), the entrypoint `deploy/streamlit_app.py` started with `streamlit
run` from the repository root, and `EMBEDDINGS_BUNDLE` given in the app's secrets (a secrets file:
Streamlit puts root-level secrets into the environment). The bundle is published here (with the main
environment: torch exports the encoders) as an archive served over HTTP on 127.0.0.1, and the models
cache of the server is empty: text and upload queries run on the bundle's encoders. Chromium then
does an item query, a text query, an upload and a page switch.
"""

from __future__ import annotations

import http.server
import threading
from functools import partial

import pytest

from app_support import browser
from tests.harness.paths import REPO, SHARED_FASHION
from tests.harness.products import make_product_folder
from tests.harness.serving_env import item_text_and_upload

pytestmark = [pytest.mark.browser, pytest.mark.deploy, pytest.mark.slow]

MODELS = ["pixels", "efficientnet-lite0"]
SAMPLE = 300


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from its folder without a log line per request."""

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def published(tmp_path_factory, torch_free_python):
    """(archive, bundle report): a sample of the shared set (else the synthetic shop) with
    pixels, efficientnet-lite0 and its text bridge, published with `--archive`."""
    from embeddings.bridge import train_bridge_for_catalogue
    from embeddings.building.model import build_model_index
    from embeddings.bundle.publish import publish_bundle
    from embeddings.catalogue import create_catalogue
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("deploy")
    if (SHARED_FASHION / "styles.csv").is_file():
        catalogue = create_catalogue(str(SHARED_FASHION), root / "fashion", limit=SAMPLE, seed=3)
    else:
        catalogue = create_catalogue(str(make_product_folder(root / "products")), root / "shop")
    for model_id in MODELS:
        build_model_index(catalogue, load_model(model_id))
    train_bridge_for_catalogue(catalogue, "efficientnet-lite0")
    report = publish_bundle(catalogue, MODELS, root / "hosted" / "demo", archive="tar.gz")
    return report.archive, catalogue


@pytest.fixture(scope="module")
def hosted_url(published):
    """The archive over HTTP on 127.0.0.1 (where a release asset or object storage would be)."""
    archive, _ = published
    handler = partial(QuietHandler, directory=str(archive.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{archive.name}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def deployed(hosted_url, torch_free_python, app_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("cloud")
    secrets = work / "secrets.toml"
    secrets.write_text(f'EMBEDDINGS_BUNDLE = "{hosted_url}"\n')
    app = app_server(
        work / "no-data",
        log_path=work / "streamlit.log",
        python=torch_free_python,
        script=REPO / "deploy" / "streamlit_app.py",
        options=("--secrets.files", str(secrets)),
        env={
            "EMBEDDINGS_BUNDLE_CACHE": str(work / "bundles"),
            "EMBEDDINGS_MODELS": str(work / "empty-models-cache"),
        },
        timeout=180,
    )
    return app, work


def test_the_deployment_serves_a_hosted_bundle_without_torch(page, deployed, published, tmp_path):
    (server, work), (_, catalogue) = deployed, published
    # The first visit downloads, checks and unpacks the bundle, then shows the browse grid.
    page.goto(f"{server.url}/?models={','.join(MODELS)}")
    page.wait_for_selector(
        browser.grid_selector("browse") + " a.tile", state="attached", timeout=180_000
    )
    assert [p.name for p in (work / "bundles").iterdir() if not p.name.startswith(".")]
    # An item query, a text query through the bridge (the bundle's sentence encoder), an
    # upload (the bundle's CNN export embeds it; the product's own picture comes first).
    item_text_and_upload(page, server.url, catalogue, MODELS, tmp_path)
    # A page switch: the Catalogue page shows the bundle, read-only, with no build.
    page.get_by_role("link", name="Catalogue").click()
    page.get_by_text("This app serves a published bundle").wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Build", exact=True).count() == 0
    # Nothing was exported on the server: every encoder came in the bundle.
    assert not (work / "empty-models-cache").exists()
    log = server.log()
    assert "Traceback" not in log and "torch" not in log, log[-3000:]

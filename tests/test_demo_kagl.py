"""The demo build sets up the fashion leaderboard protocol by itself: it picks its title queries
(a share of the catalogue's distinct titles), keeps them out of the bridges through the
catalogue's setting, and measures, so Compare shows figures on a first run (with a note that a
subset's figures are not the full set's). CLI (`build --kagl`) and the app's demo build."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from embeddings.bridge import read_bridge_manifest
from embeddings.building.query_titles import TITLE_SHARE, title_query_count
from embeddings.catalogue import Catalogue
from embeddings.quality import kagl
from tests.harness.apptest import APP, TIMEOUT, messages
from tests.harness.cli import cli


def test_the_share_leaves_the_bridges_most_titles():
    assert TITLE_SHARE == 0.10
    assert title_query_count(2_900) == 290  # the 3,000-product demo
    assert title_query_count(31_131) == 2_000  # the full set: the protocol's 2,000
    assert title_query_count(5) == 1


def test_build_kagl_picks_keeps_out_and_measures(product_folder, tmp_path):
    out = tmp_path / "demo"
    done = cli(
        "build", "--source", str(product_folder), "--out", str(out), "--models", "pixels",
        "--limit", "40", "--kagl",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    catalogue = Catalogue.open(out)
    distinct = catalogue.items["title"].nunique()
    count = title_query_count(distinct)
    setting = json.loads((out / "catalog.json").read_text())["bridge_settings"]
    assert len(setting["excluded_titles"]) == count
    assert setting["excluded_titles_from"] == (
        f"picked by the build: {count} of {distinct} distinct titles (10%, seed 0)"
    )
    assert setting["excluded_titles"] == kagl.pick_title_queries(catalogue, count, 0)
    bridge = read_bridge_manifest(catalogue.bridge_dir("pixels"))
    assert bridge["excluded_titles"]["count"] == count
    assert f"measured pixels on {count} title queries" in done.stdout
    saved = kagl.load_leaderboard(catalogue)
    assert saved is not None and saved.manifest["title_queries"] == count
    assert saved.figures["pixels"]["title"] is not None  # unseen titles: not refused
    # A later build keeps the same titles and does not pick again.
    again = cli("build", "--catalog", str(out), "--models", "colour", "--kagl")
    assert again.returncode == 0, again.stderr
    assert "catalogue setting changed" not in again.stdout
    assert read_bridge_manifest(catalogue.bridge_dir("colour"))["excluded_titles"]["count"] == count
    assert "measured colour, pixels" in again.stdout


def test_the_app_demo_build_shows_kagl_figures_on_compare(product_folder, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("EMBEDDINGS_DATA", str(data))
    monkeypatch.setenv("EMBEDDINGS_DEMO_SOURCE", str(product_folder))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/catalogue.py").run()
    at.text_input(key="demo_source").input(str(product_folder))
    at.multiselect(key="demo_models").set_value(["pixels"])
    at.text_input(key="demo_name").input("demo")
    assert at.checkbox(key="demo_kagl").value is True
    at.button(key="demo_build").click().run()
    assert not at.exception, at.exception
    assert kagl.load_leaderboard(Catalogue.open(data / "demo")) is not None
    compare = AppTest.from_file(APP, default_timeout=TIMEOUT)
    compare.query_params["catalog"] = "demo"
    compare.query_params["models"] = "pixels"
    compare.run()
    compare.switch_page("app_pages/compare.py").run()
    assert not compare.exception, compare.exception
    charts = [str(c.proto.spec) for c in compare.get("vega_lite_chart")]
    assert any("beside the public anchors" in c for c in charts)
    shown = messages(compare.info)
    assert "pick-titles" not in shown and "--title-queries" not in shown  # no CLI recipe
    assert "not on the full set" in shown

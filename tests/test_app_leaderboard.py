"""The Compare page's section on the Marqo fashion leaderboard protocol (AppTest, no browser)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from embeddings.bridge import train_bridge_for_catalogue
from embeddings.bridge.exclusion import ExcludedTitles
from embeddings.quality import kagl as leaderboard
from tests.harness.apptest import APP, TIMEOUT, messages

MODEL = "efficientnet-lite0"


def test_compare_page_measures_the_protocol_and_reads_it_back(
    built_catalogue, tmp_path, monkeypatch, copy_catalogue
):
    data = tmp_path / "data"
    catalogue = copy_catalogue(built_catalogue, data / "shop")
    titles = leaderboard.pick_title_queries(catalogue, 6, seed=0)
    train_bridge_for_catalogue(
        catalogue, MODEL, holdout_fraction=0.1, exclude=ExcludedTitles.of(titles)
    )
    monkeypatch.setenv("EMBEDDINGS_DATA", str(data))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["models"] = MODEL
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    assert "Marqo fashion leaderboard protocol" in messages(at.subheader)
    assert "Not measured yet" in messages(at.info)  # the titles are known: a button measures
    at.button(key="kagl_run").click().run()
    assert not at.exception, at.exception
    saved = leaderboard.load_leaderboard(catalogue)
    assert saved is not None and saved.manifest["title_queries"] == 6
    assert saved.figures[MODEL]["title"] is not None
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)
    again.query_params["models"] = MODEL
    again.switch_page("app_pages/compare.py").run()
    assert not again.exception
    assert "kagl_run" not in [button.key for button in again.button]
    charts = [str(c.proto.spec) for c in again.get("vega_lite_chart")]
    assert any("beside the public anchors" in c for c in charts), [c[:200] for c in charts]
    assert "6 title queries" in messages(again.caption)

"""A catalogue keeps its own bridge settings: the titles no bridge trains on and the recipe are
recorded in catalog.json and reused by every later build, `bridge` and app build, until the user
replaces them (and the build says what changed)."""

from __future__ import annotations

import json

import pytest

from embeddings.bridge import read_bridge_manifest, read_excluded_titles, read_holdout_ids
from embeddings.bridge.exclusion import title_key
from embeddings.bridge.settings import SETTINGS_KEY
from embeddings.catalogue import Catalogue
from embeddings.cli import main

KEPT_OUT = ["Blue circle product 1", "Yellow square product 2"]


def excluded(catalogue_dir, model_id) -> dict | None:
    manifest = read_bridge_manifest(Catalogue.open(catalogue_dir).bridge_dir(model_id))
    return manifest["excluded_titles"]


def settings(catalogue_dir) -> dict:
    return json.loads((catalogue_dir / "catalog.json").read_text())[SETTINGS_KEY]


@pytest.fixture
def excluding(product_folder, tmp_path, capsys):
    """A catalogue built with `pixels` and two titles kept out of its bridges."""
    titles = tmp_path / "kagl-titles.txt"
    titles.write_text("\n".join(KEPT_OUT) + "\n", encoding="utf-8")
    out = tmp_path / "cat"
    args = ["build", "--source", str(product_folder), "--out", str(out), "--models", "pixels"]
    assert main([*args, "--bridge-exclude-titles", str(titles)]) == 0
    printed = capsys.readouterr().out
    assert "titles kept out of bridge training: none -> 2 titles from kagl-titles.txt" in printed
    return out


def test_the_exclusion_is_recorded_in_the_catalogue(excluding):
    recorded = settings(excluding)
    assert recorded["excluded_titles"] == KEPT_OUT and recorded["recipe"] == "memory"
    assert recorded["excluded_titles_from"] == "kagl-titles.txt"  # a name, never a path
    assert excluded(excluding, "pixels")["count"] == 2


def test_a_model_added_later_keeps_the_same_titles_out(excluding, capsys):
    assert main(["build", "--catalog", str(excluding), "--models", "colour"]) == 0
    assert "catalogue setting changed" not in capsys.readouterr().out
    record = excluded(excluding, "colour")
    assert record is not None and record["count"] == 2 and record["products"] == 2
    colour_dir = Catalogue.open(excluding).bridge_dir("colour")
    assert {"blue/circle_1", "yellow/square_2"} <= set(read_holdout_ids(colour_dir))
    assert sorted(read_excluded_titles(colour_dir)) == KEPT_OUT
    assert settings(excluding)["excluded_titles"] == KEPT_OUT  # still recorded


def test_a_new_file_replaces_the_setting_and_every_bridge_follows(excluding, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("Red circle product 0\n", encoding="utf-8")
    args = ["build", "--catalog", str(excluding), "--models", "colour"]
    assert main([*args, "--bridge-exclude-titles", str(other)]) == 0
    printed = capsys.readouterr().out
    assert "titles kept out of bridge training: 2 titles -> 1 titles from other.txt" in printed
    assert "retrained to follow them: pixels" in printed
    assert settings(excluding)["excluded_titles"] == ["Red circle product 0"]
    assert excluded(excluding, "colour")["count"] == 1
    assert excluded(excluding, "pixels")["count"] == 1  # not in this build, retrained anyway
    # ... and clearing it is a change too.
    assert main([*args, "--no-bridge-exclude-titles"]) == 0
    assert "1 titles -> none" in capsys.readouterr().out
    assert settings(excluding)["excluded_titles"] is None
    assert excluded(excluding, "colour") is None and excluded(excluding, "pixels") is None


def test_the_recipe_is_a_setting_too(excluding, capsys):
    args = ["build", "--catalog", str(excluding)]
    assert main([*args, "--bridge-recipe", "linear"]) == 0
    assert "bridge recipe: memory -> linear" in capsys.readouterr().out
    assert main([*args, "--models", "colour"]) == 0  # no recipe given: the catalogue's
    for model_id in ("pixels", "colour"):
        manifest = read_bridge_manifest(Catalogue.open(excluding).bridge_dir(model_id))
        assert manifest["recipe"] == "linear" and manifest["excluded_titles"]["count"] == 2


def test_the_bridge_command_uses_and_records_the_setting(excluding, tmp_path, capsys):
    assert main(["bridge", "--catalog", str(excluding), "--force"]) == 0
    assert excluded(excluding, "pixels")["count"] == 2  # the catalogue's titles, not none
    other = tmp_path / "one.txt"
    other.write_text("Green square product 3\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["bridge", "--catalog", str(excluding), "--exclude-titles", str(other)]) == 0
    assert "2 titles -> 1 titles from one.txt" in capsys.readouterr().out
    assert settings(excluding)["excluded_titles"] == ["Green square product 3"]
    assert main(["build", "--catalog", str(excluding), "--models", "colour"]) == 0
    assert excluded(excluding, "colour")["count"] == 1


def test_a_catalogue_from_before_the_settings_adopts_its_bridges_exclusion(excluding):
    info_path = excluding / "catalog.json"
    info = json.loads(info_path.read_text())
    del info[SETTINGS_KEY]  # as a catalogue built before bridge settings existed
    info_path.write_text(json.dumps(info))
    assert main(["build", "--catalog", str(excluding), "--models", "colour"]) == 0
    assert excluded(excluding, "colour")["count"] == 2
    recorded = settings(excluding)
    assert recorded["excluded_titles"] == KEPT_OUT
    assert recorded["excluded_titles_from"] == "the bridges built before"


def test_kagl_default_title_queries_are_the_catalogue_setting(excluding):
    from embeddings.quality.kagl import default_title_queries

    assert default_title_queries(Catalogue.open(excluding), ["pixels"]) == KEPT_OUT
    keys = {title_key(t) for t in KEPT_OUT}
    assert len(keys) == 2

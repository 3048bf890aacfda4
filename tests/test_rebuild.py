"""Rebuilding a catalogue with its own settings, and the CLI's answers when part of a query fails.

Each case here was a failure once, reproduced before it was mended.
"""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from embeddings.building.catalogue import BuildRequest, build_catalogue
from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.errors import IndexMismatchError
from embeddings.index.opening import open_index, open_snapshot
from embeddings.search.searcher import make_searcher
from tests.harness.products import draw_product, make_product_folder


def grow(source, count: int, start: int = 100) -> None:
    for n in range(start, start + count):
        draw_product("yellow", "circle", n).save(source / "yellow" / f"circle_{n}.png")


def test_rebuild_hint_names_the_catalogue_and_keeps_its_own_settings(
    product_folder, tmp_path, capsys
):
    """A catalogue built with --limit/--seed: the hinted rebuild keeps them (it used to rescan
    everything and replace the catalogue)."""
    source = tmp_path / "products"
    shutil.copytree(product_folder, source)
    out = tmp_path / "cat"
    assert (
        main(
            [
                "build",
                "--source",
                str(source),
                "--out",
                str(out),
                "--models",
                "pixels",
                "--limit",
                "20",
                "--seed",
                "3",
                "--adapter",
                "folder",
                "--no-bridge",
            ]
        )
        == 0
    )
    before = Catalogue.open(out)
    assert len(before) == 20
    grow(source, 5)  # the source changes; the catalogue is now out of date ...
    (out / "catalog.json").write_text(
        json.dumps({**before.info, "fingerprint": "0000000000000000"})
    )
    stale = Catalogue.open(out)
    with pytest.raises(IndexMismatchError) as refused:
        open_index(stale, "pixels")
    hint = str(refused.value)
    assert f"rebuild it: python -m embeddings build --catalog {out} --models pixels" in hint
    # ... and following the hint rebuilds it with its own limit, seed and adapter.
    capsys.readouterr()
    assert main(hint.split("rebuild it: python -m embeddings ")[1].split()) == 0
    rebuilt = Catalogue.open(out)
    assert len(rebuilt) == 20 and rebuilt.info["limit"] == 20 and rebuilt.info["seed"] == 3
    assert rebuilt.info["adapter"] == "folder"
    assert len(open_index(rebuilt, "pixels")) == 20


def test_an_unknown_model_is_named_before_any_work(built_catalogue, capsys):
    assert (
        main(
            [
                "search",
                "--catalog",
                str(built_catalogue.directory),
                "--model",
                "pixels,bogus",
                "--item",
                "red/circle_0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown model 'bogus'" in err and "build" not in err
    assert main(["build", "--catalog", str(built_catalogue.directory), "--models", "bogus"]) == 2
    assert "unknown model 'bogus'" in capsys.readouterr().err


def test_search_spells_models_like_build(built_catalogue, capsys):
    for option in ("--model", "--models"):
        assert (
            main(
                [
                    "search",
                    "--catalog",
                    str(built_catalogue.directory),
                    option,
                    "pixels",
                    "--item",
                    "red/circle_0",
                    "-k",
                    "3",
                    "--json",
                ]
            )
            == 0
        )
        assert len(json.loads(capsys.readouterr().out)) == 3


def test_a_multi_model_search_answers_with_the_models_that_can(
    built_catalogue, capsys, copy_catalogue
):
    catalogue_dir = copy_catalogue(built_catalogue).directory
    shutil.rmtree(catalogue_dir / "models" / "efficientnet-lite0")
    code = main(
        [
            "search",
            "--catalog",
            str(catalogue_dir),
            "--model",
            "pixels,efficientnet-lite0",
            "--item",
            "red/circle_0",
            "-k",
            "4",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert len(json.loads(captured.out)["pixels"]) == 4
    assert "[efficientnet-lite0] no answer: no index for model 'efficientnet-lite0'" in captured.err
    assert f"--catalog {catalogue_dir} --models efficientnet-lite0" in captured.err


def test_a_filter_that_matches_nothing_is_explained(built_catalogue, capsys):
    base = [
        "search",
        "--catalog",
        str(built_catalogue.directory),
        "--model",
        "pixels",
        "--item",
        "red/circle_0",
    ]
    assert main([*base, "--filter", "shape=hexagon"]) == 2
    err = capsys.readouterr().err
    assert (
        "no product" in err and "shape=hexagon" in err and "circle" in err
    )  # names the values there are
    assert main([*base, "--filter", "colour=red"]) == 2
    assert "no label field 'colour'" in capsys.readouterr().err
    assert main([*base, "--filter", "shape=circle", "--filter", "folder=blue", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(built_catalogue.items.at[h["id"], "shape"] == "circle" for h in hits)


def test_image_option_on_a_folder_says_it_is_a_folder(built_catalogue, tmp_path, capsys):
    assert (
        main(
            [
                "search",
                "--catalog",
                str(built_catalogue.directory),
                "--model",
                "pixels",
                "--image",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "is a folder" in capsys.readouterr().err


def test_other_models_answer_while_new_images_are_indexed(product_folder, tmp_path):
    """Reported: while new images were indexed, searches on the other models failed with "built
    for another version of the catalogue". Now every built model is updated in the same build and
    committed with the catalogue, so a reader never pairs a new catalogue with an old index."""
    source = tmp_path / "products"
    shutil.copytree(product_folder, source)
    out = tmp_path / "cat"
    assert build_catalogue(
        BuildRequest(
            out=out, source=str(source), models=["pixels", "efficientnet-lite0"], bridges=False
        )
    ).committed
    grow(source, 12)
    failures, answers = [], []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                catalogue, indexes = open_snapshot(out, ["efficientnet-lite0"])
                hits = make_searcher(catalogue, indexes=indexes).search_item(
                    "red/circle_0", ["efficientnet-lite0"], 5
                )
                answers.append((len(catalogue), len(hits["efficientnet-lite0"])))
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(f"{type(exc).__name__}: {exc}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        result = build_catalogue(BuildRequest(out=out, models=["pixels"], bridges=False))
    finally:
        stop.set()
        reader.join()
    assert result.updated_too == ["efficientnet-lite0"]
    assert {o.model_id: o.status for o in result.outcomes} == {
        "pixels": "built",
        "efficientnet-lite0": "built",
    }
    assert result.outcomes[1].report.embedded == 12  # only the new products
    assert failures == []
    assert {count for count, _ in answers} <= {48, 60} and answers[-1] == (60, 5)


def test_nothing_is_saved_when_every_model_fails(tmp_path, capsys):
    source = make_product_folder(tmp_path / "products", variants=1)
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    out = tmp_path / "cat"
    code = main(
        [
            "build",
            "--source",
            str(source),
            "--out",
            str(out),
            "--models",
            "efficientnet-lite0",
            "--weights",
            f"efficientnet-lite0={notes}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "could not read" in err and "as safe weights" in err
    assert not (out / "catalog.json").exists()  # no catalogue without an index

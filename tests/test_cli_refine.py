"""`python -m embeddings search` refinements: --more-like / --less-like, words mixed
into --item or --image with --text-weight, fused ids in --models (and in `evaluate`)."""

from __future__ import annotations

import json

import pytest

from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.images import open_rgb
from embeddings.search.query import Query
from embeddings.search.searcher import make_searcher
from tests.harness.products import draw_product

FUSED = "efficientnet-lite0+pixels"


def run_json(capsys, *args: str):
    code = main(["search", *args, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def ids(rows) -> list[str]:
    return [row["id"] for row in rows]


def test_more_and_less_like_on_item_text_and_image_queries(bridged_catalogue, tmp_path, capsys):
    directory = str(bridged_catalogue.directory)
    searcher = make_searcher(bridged_catalogue)
    steering = ("--more-like", "blue/circle_0", "--more-like", "blue/circle_1")
    steering += ("--less-like", "red/square_0")
    liked, disliked = ("blue/circle_0", "blue/circle_1"), ("red/square_0",)
    picture = tmp_path / "mine.png"
    draw_product("yellow", "triangle", 8).save(picture)
    cases = {
        ("--item", "red/circle_0"): Query(item="red/circle_0", liked=liked, disliked=disliked),
        ("--text", "Green square product"): Query(
            text="Green square product", liked=liked, disliked=disliked
        ),
        ("--image", str(picture)): Query(
            image=open_rgb(str(picture)), liked=liked, disliked=disliked
        ),
    }
    for options, query in cases.items():
        rows = run_json(capsys, "--catalog", directory, "--models", "pixels", *options, *steering)
        want = searcher.search(query, ["pixels"], 10)["pixels"]
        assert ids(rows) == [h.id for h in want], options
        assert not set(ids(rows)) & {*liked, *disliked}


def test_words_mixed_into_an_item_or_an_image(bridged_catalogue, tmp_path, capsys):
    directory = str(bridged_catalogue.directory)
    searcher = make_searcher(bridged_catalogue)
    rows = run_json(
        capsys, "--catalog", directory, "--models", "efficientnet-lite0",
        "--item", "red/circle_0", "--text", "blue", "--text-weight", "0.7", "-k", "6",
    )  # fmt: skip
    want = searcher.search(
        Query(item="red/circle_0", text="blue", text_weight=0.7), ["efficientnet-lite0"], 6
    )["efficientnet-lite0"]
    assert ids(rows) == [h.id for h in want]
    assert sum(i.startswith("blue/") for i in ids(rows)) >= 3
    picture = tmp_path / "mine.png"
    draw_product("red", "square", 8).save(picture)
    rows = run_json(
        capsys, "--catalog", directory, "--models", "pixels", "--image", str(picture),
        "--text", "Green circle product",
    )  # fmt: skip
    want = searcher.search(
        Query(image=open_rgb(str(picture)), text="Green circle product"), ["pixels"], 10
    )["pixels"]  # the default weight
    assert ids(rows) == [h.id for h in want]


def test_fused_ids_in_search_and_evaluate(bridged_catalogue, capsys, copy_catalogue):
    directory = str(bridged_catalogue.directory)
    both = run_json(
        capsys, "--catalog", directory, "--models", f"pixels,{FUSED}", "--item", "red/circle_0"
    )
    want = make_searcher(bridged_catalogue).search_item("red/circle_0", [FUSED], 10)[FUSED]
    assert ids(both[FUSED]) == [h.id for h in want] and len(both["pixels"]) == 10
    assert main(["search", "--catalog", directory, "--models", FUSED, "--text", "blue"]) == 0
    assert FUSED in capsys.readouterr().out
    copy = copy_catalogue(bridged_catalogue).directory
    code = main(["evaluate", "--catalog", str(copy), "--models", FUSED, "--queries", "12"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"`{FUSED}`" in out.out and "fusion (zscore) of efficientnet-lite0, pixels" in out.out
    assert Catalogue.open(copy).directory.joinpath("evaluation", "results.json").is_file()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--item", "red/circle_0", "--image", "x.png"], "--item and --image cannot be combined"),
        (["--text", "blue", "--text-weight", "0.5"], "--text-weight sets the share of --text"),
        (["--item", "red/circle_0", "--text-weight", "0.5"], "give --text with one of them"),
        (["--item", "red/circle_0", "--text", "b", "--text-weight", "2"], "from 0 to 1"),
        (["--item", "red/circle_0", "--more-like", "nope"], "--more-like nope: no product"),
        (["--item", "red/circle_0", "--less-like", "gone"], "--less-like gone: no product"),
        (["--item", "red/circle_0", "--less-like", "red/circle_0"], "is the query and also"),
        (["--item", "red/circle_0", "--more-like", "red/circle_0"], "changes nothing"),
        (
            [
                "--item",
                "red/circle_0",
                "--more-like",
                "red/square_0",
                "--less-like",
                "red/square_0",
            ],
            "both liked and disliked",
        ),
        ([], "say what to search for"),
        (["--models", "pixels+nope", "--item", "red/circle_0"], "unknown model 'nope' in fused"),
        (["--models", "clip+pixels", "--item", "red/circle_0"], "clip"),
    ],
)
def test_bad_refinements_exit_2_with_a_message(bridged_catalogue, capsys, args, expected):
    base = ["search", "--catalog", str(bridged_catalogue.directory)]
    if "--models" not in args:
        base += ["--models", "pixels"]
    assert main([*base, *args]) == 2
    assert expected in capsys.readouterr().err

"""`search --queries FILE`: one answer per line, in order, equal to one-by-one text queries."""

from __future__ import annotations

import json

import pytest

from embeddings.bridge import train_bridge_for_catalogue
from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.errors import QueryError
from embeddings.search.searcher import make_searcher

MODEL = "efficientnet-lite0"
QUERIES = [
    "Yellow triangle product 1",
    "red circle",
    "Green square product 2",
    "a blue thing",
    "red circle",
]


@pytest.fixture(scope="module")
def bridged(built_catalogue, copy_catalogue) -> Catalogue:
    catalogue = copy_catalogue(built_catalogue)
    train_bridge_for_catalogue(catalogue, MODEL, holdout_fraction=0.2)
    return catalogue


def test_batch_queries_equal_one_by_one_queries(bridged, tmp_path, capsys):
    file = tmp_path / "queries.txt"
    file.write_text("\n".join(QUERIES) + "\n\n", encoding="utf-8")  # trailing blank lines: fine
    where = ["search", "--catalog", str(bridged.directory), "--model", MODEL, "-k", "7", "--json"]
    assert main([*where, "--queries", str(file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(QUERIES)
    for text, line in zip(QUERIES, lines, strict=True):
        assert main([*where, "--text", text]) == 0
        batched, single = json.loads(line), json.loads(capsys.readouterr().out)
        # the same products in the same order; scores within float rounding (a batch of texts
        # is padded to its longest, and ONNX Runtime sums in another order than for one text)
        assert [h["id"] for h in batched] == [h["id"] for h in single], text
        assert [h["score"] for h in batched] == pytest.approx(
            [h["score"] for h in single], abs=1e-5
        )
    assert len(json.loads(lines[0])) == 7


def test_search_texts_batches_and_filters_like_search_text(bridged):
    searcher = make_searcher(bridged)
    filters = {"shape": "circle"}
    batched = searcher.search_texts(QUERIES, [MODEL], 5, filters=filters, batch_size=2)
    for text, answer in zip(QUERIES, batched, strict=True):
        single = searcher.search_text(text, [MODEL], 5, filters=filters)
        assert [h.id for h in answer[MODEL]] == [h.id for h in single[MODEL]]
        assert [h.score for h in answer[MODEL]] == pytest.approx(
            [h.score for h in single[MODEL]], abs=1e-5
        )
        assert all(bridged.items.at[h.id, "shape"] == "circle" for h in answer[MODEL])
    with pytest.raises(QueryError, match="empty"):
        searcher.search_texts(["fine", " "], [MODEL], 5)


def test_bad_query_files_name_the_line(bridged, tmp_path, capsys):
    where = ["search", "--catalog", str(bridged.directory), "--model", MODEL, "--json"]
    gap = tmp_path / "gap.txt"
    gap.write_text("red circle\n\nblue square\n", encoding="utf-8")
    assert main([*where, "--queries", str(gap)]) == 2
    assert "line 2 is empty" in capsys.readouterr().err
    long = tmp_path / "long.txt"
    long.write_text("red\n" + "x" * 1001 + "\n", encoding="utf-8")
    assert main([*where, "--queries", str(long)]) == 2
    assert "line 2 is 1,001 characters" in capsys.readouterr().err
    assert main([*where, "--queries", str(tmp_path / "none.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_batch_queries_print_for_people_without_json(bridged, tmp_path, capsys):
    file = tmp_path / "q.txt"
    file.write_text("red circle\nblue square\n", encoding="utf-8")
    args = ["search", "--catalog", str(bridged.directory), "--model", MODEL, "-k", "2"]
    assert main([*args, "--queries", str(file)]) == 0
    out = capsys.readouterr().out
    assert out.index("# red circle") < out.index("# blue square")
    assert out.count(f"== {MODEL}") == 2


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly(bridged, tmp_path):
    """`search ... | head -1`: the closed pipe is not reported as a file error."""
    import subprocess
    import sys

    file = tmp_path / "many.txt"
    file.write_text("\n".join(QUERIES * 60) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "embeddings", "search", "--catalog", str(bridged.directory)]
    command += ["--model", MODEL, "-k", "50", "--queries", str(file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"# ")
    process.stdout.close()  # as `head -1` does
    assert process.wait(timeout=300) == 0
    assert b"error" not in process.stderr.read()

"""Files of one entry per line (`search --queries`, title files) split at "\\n" and "\\r\\n" only:
a query or a title holding another line break stays one entry, so no answer is shifted."""

from __future__ import annotations

import pytest

from embeddings.bridge.exclusion import read_title_file, write_title_file
from embeddings.cli.search import read_query_lines
from embeddings.errors import EmbeddingsError
from embeddings.lines import OTHER_LINE_BREAKS, split_lines

#: Three lines, each holding a character `str.splitlines` breaks at.
ODD_LINES = [
    "red dress\u2028with dots",
    "navy\x85shirt",
    "page\fbreak and a lone\rcarriage return",
]


def test_a_query_file_gives_one_query_per_line(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_bytes(("\n".join(ODD_LINES) + "\n").encode())
    queries = read_query_lines(str(path))
    assert queries == ODD_LINES  # 3 lines, 3 queries, in order


def test_a_query_file_with_crlf_and_a_bom(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_bytes("\ufeffred shoes\r\nblue\u2029bag\r\n\r\n".encode())
    assert read_query_lines(str(path)) == ["red shoes", "blue\u2029bag"]


def test_five_lines_give_five_queries(tmp_path):
    lines = [f"query {i}\u2028part\x1cB\x1d\x1e\x0b" for i in range(5)]
    path = tmp_path / "queries.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert len(read_query_lines(str(path))) == 5


def test_a_title_file_splits_the_same_way(tmp_path):
    path = tmp_path / "titles.txt"
    path.write_bytes(("\ufeff" + "\r\n".join(ODD_LINES) + "\r\n\n").encode())
    assert read_title_file(path) == [line.strip() for line in ODD_LINES]


@pytest.mark.parametrize("char", sorted(OTHER_LINE_BREAKS | {"\n"}))
def test_writing_a_title_with_any_line_break_is_refused(tmp_path, char):
    path = tmp_path / "titles.txt"
    with pytest.raises(EmbeddingsError, match="line break"):
        write_title_file(path, ["fine title", f"broken{char}title"])
    assert not path.exists()


def test_written_titles_read_back_unchanged(tmp_path):
    titles = [
        "Nike Men Navy Blue Shorts",
        "Puma Women Red \u00e9t\u00e9 Top",
        "\u0634\u0644\u0648\u0627\u0631",
    ]
    assert read_title_file(write_title_file(tmp_path / "t.txt", titles)) == titles


def test_split_lines():
    assert split_lines("") == [] and split_lines("\ufeff") == []
    assert split_lines("a\r\nb\nc") == ["a", "b", "c"]
    assert split_lines("a\n\nb\n") == ["a", "", "b"]
    assert split_lines("a\rb\u2028c\n") == ["a\rb\u2028c"]

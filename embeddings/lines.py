"""Text files of one entry per line (`search --queries`, title files): how they are split.

A line ends at "\n" (or "\r\n") and nowhere else. `str.splitlines` also breaks at a lone "\r",
form and line feeds' cousins (\v, \f, \x1c-\x1e, NEL \x85) and the Unicode line and paragraph
separators (U+2028, U+2029): a query holding one would become several, and every later answer
would be shifted against its line. A byte-order mark at the start (as Windows editors write) is
not part of the first entry.
"""

from __future__ import annotations

import os

#: What `str.splitlines` breaks at besides "\n" and "\r\n": kept inside an entry when reading,
#: refused when writing an entry (another program would split it).
OTHER_LINE_BREAKS = frozenset("\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
BOM = "\ufeff"


def split_lines(text: str) -> list[str]:
    """The lines of `text`, split at "\n" and "\r\n" only; a leading BOM dropped; no empty
    last line for a final newline."""
    text = text.removeprefix(BOM)
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def line_break_in(entry: str) -> str | None:
    """The first line break `entry` holds ("\n" or one of `OTHER_LINE_BREAKS`), or None."""
    for char in entry:
        if char == "\n" or char in OTHER_LINE_BREAKS:
            return char
    return None


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 file (`split_lines`). Read with newline translation off: text mode
    would turn a lone "\r" into a line end. OS and decoding errors are the caller's."""
    with open(path, encoding="utf-8", newline="") as file:
        return split_lines(file.read())

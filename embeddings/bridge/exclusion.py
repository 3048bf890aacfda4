"""Titles kept out of a bridge's training: how a benchmark's query titles stay unseen.

`build --bridge-exclude-titles FILE` (and `bridge --exclude-titles FILE`) name titles, one per
line. Every product carrying one of them is kept out of training altogether (its title, its label
sentences, its image as a positive), whatever side of the held-out split its title falls on.
Titles are matched on a normal form (`title_key`: case folded, runs of white space made one), so
"Nike Men Navy Blue Shorts" also keeps out "nike men navy blue  shorts": a near-copy of a query
title in training would leak it.

The bridge's manifest records the exclusion (`ExcludedTitles.record`: the count of distinct
excluded titles, a SHA-256 of their sorted normal forms, and how many products carried one), and
the excluded products join the ids the bridge never trained on (`holdout_ids.txt`), which is what
evaluation checks its title queries against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from embeddings.errors import EmbeddingsError
from embeddings.lines import line_break_in, read_lines


def title_key(title: str) -> str:
    """The form titles are compared in: case folded, white space collapsed, trimmed."""
    return " ".join(str(title).split()).casefold()


@dataclass(frozen=True)
class ExcludedTitles:
    """A set of titles (by `title_key`) that a bridge must not train on."""

    keys: frozenset[str]
    titles: tuple[str, ...] = ()  # as given (first spelling of each key), for the artefact

    @classmethod
    def of(cls, titles: Iterable[str]) -> ExcludedTitles:
        first: dict[str, str] = {}
        for title in titles:
            key = title_key(title)
            if key and key not in first:
                first[key] = str(title).strip()
        return cls(frozenset(first), tuple(first.values()))

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for key in sorted(self.keys):
            digest.update(key.encode() + b"\n")
        return digest.hexdigest()

    def __contains__(self, title: str) -> bool:
        return title_key(title) in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def record(self, products: int) -> dict:
        """What the bridge manifest keeps of it."""
        return {"count": len(self.keys), "sha256": self.sha256, "products": int(products)}


def read_title_file(path: str | Path, *, option: str = "--bridge-exclude-titles") -> list[str]:
    """Titles from a UTF-8 text file, one per line (blank lines ignored): lines end at "\n" or
    "\r\n" only, and a leading BOM is dropped (`embeddings.lines`).

    Raises `EmbeddingsError` naming the option and the file when it cannot be read.
    """
    path = Path(path)
    try:
        lines = read_lines(path)
    except FileNotFoundError:
        raise EmbeddingsError(f"{option} {path}: no such file (one title per line)") from None
    except IsADirectoryError:
        raise EmbeddingsError(f"{option} {path}: a folder, not a file of titles") from None
    except UnicodeDecodeError as exc:
        raise EmbeddingsError(f"{option} {path}: not UTF-8 text ({exc})") from None
    titles = [line.strip() for line in lines if line.strip()]
    if not titles:
        raise EmbeddingsError(f"{option} {path}: the file names no title (one title per line)")
    return titles


def write_title_file(path: str | Path, titles: Iterable[str]) -> Path:
    """Write titles one per line (UTF-8); refuses a title holding any line break, including
    those only some programs split at (U+2028, NEL, form feed, a lone CR...)."""
    titles = list(titles)
    for title in titles:
        char = line_break_in(title)
        if char is not None:
            raise EmbeddingsError(
                f"a title with a line break ({ascii(char)}) cannot be written one per line: "
                f"{title!r}"
            )
    path = Path(path)
    path.write_text("".join(f"{t}\n" for t in titles), encoding="utf-8")
    return path

"""Build, search, measure and share catalogues of product images: `python -m embeddings COMMAND`.

Commands: build, search, evaluate, bridge, pick-titles, map, duplicates, export, publish,
models, catalogues.

The top of the core: it parses options, calls the core and prints; nothing in the core imports
it. Every command prints for people by default; `search --json` and `evaluate --json` print
data. Exit codes: 0 success, 1 some models failed (the others answered or were built), 2 bad
input. One module per group of commands, each with its `add_parsers` and `COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys

from embeddings.cli import build, derived, quality, search, share
from embeddings.errors import EmbeddingsError, describe_os_error

GROUPS = (build, search, quality, derived, share)
#: Commands that build in resumable chunks (their OS errors say the finished chunks are kept).
BUILDING = {"build"}
COMMANDS = {name: command for group in GROUPS for name, command in group.COMMANDS.items()}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m embeddings", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EmbeddingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except OSError as exc:  # disk full, read-only folder, permissions: name the file and the cause
        building = args.command in BUILDING
        print(f"error: {describe_os_error(exc, building=building)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished chunks are kept; run the same command to continue",
            file=sys.stderr,
        )
        return 130

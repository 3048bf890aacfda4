"""The settings page lists exactly the environment variables the code reads.

The code is scanned with `ast`: every read of the environment (`os.environ[...]`,
`os.environ.get(...)`, `os.environ.setdefault(...)`, `os.getenv(...)`, `NAME in os.environ`)
names its variable by a string literal, or by a name or attribute bound to one somewhere in the
scanned code (`BUNDLE_ENV = "EMBEDDINGS_BUNDLE"`, `weights_env="EMBEDDINGS_CLIP_MODEL"`). A read
whose variable cannot be resolved that way fails the test, so no read slips through unlisted.
The `run` script's shell defaults (`${NAME:-...}`) count too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "settings.md"
SECTION = "## Environment variables the code reads"
#: What the product is made of; tests/ and bench/ read their own variables, listed apart.
CODE_ROOTS = ("embeddings", "app_support", "app_pages", "app.py", "deploy")
SHELL_SCRIPTS = ("run",)
VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")
ROW = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|")
SHELL_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-=]")


def python_files(roots=CODE_ROOTS, base: Path = REPO) -> list[Path]:
    files = []
    for root in roots:
        path = base / root
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(path.rglob("*.py")))
    return files


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ` (after `from os import environ`)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def environment_keys(tree: ast.AST) -> list[ast.expr]:
    """The expressions naming a variable in every read of the environment in `tree`."""
    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id
            reads_environ = isinstance(func, ast.Attribute) and _is_environ(func.value)
            if node.args and (
                (reads_environ and name in ("get", "setdefault", "pop")) or name == "getenv"
            ):
                keys.append(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            if isinstance(node.ctx, ast.Load):
                keys.append(node.slice)
        elif (
            isinstance(node, ast.Compare)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
            and any(_is_environ(c) for c in node.comparators)
        ):
            keys.append(node.left)
    return keys


def string_bindings(trees: list[ast.AST]) -> dict[str, set[str]]:
    """Every name or keyword bound to an upper-case string literal: `X = "..."`,
    `X: str = "..."`, `f(x="...")`, across all the scanned code (constants are imported)."""
    bound: dict[str, set[str]] = {}

    def bind(name: str, value: ast.AST | None) -> None:
        literal = isinstance(value, ast.Constant) and isinstance(value.value, str)
        if literal and VARIABLE.match(value.value):
            bound.setdefault(name, set()).add(value.value)

    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, (ast.Name, ast.Attribute)):
                        bind(getattr(target, "id", None) or target.attr, node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                bind(node.target.id, node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                bind(node.arg, node.value)
    return bound


def variables_read(files: list[Path], scripts: list[Path] = ()) -> tuple[set[str], list[str]]:
    """(the variables the files read, the reads that name no resolvable variable)."""
    parsed = [(path, ast.parse(path.read_text(encoding="utf-8"), str(path))) for path in files]
    bound = string_bindings([tree for _, tree in parsed])
    found, unresolved = set(), []
    for path, tree in parsed:
        for key in environment_keys(tree):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names = {key.value}
            elif isinstance(key, ast.Name):
                names = bound.get(key.id, set())
            elif isinstance(key, ast.Attribute):
                names = bound.get(key.attr, set())
            else:
                names = set()
            if not names:
                unresolved.append(f"{path}:{key.lineno}: {ast.unparse(key)}")
            found |= names
    for script in scripts:
        found |= set(SHELL_DEFAULT.findall(script.read_text(encoding="utf-8")))
    return found, unresolved


def documented(page_text: str) -> set[str]:
    """The first-column variables of the tables in the page's code-variables section."""
    start = page_text.index(SECTION) + len(SECTION)
    end = page_text.find("\n## ", start)
    section = page_text[start : end if end != -1 else len(page_text)]
    return {m.group(1) for line in section.splitlines() if (m := ROW.match(line.strip()))}


def mismatch(read: set[str], listed: set[str]) -> str:
    """'' when they agree; else a message naming what each side lacks."""
    problems = []
    if read - listed:
        problems.append(
            f"read by the code but not listed in docs/settings.md: {sorted(read - listed)}"
        )
    if listed - read:
        problems.append(
            f"listed in docs/settings.md but read nowhere in the code: {sorted(listed - read)}"
        )
    return "; ".join(problems)


def test_the_settings_page_lists_every_variable_the_code_reads():
    read, unresolved = variables_read(python_files(), [REPO / s for s in SHELL_SCRIPTS])
    assert not unresolved, (
        "environment reads whose variable the scan cannot name (use a string literal or a "
        f"constant bound to one): {unresolved}"
    )
    # Anchors: variables known to be read, so an empty or broken scan cannot pass.
    assert {"EMBEDDINGS_DATA", "EMBEDDINGS_BUNDLE", "EMBEDDINGS_ONNX_SPINNING"} <= read
    problem = mismatch(read, documented(PAGE.read_text(encoding="utf-8")))
    assert not problem, problem


def test_a_variable_removed_from_the_page_is_named():
    text = PAGE.read_text(encoding="utf-8")
    listed = documented(text)
    assert "EMBEDDINGS_CHROMIUM" in listed
    without = "\n".join(
        line for line in text.splitlines() if not line.startswith("| `EMBEDDINGS_CHROMIUM`")
    )
    assert documented(without) == listed - {"EMBEDDINGS_CHROMIUM"}
    message = mismatch(listed, documented(without))
    assert "not listed" in message and "EMBEDDINGS_CHROMIUM" in message
    message = mismatch(listed - {"EMBEDDINGS_DATA"}, listed)
    assert "read nowhere" in message and "EMBEDDINGS_DATA" in message


def test_the_scan_finds_every_kind_of_read(tmp_path):
    (tmp_path / "constants.py").write_text('SHARED_ENV = "EMBEDDINGS_SHARED"\n')
    (tmp_path / "reader.py").write_text(
        "import os\n"
        "from os import environ, getenv\n"
        "from constants import SHARED_ENV\n"
        'LOCAL_ENV = "EMBEDDINGS_LOCAL"\n'
        'spec = Spec(weights_env="EMBEDDINGS_KEYWORD")\n'
        'a = os.environ["EMBEDDINGS_SUBSCRIPT"]\n'
        'b = os.environ.get("EMBEDDINGS_GET", "x")\n'
        'c = os.getenv("EMBEDDINGS_GETENV")\n'
        'os.environ.setdefault("HF_SETDEFAULT", "1")\n'
        'd = "EMBEDDINGS_IN" in os.environ\n'
        "e = os.environ.get(LOCAL_ENV)\n"
        "f = environ.get(SHARED_ENV)\n"
        "g = os.environ.get(spec.weights_env)\n"
        'os.environ["EMBEDDINGS_WRITTEN_ONLY"] = "1"\n'
        'h = {"EMBEDDINGS_NOT_READ": 1}\n'
    )
    (tmp_path / "run").write_text('PYTHON=${PYTHON:-python3}\nVENV=${VENV-.venv}\necho "$HOME"\n')
    read, unresolved = variables_read(python_files(["."], tmp_path), [tmp_path / "run"])
    assert unresolved == []
    assert read == {
        "EMBEDDINGS_SHARED",
        "EMBEDDINGS_LOCAL",
        "EMBEDDINGS_KEYWORD",
        "EMBEDDINGS_SUBSCRIPT",
        "EMBEDDINGS_GET",
        "EMBEDDINGS_GETENV",
        "HF_SETDEFAULT",
        "EMBEDDINGS_IN",
        "PYTHON",
        "VENV",
    }


def test_a_read_the_scan_cannot_name_fails(tmp_path):
    (tmp_path / "dynamic.py").write_text(
        'import os\nname = "embeddings_" + "x"\nvalue = os.environ.get(name.upper())\n'
    )
    read, unresolved = variables_read(python_files(["."], tmp_path))
    assert read == set()
    assert len(unresolved) == 1 and "name.upper()" in unresolved[0]

"""The house rules that code review would otherwise have to remember (docs/architecture.md).

* No module imports from a layer above its own (every import counts: module level, inside
  functions, under ``TYPE_CHECKING``).
* Only :mod:`pedseg.runfolder` names the files of a run folder.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pedseg"

#: Lowest first; a package may import from its own layer's packages only when they are listed
#: as peers below (same layer, no cycle), and from any lower layer.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "errors"}),
    frozenset({"io", "runtime"}),
    frozenset({"domains"}),
    frozenset({"data", "models", "outputs"}),
    frozenset({"runfolder"}),
    frozenset({"training", "export"}),
    frozenset({"inference"}),
    frozenset({"planning"}),
    frozenset({"evaluation"}),
    frozenset({"workflows"}),
    frozenset({"cli", "__main__"}),
)
PEERS: frozenset[tuple[str, str]] = frozenset({("__main__", "cli")})
"""Allowed imports between two packages of one layer (``python -m pedseg`` runs the CLI)."""

# ``metrics.csv`` is left out: evaluation folders have their own file of that name.
RUN_FOLDER_FILES = (
    "model.json",
    "model.safetensors",
    "domains.safetensors",
    "domains.json",
    "curves.png",
    "state.json",
    "optimizer.safetensors",
    "rng.safetensors",
)


def _layer_of(package: str) -> int:
    for index, members in enumerate(LAYERS):
        if package in members:
            return index
    raise AssertionError(f"package pedseg.{package} is in no layer of {__file__}; add it")


def _package(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pedseg":
                yield node.lineno, parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_is_in_a_layer() -> None:
    for path in _modules():
        _layer_of(_package(path))


def test_no_module_imports_from_a_layer_above() -> None:
    upward: list[str] = []
    for path in _modules():
        source = _package(path)
        level = _layer_of(source)
        for line, target in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if target == source:
                continue
            other = _layer_of(target)
            if other > level or (other == level and (source, target) not in PEERS):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} -> {target}")
    assert not upward, "imports that go up (or sideways) a layer:\n" + "\n".join(upward)


def _code_strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String constants that are not documentation (docstrings, attribute docstrings)."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docstrings.add(id(node.value))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


@pytest.mark.parametrize("name", RUN_FOLDER_FILES)
def test_only_the_runfolder_package_names_run_folder_files(name: str) -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in _modules()
        if _package(path) != "runfolder"
        for line, text in _code_strings(ast.parse(path.read_text(encoding="utf-8")))
        if name in text
    ]
    assert not found, f"{name!r} is spelled out outside pedseg/runfolder: {', '.join(found)}"


def test_the_layer_table_of_the_docs_matches() -> None:
    docs = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for index, members in enumerate(LAYERS):
        for member in sorted(members - {"__init__", "__main__"}):
            assert f"`{member}`" in docs, (
                f"docs/architecture.md does not name layer {index}'s {member}"
            )

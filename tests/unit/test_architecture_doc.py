"""ARCHITECTURE.md stays true: every `path:name` it gives is defined there, every path exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "ARCHITECTURE.md"
#: `some/file.py:Name` or `some/file.py:Class.member` inside backticks.
REFERENCE = re.compile(r"`([\w/]+\.py):([A-Za-z_][\w.]*)`")
#: A path inside backticks (a folder, a .py or .md file), placeholders excluded.
PATH = re.compile(r"`((?:[\w.-]+/)+(?:[\w.-]+\.(?:py|md))?)(?::[\w.]+)?`")


def defined_names(tree: ast.Module) -> dict[str, set[str]]:
    """Top-level names of a module -> the names defined in their bodies (for classes)."""
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            members: set[str] = set()
            for item in ast.walk(node):
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Attribute):
                    members.add(item.target.attr)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    for t in item.targets:
                        if isinstance(t, ast.Attribute):
                            members.add(t.attr)
                        elif isinstance(t, ast.Name):
                            members.add(t.id)
            names[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = set()
    return names


def missing_references(text: str, root: Path) -> list[str]:
    missing = []
    for path, name in REFERENCE.findall(text):
        file = root / path
        if not file.is_file():
            missing.append(f"{path}:{name} (no such file)")
            continue
        names = defined_names(ast.parse(file.read_text()))
        top, *rest = name.split(".")
        if top not in names or (rest and rest[0] not in names[top]):
            missing.append(f"{path}:{name}")
    return missing


def missing_paths(text: str, root: Path) -> list[str]:
    return [p for p in PATH.findall(text) if "<" not in p and not (root / p).exists()]


def test_every_reference_in_architecture_md_exists() -> None:
    text = DOC.read_text()
    assert len(REFERENCE.findall(text)) >= 20  # the page still answers with file:function
    assert missing_references(text, ROOT) == []
    assert missing_paths(text, ROOT) == []


@pytest.mark.parametrize("ref", [
    "`alerts/service.py:open_alert`",  # no such function
    "`alerts/nowhere.py:open_episode`",  # no such file
    "`devices/pipeline.py:BatchWriter.flush`",  # no such method
])
def test_a_reference_that_does_not_exist_is_reported(ref: str) -> None:
    assert missing_references(ref, ROOT) != []


def test_a_path_that_does_not_exist_is_reported() -> None:
    assert missing_paths("see `probation/workers.py`", ROOT) == ["probation/workers.py"]

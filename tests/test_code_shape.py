"""Size limits of the library (issue "Library second edition"): algorithm bodies stay readable in
one screen. Docstrings do not count (they carry the formula and the examples)."""

import ast
import pathlib

import pytest

import metahpo_lib

ROOT = pathlib.Path(metahpo_lib.__file__).parent
FILES = sorted(ROOT.rglob("*.py"))
MAX_FUNCTION, MAX_CLASS = 60, 250
#: package-internal modules meant to be imported by the others (shared validators, hypergrad's helpers)
SHARED_MODULES = {"_validate", "_common", "__version__"}


def docstring_lines(node) -> set[int]:
    """Line numbers of every docstring inside ``node`` (its own and nested ones)."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and sub.body:
            first = sub.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.update(range(first.lineno, first.end_lineno + 1))
    return out


def code_lines(node) -> int:
    return node.end_lineno - node.lineno + 1 - len(docstring_lines(node))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_and_classes_are_small(path):
    tree = ast.parse(path.read_text())
    too_long = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > MAX_FUNCTION:
            too_long.append(f"function {node.name} ({code_lines(node)} lines > {MAX_FUNCTION})")
        if isinstance(node, ast.ClassDef) and code_lines(node) > MAX_CLASS:
            too_long.append(f"class {node.name} ({code_lines(node)} lines > {MAX_CLASS})")
    assert not too_long, f"{path.name}: " + "; ".join(too_long)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_names(path):
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            bad += [a.name for a in node.names if a.name.startswith("_") and a.name not in SHARED_MODULES]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in {"linalg", "inner", "hypergrad", "maml", "meta", "hpo",
                                                           "tasks", "problems", "optim", "tree", "stats", "env"}:
                bad.append(f"{base.id}.{node.attr}")
    assert not bad, f"{path.name} uses private names of other modules: {bad}"

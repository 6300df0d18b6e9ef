"""A student bundle for graded use: the exercise notebooks and the library, without ``solutions/``,
hidden tests or importable reference answers (the self-checks compare with stored results)."""

from __future__ import annotations

import ast
import importlib
import pickle
import shutil
from pathlib import Path

import nbformat

from .notebooks import BEGIN_HIDDEN, BEGIN_SOLUTION, defined_functions

_STUB = ('def {name}(*args, **kwargs):\n    """Not in the student bundle: the checks compare with stored results."""\n'
         '    raise NotImplementedError("the reference answers are not part of the student bundle")\n')
_BUNDLE_README = """# metahpo exercises (student bundle)

Install it with `python -m pip install -e .`, open `exercises/` in JupyterLab, replace each
`raise NotImplementedError()` with your code and run the self-check cell below it. The self-checks compare
your results with stored results of the reference on seeded inputs; your teacher grades with more tests.
"""


def without_references(source: str) -> str:
    r"""A ``checks.chNN`` module's source with every top-level ``ref_*`` function replaced by a stub
    that raises ``NotImplementedError`` (signature and body gone).

    >>> from metahpo_lib import exercises
    >>> src = "def ref_double(x):\n    return 2 * x\n\ndef double(fn):\n    compare(fn, ref_double, [])\n"
    >>> out = exercises.without_references(src)
    >>> "2 * x" in out, "def double(fn):" in out, "def ref_double(*args, **kwargs):" in out
    (False, True, True)
    """
    lines = source.splitlines(keepends=True)
    nodes = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name.startswith("ref_")]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        lines[first:node.end_lineno] = [_STUB.format(name=node.name)]
    return "".join(lines)


def _student_notebooks(exercises_dir: Path) -> list[Path]:
    paths = sorted(exercises_dir.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"exercises_dir {str(exercises_dir)!r} holds no .ipynb notebooks")
    for path in paths:
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
        if BEGIN_SOLUTION in text or BEGIN_HIDDEN in text:
            raise ValueError(f"exercises_dir: {path.name} holds solution or hidden-test markers (run generate)")
    return paths


def _library(package: Path, out: Path, log) -> None:
    shutil.copytree(package, out / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "recorded.pkl"))
    from .. import checks

    stored = {}
    for path in sorted((out / package.name / "checks").glob("ch[0-9][0-9].py")):
        stored.update(checks.record(importlib.import_module(f"{package.name}.checks.{path.stem}")))
        path.write_text(without_references(path.read_text()))
        log(f"self-checks  {path.stem}: reference answers replaced by stored results")
    with open(out / package.name / "checks" / checks.RECORDED.name, "wb") as f:
        pickle.dump(stored, f)


def release(out_dir, exercises_dir="exercises", *, notebooks_dir="notebooks", log=print) -> Path:
    """Write a student bundle to the new folder ``out_dir``: ``exercises/`` (checked free of solutions and
    hidden tests), the lecture notebooks that define no exercise's function, the library with
    self-checks that compare with stored results (no ``ref_`` answers), ``pyproject.toml`` and a
    README. ``solutions/`` is never copied. Returns the folder. Takes about ten seconds (the checks run).

    >>> import tempfile, pathlib
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     exercises.release(tmp, tmp)     # the folder exists already
    Traceback (most recent call last):
        ...
    ValueError: out_dir '...' exists already: give a new folder
    """
    out, src = Path(out_dir), Path(exercises_dir)
    if out.exists():
        raise ValueError(f"out_dir {str(out)!r} exists already: give a new folder")
    paths = _student_notebooks(src)
    package = Path(__file__).resolve().parents[1]
    names = {n for p in paths for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"
             for n in defined_functions(c.source)}
    (out / "exercises").mkdir(parents=True)
    for path in paths:
        shutil.copy2(path, out / "exercises" / path.name)
    for path in sorted(Path(notebooks_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        clash = names & {n for c in nb.cells if c.cell_type == "code" for n in defined_functions(c.source)}
        if clash:
            log(f"left out     {path}  (defines {', '.join(sorted(clash))}, an exercise's answer)")
            continue
        (out / "notebooks").mkdir(exist_ok=True)
        shutil.copy2(path, out / "notebooks" / path.name)
    _library(package, out, log)
    shutil.copy2(package.parent / "pyproject.toml", out / "pyproject.toml")
    (out / "README.md").write_text(_BUNDLE_README)
    log(f"released     {out}  ({len(paths)} exercise notebooks)")
    return out

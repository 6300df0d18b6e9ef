"""What an exercise notebook is made of: the markers, the student version of a cell, the exercises of a
solution notebook with their test cells and points, and the nbgrader cell metadata (notebook 00)."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)
#: points of a test cell whose solution notebook gives none
DEFAULT_POINTS = 1.0
#: cell metadata that running or viewing a notebook changes: not part of its content
VOLATILE_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "jupyter", "trusted")
_CHECK_CALL = re.compile(r"\bchecks\.")
_CHAPTER = re.compile(r"^(\d\d)[_-]")


def strip_source(source: str, *, markdown: bool = False, where: str = "cell") -> str:
    r"""The student version of one cell's source: solutions stubbed, hidden tests removed (notebook 00,
    "How the exercises work"). ``markdown`` cells get ``YOUR ANSWER HERE``; ``where`` names the cell
    in errors.

    >>> from metahpo_lib import exercises
    >>> src = "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
    >>> print(exercises.strip_source(src))
    def double(x):
        # YOUR CODE HERE
        raise NotImplementedError()
    >>> exercises.strip_source("### BEGIN HIDDEN TESTS\nassert True", where="cell 3")
    Traceback (most recent call last):
        ...
    ValueError: cell 3: missing '### END HIDDEN TESTS'
    """
    out, skipping = [], None
    for line in source.splitlines():
        marker = line.strip()
        if skipping:
            if marker == skipping:
                skipping = None
            elif marker in (BEGIN_SOLUTION, BEGIN_HIDDEN):
                raise ValueError(f"{where}: {marker!r} inside an open block (missing {skipping!r})")
            continue
        if marker == BEGIN_SOLUTION:
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + s for s in (TEXT_STUB if markdown else CODE_STUB)]
            skipping = END_SOLUTION
        elif marker == BEGIN_HIDDEN:
            skipping = END_HIDDEN
        elif marker in (END_SOLUTION, END_HIDDEN):
            raise ValueError(f"{where}: {marker!r} without its BEGIN marker")
        else:
            out.append(line)
    if skipping:
        raise ValueError(f"{where}: missing {skipping!r}")
    return "\n".join(out)


def stable_metadata(cell) -> dict:
    """A cell's metadata without what running or viewing it changes (:data:`VOLATILE_METADATA`).

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> cell = nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["setup"], "execution": {}})
    >>> exercises.stable_metadata(cell)
    {'tags': ['setup']}
    """
    return {k: v for k, v in cell.get("metadata", {}).items() if k not in VOLATILE_METADATA}


def content_hash(nb) -> str:
    """A fingerprint of a notebook's cell types, sources and stable cell metadata (outputs, execution
    counts and timings ignored): 16 hex digits of SHA-256.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    >>> h = exercises.content_hash(nb)
    >>> len(h)
    16
    >>> nb.cells[0].execution_count = 7                     # running a cell does not change it
    >>> exercises.content_hash(nb) == h
    True
    >>> nb.cells[0].metadata["tags"] = ["graded"]           # a metadata change does
    >>> exercises.content_hash(nb) == h
    False
    """
    h = hashlib.sha256()
    for cell in nb.cells:
        meta = json.dumps(stable_metadata(cell), sort_keys=True, default=str)
        h.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0" + meta.encode() + b"\0")
    return h.hexdigest()[:16]


def parse_cell(source: str):
    r"""The AST of a code cell's source with IPython magics (``%``, ``!``) blanked, or None when it does
    not parse.

    >>> from metahpo_lib import exercises
    >>> type(exercises.parse_cell("%matplotlib inline\nx = 1")).__name__, exercises.parse_cell("def (")
    ('Module', None)
    """
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def defined_functions(source: str) -> list[str]:
    r"""Names of the top-level functions a code cell defines (a regular expression when it does not parse).

    >>> from metahpo_lib import exercises
    >>> exercises.defined_functions("import math\ndef f(x):\n    def inner(): pass\n    return x\ndef g(): pass")
    ['f', 'g']
    """
    tree = parse_cell(source)
    if tree is None:
        return re.findall(r"^def\s+(\w+)", source, re.M)
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def is_test_cell(cell) -> bool:
    """True for a cell that tests the exercise before it: nbgrader marks it as graded, or it calls
    ``checks.``, holds hidden tests or an ``assert`` statement.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> [exercises.is_test_cell(nbformat.v4.new_code_cell(s)) for s in ["assert inc(1) == 2", "plot(inc)"]]
    [True, False]
    """
    if cell.cell_type != "code":
        return False
    nbg = cell.get("metadata", {}).get("nbgrader", {})
    if nbg.get("grade") and not nbg.get("solution"):
        return True
    if BEGIN_HIDDEN in cell.source or _CHECK_CALL.search(cell.source):
        return True
    tree = parse_cell(cell.source)
    return tree is not None and any(isinstance(n, ast.Assert) for n in ast.walk(tree))


@dataclass
class Exercise:
    """One exercise of a solution notebook: its key (the function name, or the cell's nbgrader
    ``grade_id``), the index of its cell, and the indices, grade ids and points of its test cells.

    >>> from metahpo_lib import exercises
    >>> e = exercises.Exercise("double", 1, tests=[2], test_ids=["test_double"], points=[2.0])
    >>> e.max_points
    2.0
    """

    name: str
    cell: int
    tests: list[int] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    points: list[float] = field(default_factory=list)

    @property
    def max_points(self) -> float:
        """The exercise's points: the sum of its test cells' points.

        >>> from metahpo_lib import exercises
        >>> exercises.Exercise("f", 0, [1, 2], ["test_f", "test_f_2"], [1.0, 0.5]).max_points
        1.5
        """
        return float(sum(self.points))


def _exercise_name(cell, number: int) -> str:
    nbg = cell.get("metadata", {}).get("nbgrader", {})
    names = defined_functions(cell.source)
    return nbg.get("grade_id") or (names[0] if names else f"exercise_{number}")


def exercises_of(solution) -> list[Exercise]:
    r"""The exercises of a solution notebook, in order: each code cell with a solution block, keyed by its
    nbgrader ``grade_id`` or else its first ``def``, with the test cells (:func:`is_test_cell`) after it,
    up to the next exercise; a test cell's points are its nbgrader ``points`` (default 1).

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> v4 = nbformat.v4
    >>> solution = v4.new_notebook(cells=[
    ...     v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    ...     v4.new_code_cell("assert double(2) == 4\n"
    ...                      "### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n### END HIDDEN TESTS")])
    >>> [(e.name, e.tests, e.test_ids, e.points) for e in exercises.exercises_of(solution)]
    [('double', [1], ['test_double'], [1.0])]
    """
    found: list[Exercise] = []
    for i, cell in enumerate(solution.cells):
        if cell.cell_type == "code" and BEGIN_SOLUTION in cell.source:
            found.append(Exercise(_exercise_name(cell, len(found) + 1), i))
        elif found and is_test_cell(cell):
            ex, nbg = found[-1], cell.get("metadata", {}).get("nbgrader", {})
            default_id = f"test_{ex.name}" + (f"_{len(ex.tests) + 1}" if ex.tests else "")
            ex.tests.append(i)
            ex.test_ids.append(nbg.get("grade_id") or default_id)
            ex.points.append(float(nbg.get("points", DEFAULT_POINTS)))
    return found


def with_nbgrader_metadata(solution):
    r"""A copy of a solution notebook whose exercise and test cells carry nbgrader's cell metadata
    (schema 3): exercise cells are solution cells (``grade_id`` = the exercise's key), test cells are
    locked graded cells with their points, so that ``nbgrader generate_assignment`` and ``autograde``
    work on it. Points and ids already written in the notebook are kept.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> v4 = nbformat.v4
    >>> nb = v4.new_notebook(cells=[v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n"
    ...                                                "    ### END SOLUTION"), v4.new_code_cell("assert f(1) == 1")])
    >>> meta = exercises.with_nbgrader_metadata(nb).cells[1].metadata["nbgrader"]
    >>> meta["grade_id"], meta["grade"], meta["locked"], meta["points"]
    ('test_f', True, True, 1.0)
    """
    nb = copy.deepcopy(solution)
    base = {"schema_version": 3, "task": False}
    for ex in exercises_of(nb):
        nb.cells[ex.cell].metadata["nbgrader"] = {**base, "grade": False, "grade_id": ex.name, "locked": False,
                                                  "solution": True}
        for i, gid, pts in zip(ex.tests, ex.test_ids, ex.points):
            nb.cells[i].metadata["nbgrader"] = {**base, "grade": True, "grade_id": gid, "locked": True,
                                                "points": pts, "solution": False}
    return nb


def chapter_of(path) -> str | None:
    """The two-digit chapter number a notebook's file name starts with, or None.

    >>> from metahpo_lib import exercises
    >>> exercises.chapter_of("submitted/alice/01_bilevel_hpo-alice.ipynb"), exercises.chapter_of("notes.ipynb")
    ('01', None)
    """
    m = _CHAPTER.match(Path(path).name)
    return m.group(1) if m else None


def solution_for(notebook, solutions_dir) -> Path:
    """The solution notebook a (possibly renamed) exercise notebook is graded against: the same file name
    in ``solutions_dir``, else the one with the same chapter number.

    >>> import tempfile, pathlib
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (pathlib.Path(tmp) / "01_bilevel_hpo.ipynb").write_text("{}")
    ...     exercises.solution_for("01_bilevel_hpo-alice.ipynb", tmp).name
    '01_bilevel_hpo.ipynb'
    """
    folder, path = Path(solutions_dir), Path(notebook)
    if (folder / path.name).is_file():
        return folder / path.name
    chapter = chapter_of(path)
    matches = sorted(folder.glob(f"{chapter}_*.ipynb")) if chapter else []
    if len(matches) != 1:
        found = "no" if not matches else f"{len(matches)}"
        raise ValueError(f"notebook {str(path)!r}: {found} solution notebook(s) in solutions_dir {str(folder)!r} "
                         f"match its name or chapter number (name it NN_..., or pass solutions_dir)")
    return matches[0]

"""Grade one learner's exercise notebook: the hidden tests put back, each submission run in its own
temporary folder under resource limits, one row per exercise with its points."""

from __future__ import annotations

import copy
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nbformat

from .sandbox import Limits
from .notebooks import defined_functions, exercises_of, solution_for, strip_source, with_nbgrader_metadata
from .running import DIED, OK, TIMEOUT, cell_errors, run_cells

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
#: error names of an unsolved exercise: its own stub, or a self-check saying so (``checks.ExerciseNotWritten``)
NOT_WRITTEN = ("NotImplementedError", "ExerciseNotWritten")
_NAME_ERROR = re.compile(r"name '(\w+)' is not defined")
_REFERENCE = re.compile(r"\bref_\w+")


class Grade(NamedTuple):
    """One exercise's grade: status passed / failed / not attempted, a message (never hidden-test
    source), the points earned (the points of the test cells that ran without error) and available.

    >>> from metahpo_lib import exercises
    >>> exercises.Grade("double", "failed", "AssertionError: a test failed", 1.0, 2.0).points
    1.0
    """

    exercise: str
    status: str
    message: str
    points: float = 0.0
    max_points: float = 0.0


@dataclass
class _Plan:
    answers: list[int] = field(default_factory=list)  # learner cells defining the function (or its cell)
    tests: list[int] = field(default_factory=list)
    other_names: list[str] = field(default_factory=list)  # what the exercise's own cell defines instead
    cell_found: bool = False
    stub: bool = False
    reference: str = ""


def _key(cell, key: str) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get(key)


def _find(cells, sol_cell, grade_id: str, student_source: str) -> int | None:
    """A learner cell matching a solution cell: same nbgrader grade id, else same cell id, else same
    student source."""
    for test in (lambda c: _key(c, "grade_id") == grade_id,
                 lambda c: sol_cell.get("id") is not None and c.get("id") == sol_cell.get("id"),
                 lambda c: c.cell_type == "code" and bool(student_source.strip())
                 and c.source.strip() == student_source.strip()):
        hits = [j for j, c in enumerate(cells) if test(c)]
        if hits:
            return hits[0]
    return None


def _put_tests_back(learner, solution, exercises):
    """The learner's notebook with each exercise's full test cells (hidden tests included) in place of the
    visible ones, the deleted ones inserted after the exercise's definition; returns it and
    ``{test's solution index: its index here}``."""
    nb, placed = copy.deepcopy(learner), {}
    for ex in exercises:
        for i, gid in zip(ex.tests, ex.test_ids):
            sol = solution.cells[i]
            j = _find(nb.cells, sol, gid, strip_source(sol.source))
            if j is None:
                defs = [k for k, c in enumerate(nb.cells) if c.cell_type == "code" and ex.name in defined_functions(c.source)]
                after = max(defs + [placed[t] for t in ex.tests if t in placed], default=len(nb.cells) - 1)
                j = after + 1
                nb.cells.insert(j, nbformat.v4.new_code_cell(""))
                placed = {t: k + (k >= j) for t, k in placed.items()}
            nb.cells[j].source, nb.cells[j].metadata = sol.source, copy.deepcopy(sol.metadata)
            nb.cells[j].cell_type, placed[i] = "code", j
    return nb, placed


def _plans(nb, solution, exercises, placed) -> list[_Plan]:
    tests = set(placed.values())
    learner_code = " ".join(c.source for k, c in enumerate(nb.cells) if c.cell_type == "code" and k not in tests)
    plans = []
    for ex in exercises:
        plan = _Plan(tests=[placed[i] for i in ex.tests])
        own = _find([c if k not in tests else nbformat.v4.new_markdown_cell() for k, c in enumerate(nb.cells)],
                    solution.cells[ex.cell], ex.name, strip_source(solution.cells[ex.cell].source))
        plan.answers = [k for k, c in enumerate(nb.cells)
                        if c.cell_type == "code" and k not in tests and ex.name in defined_functions(c.source)]
        if own is not None:
            plan.cell_found = True
            plan.other_names = [n for n in defined_functions(nb.cells[own].source) if n != ex.name]
            plan.answers = sorted(set(plan.answers) | {own})
        last = [k for k in plan.answers if ex.name in defined_functions(nb.cells[k].source)]
        plan.stub = bool(last) and "raise NotImplementedError" in nb.cells[last[-1]].source
        refs = {m for k in plan.answers for m in _REFERENCE.findall(nb.cells[k].source)}
        refs |= {f"ref_{ex.name}"} if re.search(rf"\bref_{re.escape(ex.name)}\b", learner_code) else set()
        plan.reference = ", ".join(sorted(refs))
        plans.append(plan)
    return plans


def _first_error(errors) -> str:
    name, value = errors[0]
    text = f"{name}: {value}" if value else f"{name} (a test failed)"
    return text.splitlines()[0][:300]


def _explain(ex, number, plan, errors, earlier, own_errors=()) -> tuple[str, str]:
    """(status, message) of an exercise whose cells raised ``errors`` (``own_errors``: its answer cells')."""
    undone = [(k, g.exercise) for k, g in enumerate(earlier, 1) if g.status == NOT_ATTEMPTED]
    if any(n in NOT_WRITTEN for n, _ in errors):
        if plan.stub or not plan.answers:
            return NOT_ATTEMPTED, "still raises NotImplementedError"
        if undone:
            k, name = undone[0]
            return FAILED, f"depends on exercise {k} ({name}), which is not done yet (it raises NotImplementedError)"
    if own_errors:  # e.g. a syntax error in the answer: say that, not what follows from it
        return FAILED, _first_error(list(own_errors))
    missing = [m.group(1) for n, v in errors if n == "NameError" and (m := _NAME_ERROR.search(v))]
    names = [g.exercise for g in earlier]
    if ex.name in missing:
        if plan.other_names:
            return FAILED, (f"keep the function name: the tests call {ex.name}, your cell defines "
                            f"{', '.join(plan.other_names)}")
        if not plan.cell_found:
            return NOT_ATTEMPTED, f"its cell was deleted ({ex.name} is not defined)"
        return FAILED, f"{ex.name} is not defined: keep the function name the exercise gives"
    for name in missing:
        if name in names:
            k = names.index(name) + 1
            return FAILED, f"depends on exercise {k} ({name}), which is not defined: keep its function name"
    return FAILED, _first_error(errors)


def _verdict(ex, number, plan, ran, status, earlier, timeout) -> Grade:
    cells = plan.answers + plan.tests
    points = sum(p for i, p in zip(plan.tests, ex.points) if status.get(i) == OK)
    if plan.reference:
        return Grade(ex.name, FAILED, f"uses the reference answer ({plan.reference}), which graded work must not",
                     0.0, ex.max_points)
    stopped = [status[i] for i in cells if status.get(i) in (TIMEOUT, DIED)]
    if stopped:
        message = (f"timed out: a cell ran past {timeout} s and was stopped" if stopped[0] == TIMEOUT else
                   "the kernel died (memory or CPU-time limit, or the process exited); the rest ran in a fresh kernel")
        return Grade(ex.name, FAILED, message, float(points), ex.max_points)
    errors = [e for i in cells for e in cell_errors(ran.cells[i])]
    if not errors and all(status.get(i) == OK for i in plan.tests):
        return Grade(ex.name, PASSED, "", float(points), ex.max_points)
    own = [e for i in plan.answers for e in cell_errors(ran.cells[i])]
    state, message = _explain(ex, number, plan, errors or [("Error", "a test did not run")], earlier, own)
    return Grade(ex.name, state, message, float(points) if state != NOT_ATTEMPTED else 0.0, ex.max_points)


def grade(notebook, solutions_dir=None, *, timeout: int = 60, limits: Limits | None = None,
          threads: int | None = None) -> list[Grade]:
    r"""Execute a learner's exercise notebook with the hidden tests put back and return one :class:`Grade`
    per exercise. Exercises and tests are found by nbgrader grade id, cell id or source, answers by
    function name, so new cells, missing cell ids and a renamed file (``01_x-alice.ipynb``) work.
    ``solutions_dir`` defaults to ``../solutions`` next to the notebook's folder. The notebook runs in a
    fresh temporary folder, its kernel under ``limits``; a cell past ``timeout`` seconds is stopped.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> v4 = nbformat.v4
    >>> solution = v4.new_notebook(cells=[
    ...     v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    ...     v4.new_code_cell("assert double(2) == 4\n"
    ...                      "### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n### END HIDDEN TESTS")])
    >>> import tempfile, pathlib
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name)
    >>> (root / "solutions").mkdir()
    >>> nbformat.write(solution, root / "solutions" / "01_demo.ipynb")
    >>> exercises.generate(root / "solutions", root / "exercises", log=lambda line: None)
    True
    >>> exercises.grade(root / "exercises" / "01_demo.ipynb", timeout=60)   # runs it: about a second
    [Grade(exercise='double', status='not attempted', message='still raises NotImplementedError', points=0.0, max_points=1.0)]
    >>> tmp.cleanup()
    """
    path = Path(notebook)
    if not path.is_file():
        raise ValueError(f"notebook {str(path)!r} does not exist")
    sol_dir = Path(solutions_dir) if solutions_dir else path.resolve().parent.parent / "solutions"
    solution = with_nbgrader_metadata(nbformat.read(solution_for(path, sol_dir), as_version=4))
    try:
        learner = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook
        raise ValueError(f"notebook {str(path)!r} is not a readable notebook: {type(e).__name__}: {e}") from None
    exercises = exercises_of(solution)
    nb, placed = _put_tests_back(learner, solution, exercises)
    plans = _plans(nb, solution, exercises, placed)
    last = max(placed.values(), default=-1)
    with tempfile.TemporaryDirectory(prefix="metahpo-grade-") as cwd:
        ran, status = run_cells(nb, cwd, timeout=timeout, limits=limits, threads=threads, cells=range(last + 1))
    rows: list[Grade] = []
    for number, (ex, plan) in enumerate(zip(exercises, plans), 1):
        rows.append(_verdict(ex, number, plan, ran, status, rows, timeout))
    return rows


def print_grades(rows) -> None:
    """Print the rows of :func:`grade` as a table, then the exercises passed and the points.

    >>> from metahpo_lib import exercises
    >>> exercises.print_grades([exercises.Grade("ridge_closed_form", "passed", "", 2, 2),
    ...                         exercises.Grade("validation_curve", "not attempted", "still raises NotImplementedError", 0, 3)])
    ridge_closed_form  passed         2/2
    validation_curve   not attempted  0/3  still raises NotImplementedError
    <BLANKLINE>
    1/2 exercises passed, 2/5 points
    """
    width = max([len(r.exercise) for r in rows] + [8])
    for r in rows:
        print(f"{r.exercise:<{width}}  {r.status:<13}  {_num(r.points)}/{_num(r.max_points)}  {r.message}".rstrip())
    passed = sum(r.status == PASSED for r in rows)
    total, most = sum(r.points for r in rows), sum(r.max_points for r in rows)
    print(f"\n{passed}/{len(rows)} exercises passed, {_num(total)}/{_num(most)} points")


def _num(x: float) -> str:
    return f"{x:g}"

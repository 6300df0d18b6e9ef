"""Exercise notebooks: generate them from the solutions, check they are in step, grade them.

Markers (nbgrader-compatible), written once in ``solutions/NN_*.ipynb``:

- ``### BEGIN SOLUTION`` ... ``### END SOLUTION``: replaced in the student copy by
  ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (same indentation);
- ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``: removed from the student copy.

An *exercise* is a code cell holding a solution block; its *tests* are the code cells after
it that call ``checks.`` or hold hidden tests, up to the next exercise.

Command line (also installed as ``metahpo-exercises``)::

    python -m metahpo_lib.exercises generate [--check] [--force]
    python -m metahpo_lib.exercises grade exercises/01_bilevel_hpo.ipynb

``generate`` never overwrites an exercise notebook whose code or text a learner changed,
unless ``--force`` (and then it keeps a timestamped backup next to it).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)
_CHECK_CALL = re.compile(r"\bchecks\.")


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


def content_hash(nb) -> str:
    """A fingerprint of a notebook's cell types and sources (outputs ignored): 16 hex digits of SHA-256.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    >>> h = exercises.content_hash(nb)
    >>> len(h)
    16
    >>> nb.cells[0].execution_count = 7                     # running a cell does not change it
    >>> exercises.content_hash(nb) == h
    True
    >>> nb.cells[0].source = "x = 2"                        # editing it does
    >>> exercises.content_hash(nb) == h
    False
    """
    h = hashlib.sha256()
    for cell in nb.cells:
        h.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0")
    return h.hexdigest()[:16]


def student_notebook(solution, name: str = "notebook"):
    r"""The exercise notebook for a solution notebook: stubbed, hidden tests removed, outputs cleared,
    with a generation record in ``metadata["metahpo"]`` (see :func:`learner_edited`).

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> v4 = nbformat.v4
    >>> solution = v4.new_notebook(cells=[
    ...     v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    ...     v4.new_code_cell("assert double(2) == 4\n"
    ...                      "### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n### END HIDDEN TESTS")])
    >>> nb = exercises.student_notebook(solution, "01_demo.ipynb")
    >>> print(nb.cells[1].source)
    assert double(2) == 4
    >>> nb.metadata["metahpo"]["generated_from"]
    'solutions/01_demo.ipynb'
    """
    nb = copy.deepcopy(solution)
    for i, cell in enumerate(nb.cells):
        where = f"{name}, cell {i}"
        if cell.cell_type in ("code", "markdown"):
            cell.source = strip_source(cell.source, markdown=cell.cell_type == "markdown", where=where)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    nb.metadata["metahpo"] = {"generated_from": f"solutions/{name}", "source_hash": content_hash(nb)}
    return nb


def learner_edited(nb) -> bool:
    """True when a generated exercise notebook's sources differ from what was generated
    (or when it carries no generation record, so its origin is unknown).

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> nb = exercises.student_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))
    >>> exercises.learner_edited(nb)
    False
    >>> nb.cells[0].source = "x = 2"
    >>> exercises.learner_edited(nb), exercises.learner_edited(nbformat.v4.new_notebook())
    (True, True)
    """
    recorded = nb.metadata.get("metahpo", {}).get("source_hash")
    return recorded is None or recorded != content_hash(nb)


def generate(solutions_dir="solutions", exercises_dir="exercises", *, force: bool = False,
             check: bool = False, log=print) -> bool:
    r"""Write ``exercises/`` from ``solutions/``. With ``check``, write nothing and return
    False when any exercise notebook is missing or out of step. Returns True otherwise.
    Notebooks a learner changed are kept unless ``force`` (then backed up); ``log`` gets one
    line per notebook.

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
    >>> exercises.generate(root / "solutions", root / "exercises", check=True)
    MISSING  ...01_demo.ipynb  (run: metahpo-exercises generate)
    False
    >>> exercises.generate(root / "solutions", root / "exercises")
    written      ...01_demo.ipynb
    True
    >>> exercises.generate(root / "solutions", root / "exercises", check=True)
    up to date   ...01_demo.ipynb
    True
    >>> tmp.cleanup()
    """
    src, dst = Path(solutions_dir), Path(exercises_dir)
    if not src.is_dir():
        raise ValueError(f"solutions_dir {str(src)!r} is not a directory")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"solutions_dir {str(src)!r} holds no .ipynb notebooks")
    ok = True
    if not check:
        dst.mkdir(parents=True, exist_ok=True)
    for path in paths:
        new = student_notebook(nbformat.read(path, as_version=4), path.name)
        target = dst / path.name
        old = nbformat.read(target, as_version=4) if target.exists() else None
        if old is not None and content_hash(old) == content_hash(new):
            log(f"up to date   {target}")
            continue
        if check:
            ok = False
            log(f"{'OUT OF STEP' if old is not None else 'MISSING'}  {target}  (run: metahpo-exercises generate)")
            continue
        if old is not None and learner_edited(old):
            if not force:
                log(f"kept         {target}  (you changed it; --force overwrites it and keeps a backup)")
                continue
            backup = target.with_name(f"{target.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.copy2(target, backup)
            log(f"backed up    {target} -> {backup}")
        nbformat.write(new, target)
        log(f"{'updated' if old is not None else 'written':<12} {target}")
    return ok


# ----------------------------------------------------------------------------- grading

@dataclass
class Exercise:
    """One exercise of a solution notebook: its name, its cell's id and the ids of the cells that test
    it (see :func:`exercises_of`).

    >>> from metahpo_lib import exercises
    >>> exercises.Exercise("double", "cell-1", ["cell-2"])
    Exercise(name='double', cell_id='cell-1', test_ids=['cell-2'])
    """

    name: str
    cell_id: str
    test_ids: list[str] = field(default_factory=list)


def exercises_of(solution) -> list[Exercise]:
    r"""The exercises of a solution notebook, in order: each code cell with a solution block, named after
    its first ``def``, with the following code cells that call ``checks.`` or hold hidden tests.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> v4 = nbformat.v4
    >>> solution = v4.new_notebook(cells=[
    ...     v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    ...     v4.new_code_cell("assert double(2) == 4\n"
    ...                      "### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n### END HIDDEN TESTS")])
    >>> [(e.name, len(e.test_ids)) for e in exercises.exercises_of(solution)]
    [('double', 1)]
    """
    found: list[Exercise] = []
    for cell in solution.cells:
        if cell.cell_type != "code":
            continue
        if BEGIN_SOLUTION in cell.source:
            m = re.search(r"^\s*def\s+(\w+)", cell.source, re.M)
            found.append(Exercise(m.group(1) if m else f"exercise {len(found) + 1}", cell.id))
        elif found and (BEGIN_HIDDEN in cell.source or _CHECK_CALL.search(cell.source)):
            found[-1].test_ids.append(cell.id)
    return found


def cell_errors(cell) -> list[tuple[str, str]]:
    """The ``(ename, evalue)`` of each error output of an executed code cell.

    >>> import nbformat
    >>> from metahpo_lib import exercises
    >>> cell = nbformat.v4.new_code_cell("1 / 0")
    >>> cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
    ...                                        traceback=[])]
    >>> exercises.cell_errors(cell)
    [('ZeroDivisionError', 'division by zero')]
    """
    return [(o.get("ename", ""), o.get("evalue", "")) for o in cell.get("outputs", []) if o.output_type == "error"]


def execute(nb, cwd, timeout: int = 600):
    r"""Run every cell of ``nb`` in a fresh kernel (working directory ``cwd``), going on after errors;
    returns the run copy. Starting the kernel takes about a second.

    >>> import nbformat, tempfile
    >>> from metahpo_lib import exercises
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)"),
    ...                                      nbformat.v4.new_code_cell("1 / 0")])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ran = exercises.execute(nb, tmp, timeout=60)
    >>> ran.cells[0].outputs[0].text, exercises.cell_errors(ran.cells[1])
    ('42\n', [('ZeroDivisionError', 'division by zero')])
    """
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def grade(notebook, solutions_dir=None, *, timeout: int = 600) -> list[tuple[str, str, str]]:
    r"""Execute a learner's exercise notebook with the hidden tests put back and return
    ``(exercise, status, detail)`` rows, status one of passed / failed / not attempted.
    ``solutions_dir`` defaults to ``../solutions`` next to the notebook's folder.

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
    [('double', 'not attempted', 'still raises NotImplementedError')]
    >>> tmp.cleanup()
    """
    path = Path(notebook)
    if not path.is_file():
        raise ValueError(f"notebook {str(path)!r} does not exist")
    sol_dir = Path(solutions_dir) if solutions_dir else path.resolve().parent.parent / "solutions"
    sol_path = sol_dir / path.name
    if not sol_path.is_file():
        raise ValueError(f"no solution notebook {str(sol_path)!r} to take the tests from (pass solutions_dir)")
    solution = nbformat.read(sol_path, as_version=4)
    learner = nbformat.read(path, as_version=4)
    exercises = exercises_of(solution)
    tests = {c.id: c.source for c in solution.cells if any(c.id in e.test_ids for e in exercises)}
    present = {c.id for c in learner.cells}
    for cell in learner.cells:  # the full tests, hidden ones included, replace the visible ones
        if cell.id in tests:
            cell.source = tests[cell.id]
    for cid, source in tests.items():  # tests the learner deleted still run, at the end
        if cid not in present:
            learner.cells.append(nbformat.v4.new_code_cell(source))
            learner.cells[-1].id = cid
    ran = {c.id: c for c in execute(learner, path.resolve().parent, timeout).cells}
    rows = []
    for ex in exercises:
        errs = [e for cid in [ex.cell_id, *ex.test_ids] if cid in ran for e in cell_errors(ran[cid])]
        if ex.cell_id not in ran:
            rows.append((ex.name, "not attempted", "its cell was deleted"))
        elif any(name == "NotImplementedError" for name, _ in errs):
            rows.append((ex.name, "not attempted", "still raises NotImplementedError"))
        elif errs:
            name, value = errs[0]
            rows.append((ex.name, "failed", f"{name}: {value}".splitlines()[0][:300]))
        else:
            rows.append((ex.name, "passed", ""))
    return rows


def print_grades(rows) -> None:
    """Print the rows of :func:`grade` as a table, then how many exercises passed.

    >>> from metahpo_lib import exercises
    >>> exercises.print_grades([("ridge_closed_form", "passed", ""),
    ...                         ("validation_curve", "not attempted", "still raises NotImplementedError")])
    ridge_closed_form  passed
    validation_curve   not attempted  still raises NotImplementedError
    <BLANKLINE>
    1/2 exercises passed
    """
    width = max([len(r[0]) for r in rows] + [8])
    for name, status, detail in rows:
        print(f"{name:<{width}}  {status:<13}  {detail}")
    passed = sum(r[1] == "passed" for r in rows)
    print(f"\n{passed}/{len(rows)} exercises passed")


def main(argv=None) -> int:
    """The ``metahpo-exercises`` command line (``generate [--check] [--force]``, ``grade NOTEBOOK``);
    returns the exit status: 0 all well, 1 out of step or not all passed, 2 a missing notebook or folder.

    >>> import tempfile
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     exercises.main(["grade", f"{tmp}/missing.ipynb"])       # the error goes to stderr
    2
    """
    parser = argparse.ArgumentParser(prog="metahpo-exercises", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write exercises/ from solutions/")
    g.add_argument("--solutions", default="solutions")
    g.add_argument("--exercises", default="exercises")
    g.add_argument("--check", action="store_true", help="write nothing; fail if exercises/ is out of step")
    g.add_argument("--force", action="store_true", help="overwrite notebooks a learner changed (a backup is kept)")
    r = sub.add_parser("grade", help="run an exercise notebook and report each exercise")
    r.add_argument("notebook")
    r.add_argument("--solutions", default=None, help="folder of solution notebooks (default: ../solutions)")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            return 0 if generate(args.solutions, args.exercises, force=args.force, check=args.check) else 1
        rows = grade(args.notebook, args.solutions)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_grades(rows)
    return 0 if all(r[1] == "passed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

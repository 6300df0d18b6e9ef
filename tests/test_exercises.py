"""The exercise pipeline: generate, check, never destroy a learner's work, grade (the issue's defects are
tested in tests/test_exercises_grading.py, test_exercises_class.py and test_exercises_nbgrader.py)."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from metahpo_lib import exercises as ex

ROOT = Path(__file__).resolve().parents[1]

SOLVED = """def double(x):
    '''Twice x.'''
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION"""
TESTS = """from metahpo_lib import checks
checks.compare(double, lambda x: 2 * x, [("x=3", (3,), {})])
### BEGIN HIDDEN TESTS
assert double(-1) == -2
### END HIDDEN TESTS"""
SOLVED2 = """def square(x):
    ### BEGIN SOLUTION
    return x * x
    ### END SOLUTION"""
TESTS2 = """checks.compare(square, lambda x: x * x, [("x=3", (3,), {})])"""
SOLVED3 = """def cube(x):
    ### BEGIN SOLUTION
    return x ** 3
    ### END SOLUTION"""
TESTS3 = """### BEGIN HIDDEN TESTS
assert cube(2) == 8
### END HIDDEN TESTS"""


def _solution_nb():
    nb = new_notebook(cells=[new_markdown_cell("# Tiny"), new_code_cell(SOLVED), new_code_cell(TESTS),
                             new_code_cell(SOLVED2), new_code_cell(TESTS2), new_code_cell(SOLVED3),
                             new_code_cell(TESTS3)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture
def course(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(_solution_nb(), tmp_path / "solutions" / "01_tiny.ipynb")
    return tmp_path


def _gen(course, **kw):
    return ex.generate(course / "solutions", course / "exercises", log=lambda *a: None, **kw)


def test_strip_source_keeps_indentation_and_removes_hidden_tests():
    assert ex.strip_source(SOLVED) == "def double(x):\n    '''Twice x.'''\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert "assert double(-1)" not in ex.strip_source(TESTS) and "checks.compare" in ex.strip_source(TESTS)
    assert ex.strip_source("### BEGIN SOLUTION\nanswer\n### END SOLUTION", markdown=True) == "YOUR ANSWER HERE"


@pytest.mark.parametrize("bad, message", [
    ("### BEGIN SOLUTION\nx = 1", "missing '### END SOLUTION'"),
    ("x = 1\n### END SOLUTION", "without its BEGIN marker"),
    ("### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n### END SOLUTION", "inside an open block"),
])
def test_unbalanced_markers_are_reported(bad, message):
    with pytest.raises(ValueError, match=message):
        ex.strip_source(bad, where="nb, cell 3")


def test_generate_then_check(course):
    assert _gen(course, check=True) is False  # nothing generated yet
    assert _gen(course) is True
    out = nbformat.read(course / "exercises" / "01_tiny.ipynb", as_version=4)
    assert [c.id for c in out.cells] == [c.id for c in _solution_nb().cells] or len(out.cells) == 7
    assert all(c.outputs == [] and c.execution_count is None for c in out.cells if c.cell_type == "code")
    assert "BEGIN" not in "".join(c.source for c in out.cells)
    assert _gen(course, check=True) is True
    sol = nbformat.read(course / "solutions" / "01_tiny.ipynb", as_version=4)
    sol.cells[0].source = "# Tiny, revised"
    nbformat.write(sol, course / "solutions" / "01_tiny.ipynb")
    assert _gen(course, check=True) is False
    assert _gen(course) is True  # untouched by a learner: updated
    assert nbformat.read(course / "exercises" / "01_tiny.ipynb", as_version=4).cells[0].source == "# Tiny, revised"


def test_generate_never_overwrites_a_learners_work_unless_forced(course):
    _gen(course)
    target = course / "exercises" / "01_tiny.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("raise NotImplementedError()", "return x + x")
    nbformat.write(nb, target)
    learner_text = target.read_text()
    sol = nbformat.read(course / "solutions" / "01_tiny.ipynb", as_version=4)
    sol.cells[0].source = "# Tiny v2"
    nbformat.write(sol, course / "solutions" / "01_tiny.ipynb")
    messages = []
    ex.generate(course / "solutions", course / "exercises", log=messages.append)
    assert target.read_text() == learner_text and "you changed it" in messages[-1]
    ex.generate(course / "solutions", course / "exercises", force=True, log=messages.append)
    backups = list((course / "exercises" / "backups").glob("01_tiny-*.ipynb"))
    assert len(backups) == 1 and backups[0].read_text() == learner_text
    assert nbformat.read(backups[0], as_version=4).cells[1].source.endswith("return x + x")  # a notebook Jupyter opens
    assert "# Tiny v2" in target.read_text()


def test_grade_reports_passed_failed_not_attempted(course):
    _gen(course)
    target = course / "exercises" / "01_tiny.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("raise NotImplementedError()", "return x + x")  # right
    nb.cells[3].source = nb.cells[3].source.replace("raise NotImplementedError()", "return x + 1")  # wrong
    nbformat.write(nb, target)
    rows = ex.grade(target)
    assert [(r[0], r[1]) for r in rows] == [("double", "passed"), ("square", "failed"), ("cube", "not attempted")]
    assert "square: on x=3, the result is 4, expected 9" in rows[1][2]
    assert [(r.points, r.max_points) for r in rows] == [(1, 1), (0, 1), (0, 1)]


def test_grade_runs_hidden_tests(course):
    _gen(course)
    target = course / "exercises" / "01_tiny.ipynb"
    nb = nbformat.read(target, as_version=4)
    # passes the visible check (x = 3) but not the hidden one (x = -1)
    nb.cells[1].source = nb.cells[1].source.replace("raise NotImplementedError()", "return 6 if x == 3 else 0")
    nbformat.write(nb, target)
    assert ex.grade(target)[0][:2] == ("double", "failed")


def test_cli_errors(tmp_path, capsys):
    assert ex.main(["grade", str(tmp_path / "nope.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ex.main(["generate", "--solutions", str(tmp_path / "none")]) == 2


def test_repository_exercises_are_in_step_with_solutions():
    assert ex.generate(ROOT / "solutions", ROOT / "exercises", check=True, log=lambda *a: None)


@pytest.mark.parametrize("path", sorted((ROOT / "exercises").glob("*.ipynb")), ids=lambda p: p.name)
def test_unsolved_exercises_fail_only_with_not_implemented_at_exercise_cells(path):
    solution = nbformat.read(ROOT / "solutions" / path.name, as_version=4)
    allowed = {i for e in ex.exercises_of(solution) for i in [e.cell, *e.tests]}
    ran = ex.execute(nbformat.read(path, as_version=4), path.parent)
    failing = [(i, name) for i, c in enumerate(ran.cells) if c.cell_type == "code" for name, _ in ex.cell_errors(c)]
    assert failing, "an unsolved exercise notebook should raise NotImplementedError somewhere"
    assert all(name in ("NotImplementedError", "ExerciseNotWritten") for _, name in failing), failing
    assert all(i in allowed for i, _ in failing), failing

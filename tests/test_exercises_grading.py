"""Issue 15, "Grading a class of 40": one test per defect of grading a single notebook (1-4, 8, 11) and of the
learner's workflow (5-7). Tiny notebooks with plain asserts (no torch import), so each grade takes seconds."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from metahpo_lib import exercises as ex

ROOT = Path(__file__).resolve().parents[1]
SECRET = "HIDDEN_SECRET_4711"


def _ex(name, body):
    return f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"


def _course(tmp_path, cells, name="01_tiny.ipynb"):
    nb = new_notebook(cells=[new_markdown_cell("# Tiny")] + [new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "solutions").mkdir(exist_ok=True)
    nbformat.write(nb, tmp_path / "solutions" / name)
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", log=lambda *a: None)
    return tmp_path / "exercises" / name


def _answer(path, index, old, new, out=None):
    nb = nbformat.read(path, as_version=4)
    nb.cells[index].source = nb.cells[index].source.replace(old, new)
    nbformat.write(nb, out or path)
    return out or path


STUB = "raise NotImplementedError()"
HIDDEN = f"### BEGIN HIDDEN TESTS\nassert {{f}}(5) == {{v}}, '{SECRET}'\n### END HIDDEN TESTS"
THREE = [_ex("loop", "return x + 1"), "assert loop(1) == 2\n" + HIDDEN.format(f="loop", v=6),
         _ex("crash", "return x + 2"), "assert crash(1) == 3\n" + HIDDEN.format(f="crash", v=7),
         _ex("fine", "return x + 3"), "assert fine(1) == 4\n" + HIDDEN.format(f="fine", v=8)]


def test_defect_1_timeout_and_dead_kernel_are_recorded_and_grading_goes_on(tmp_path, capsys):
    path = _course(tmp_path, THREE)
    _answer(path, 1, STUB, "while True:\n        pass")
    _answer(path, 3, STUB, "import os\n    os._exit(1)")
    _answer(path, 5, STUB, "return x + 3")
    assert ex.main(["grade", str(path), "--timeout", "3"]) == 1
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    rows = ex.grade(path, timeout=3)
    assert [(r.exercise, r.status) for r in rows] == [("loop", "failed"), ("crash", "failed"), ("fine", "passed")]
    assert rows[0].message.startswith("timed out") and "kernel died" in rows[1].message
    assert rows[2].points == 1 and not any(SECRET in r.message for r in rows)


def test_defect_1_a_failing_hidden_test_does_not_show_its_source(tmp_path):
    path = _answer(_course(tmp_path, THREE[4:]), 1, STUB, "return 4 if x == 1 else 0")
    (row,) = ex.grade(path)
    assert row.status == "failed" and SECRET in row.message  # the teacher's own message is shown ...
    assert "assert fine(5)" not in row.message                 # ... the test's source is not


def test_defect_2_an_answer_in_a_new_cell_counts(tmp_path):
    path = _course(tmp_path, THREE[4:])
    nb = nbformat.read(path, as_version=4)
    nb.cells[1] = new_code_cell("# my own cell\ndef fine(x):\n    return x + 3")  # the exercise cell replaced
    nbformat.write(nb, path)
    assert ex.grade(path)[0][:2] == ("fine", "passed")


def test_defect_3_notebooks_without_cell_ids(tmp_path):
    path = _answer(_course(tmp_path, THREE[4:]), 1, STUB, "return x + 3")
    data = json.loads(path.read_text())
    data["nbformat_minor"] = 4
    for cell in data["cells"]:
        cell.pop("id", None)
        cell["metadata"].pop("nbgrader", None)  # an older tool dropped the metadata too: matched by source
    path.write_text(json.dumps(data))
    assert ex.grade(path)[0][:2] == ("fine", "passed")


def test_defect_4_plain_assert_test_cells_count(tmp_path):
    path = _course(tmp_path, [_ex("inc", "return x + 1"), "assert inc(1) == 2"])
    _answer(path, 1, STUB, "return x")
    assert ex.grade(path)[0][:2] == ("inc", "failed")


def test_defect_8_depends_on_and_keep_the_function_name(tmp_path):
    cells = [_ex("double", "return 2 * x"), "assert double(2) == 4",
             _ex("quadruple", "return double(double(x))"), "assert quadruple(1) == 4"]
    path = _answer(_course(tmp_path, cells), 3, STUB, "return double(double(x))")
    rows = ex.grade(path)
    assert rows[0].status == "not attempted"
    assert rows[1].status == "failed" and "depends on exercise 1 (double)" in rows[1].message
    renamed = _answer(path, 1, f"def double(x):\n    # YOUR CODE HERE\n    {STUB}", "def twice(x):\n    return 2 * x")
    rows = ex.grade(renamed)
    assert "keep the function name" in rows[0].message and "twice" in rows[0].message
    assert "depends on exercise 1 (double)" in rows[1].message


def test_defect_8_a_renamed_submission_finds_its_solution(tmp_path):
    path = _answer(_course(tmp_path, THREE[4:]), 1, STUB, "return x + 3")
    (tmp_path / "inbox").mkdir()
    renamed = tmp_path / "inbox" / "01_tiny-alice.ipynb"
    renamed.write_bytes(path.read_bytes())
    assert ex.grade(renamed, tmp_path / "solutions")[0][:2] == ("fine", "passed")


def test_defect_11_calling_a_reference_answer_fails(tmp_path):
    path = _answer(_course(tmp_path, THREE[4:]), 1, STUB,
                   "from metahpo_lib.checks import ch01\n    return ch01.ref_fine(x)")
    (row,) = ex.grade(path)
    assert row.status == "failed" and "reference answer" in row.message and row.points == 0


def test_grading_runs_in_a_temporary_folder_under_limits(tmp_path):
    cells = [_ex("where", "return x"), "assert where(1) == 1",
             _ex("greedy", "return x"), "assert greedy(1) == 1"]
    path = _course(tmp_path, cells)
    _answer(path, 1, STUB, "import os\n    open('marker.txt', 'w').write(os.getcwd())\n    return x")
    _answer(path, 3, STUB, "big = bytearray(2 ** 33)\n    return x")  # 8 GiB: past the memory limit
    rows = ex.grade(path, limits=ex.Limits(memory_mb=2048))
    assert rows[0].status == "passed" and not (path.parent / "marker.txt").exists()
    assert rows[1].status == "failed" and "MemoryError" in rows[1].message


def test_defect_5_force_name_touches_only_that_notebook_and_backups_open_in_jupyter(tmp_path):
    for name in ["01_a.ipynb", "02_b.ipynb"]:
        _course(tmp_path, THREE[4:], name)
    a, b = tmp_path / "exercises" / "01_a.ipynb", tmp_path / "exercises" / "02_b.ipynb"
    for path in (a, b):
        _answer(path, 1, STUB, "return x + 3")
    before = {p: p.read_text() for p in (a, b)}
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", force=True, log=lambda *x: None)
    assert {p: p.read_text() for p in (a, b)} == before  # no solution changed: nothing reset, even forced
    for name in ["01_a.ipynb", "02_b.ipynb"]:
        _answer(tmp_path / "solutions" / name, 0, "# Tiny", "# Tiny v2")
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", force=True, names=["01_a"], log=lambda *x: None)
    assert "# Tiny v2" in a.read_text() and b.read_text() == before[b]
    (backup,) = (tmp_path / "exercises" / "backups").iterdir()
    assert backup.suffix == ".ipynb" and backup.read_text() == before[a]


def test_defect_6_learners_work_on_an_ignored_copy(tmp_path):
    path = _course(tmp_path, THREE[4:])
    work = tmp_path / "work"
    assert ex.start(tmp_path / "exercises", work, log=lambda *x: None)
    _answer(work / path.name, 1, STUB, "return x + 3")
    assert ex.generate(tmp_path / "solutions", tmp_path / "exercises", check=True, log=lambda *x: None)
    _answer(tmp_path / "solutions" / path.name, 0, "# Tiny", "# Tiny v2")  # the teacher's update
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", log=lambda *x: None)
    messages = []
    ex.start(tmp_path / "exercises", work, log=messages.append)
    assert "kept" in messages[0] and "return x + 3" in (work / path.name).read_text()
    assert "/work/" in (ROOT / ".gitignore").read_text().split()


def test_defect_7_a_metadata_change_reaches_the_exercises(tmp_path):
    path = _course(tmp_path, THREE[4:])
    sol = tmp_path / "solutions" / path.name
    nb = nbformat.read(sol, as_version=4)
    nb.cells[2].metadata["nbgrader"]["points"] = 5.0
    nbformat.write(nb, sol)
    assert not ex.generate(tmp_path / "solutions", tmp_path / "exercises", check=True, log=lambda *x: None)
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", log=lambda *x: None)
    assert nbformat.read(path, as_version=4).cells[2].metadata["nbgrader"]["points"] == 5.0


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_solutions_carry_nbgrader_metadata_and_points(path):
    nb = nbformat.read(path, as_version=4)
    exercises = ex.exercises_of(nb)
    assert exercises and all(e.max_points > 0 for e in exercises)
    for e in exercises:
        assert nb.cells[e.cell].metadata["nbgrader"]["solution"] is True
        assert all(nb.cells[i].metadata["nbgrader"]["grade"] and nb.cells[i].metadata["nbgrader"]["locked"]
                   for i in e.tests)

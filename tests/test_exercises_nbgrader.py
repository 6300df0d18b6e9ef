"""Issue 15, defect 9: nbgrader's own ``generate_assignment`` and ``autograde`` work on ``solutions/`` and give
the same points as ``metahpo-exercises grade``, for every chapter (a submission made from ``exercises/`` with
the first exercise right, the second wrong, the rest unsolved). About 30 s per chapter."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from metahpo_lib import exercises as ex

pytest.importorskip("nbgrader")
ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
STUB = "raise NotImplementedError()"


def _submission(name: str):
    """The exercise notebook with exercise 1 answered as in the solution, exercise 2 answered wrongly."""
    solution = nbformat.read(ROOT / "solutions" / name, as_version=4)
    nb = nbformat.read(ROOT / "exercises" / name, as_version=4)
    first, second = ex.exercises_of(solution)[:2]
    nb.cells[first.cell].source = "\n".join(line for line in solution.cells[first.cell].source.splitlines()
                                            if line.strip() not in (ex.BEGIN_SOLUTION, ex.END_SOLUTION))
    nb.cells[second.cell].source = nb.cells[second.cell].source.replace(STUB, "return None")
    return nb


def _nbgrader(root: Path, *args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force", f"--CourseDirectory.root={root}"],
                          capture_output=True, text=True, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def autograded(tmp_path_factory):
    """{notebook name: {grade id: points}} from nbgrader, the course in a temporary folder."""
    from nbgrader.api import Gradebook

    root = tmp_path_factory.mktemp("nbgrader")
    assignments = {p.name: p.stem[:2] for p in CHAPTERS}
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.db_students = [dict(id='alice')]\n"
        f"c.CourseDirectory.db_assignments = {[dict(name='ch' + a) for a in assignments.values()]!r}\n"
        "c.ExecutePreprocessor.timeout = 300\n")
    for name, chapter in assignments.items():
        for folder in (root / "source" / f"ch{chapter}", root / "submitted" / "alice" / f"ch{chapter}"):
            folder.mkdir(parents=True)
        (root / "source" / f"ch{chapter}" / name).write_bytes((ROOT / "solutions" / name).read_bytes())
        nbformat.write(_submission(name), root / "submitted" / "alice" / f"ch{chapter}" / name)
        _nbgrader(root, "generate_assignment", f"ch{chapter}")
        _nbgrader(root, "autograde", f"ch{chapter}")
    out = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for name, chapter in assignments.items():
            sub = gb.find_submission_notebook(Path(name).stem, f"ch{chapter}", "alice")
            out[name] = {g.name: (g.score, g.max_score) for g in sub.grades}
    return root, out


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_nbgrader_and_metahpo_grade_agree(autograded, path):
    root, grades = autograded
    submitted = root / "submitted" / "alice" / f"ch{path.stem[:2]}" / path.name
    ours = ex.grade(submitted, ROOT / "solutions", timeout=300)
    exercises = ex.exercises_of(nbformat.read(path, as_version=4))
    theirs = {e.name: sum(grades[path.name][t][0] for t in e.test_ids) for e in exercises}
    assert {r.exercise: r.points for r in ours} == theirs
    assert {r.exercise: r.max_points for r in ours} == {e.name: sum(grades[path.name][t][1] for t in e.test_ids)
                                                        for e in exercises}
    assert ours[0].status == "passed" and ours[0].points > 0 and ours[1].status == "failed"

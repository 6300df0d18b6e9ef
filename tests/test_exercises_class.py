"""Issue 15, defects 10 and 11: a class graded in batch (parallel processes, points, CSV, JSON, summary) and a
student bundle without solutions, hidden tests or importable reference answers."""

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from metahpo_lib import exercises as ex

ROOT = Path(__file__).resolve().parents[1]
STUB = "raise NotImplementedError()"


@pytest.fixture
def klass(tmp_path):
    """solutions/01_tiny.ipynb (two exercises, 2 + 3 points) and submitted/<student>/ for three students."""
    sol = new_notebook(cells=[new_code_cell("def inc(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
                              new_code_cell("assert inc(1) == 2"),
                              new_code_cell("def dec(x):\n    ### BEGIN SOLUTION\n    return x - 1\n    ### END SOLUTION"),
                              new_code_cell("assert dec(1) == 0")])
    (tmp_path / "solutions").mkdir()
    nbformat.write(sol, tmp_path / "solutions" / "01_tiny.ipynb")
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", log=lambda *a: None)
    sol = nbformat.read(tmp_path / "solutions" / "01_tiny.ipynb", as_version=4)
    sol.cells[3].metadata["nbgrader"]["points"] = 3.0
    nbformat.write(sol, tmp_path / "solutions" / "01_tiny.ipynb")
    ex.generate(tmp_path / "solutions", tmp_path / "exercises", log=lambda *a: None)
    for student, answers in {"ann": ("x + 1", "x - 1"), "ben": ("x + 1", "x"), "cat": (None, None)}.items():
        nb = nbformat.read(tmp_path / "exercises" / "01_tiny.ipynb", as_version=4)
        for cell, answer in zip((0, 2), answers):
            if answer:
                nb.cells[cell].source = nb.cells[cell].source.replace(STUB, f"return {answer}")
        (tmp_path / "submitted" / student).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "submitted" / student / "01_tiny.ipynb")
    return tmp_path


def test_defect_10_batch_grading_writes_csv_json_and_a_summary(klass, capsys):
    code = ex.main(["grade", str(klass / "submitted"), "--solutions", str(klass / "solutions"), "--jobs", "2",
                    "--csv", str(klass / "grades.csv"), "--json", str(klass / "grades.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "exercise  passed  failed  not attempted  mean points" in out and "3 notebooks graded" in out
    rows = list(csv.DictReader(open(klass / "grades.csv")))
    assert list(rows[0]) == ex.COLUMNS
    got = {(r["student"], r["exercise"]): (r["status"], r["points"], r["max_points"]) for r in rows}
    assert got == {("ann", "inc"): ("passed", "1", "1"), ("ann", "dec"): ("passed", "3", "3"),
                   ("ben", "inc"): ("passed", "1", "1"), ("ben", "dec"): ("failed", "0", "3"),
                   ("cat", "inc"): ("not attempted", "0", "1"), ("cat", "dec"): ("not attempted", "0", "3")}
    totals = json.loads((klass / "grades.json").read_text())["totals"]
    assert totals == {"ann": {"points": 4.0, "max_points": 4.0}, "ben": {"points": 1.0, "max_points": 4.0},
                      "cat": {"points": 0.0, "max_points": 4.0}}


def test_batch_records_a_broken_submission_and_goes_on(klass):
    (klass / "submitted" / "dan").mkdir()
    (klass / "submitted" / "dan" / "01_tiny.ipynb").write_text("not a notebook")
    rows = ex.grade_many([klass / "submitted" / "dan", klass / "submitted" / "ann"], klass / "solutions", jobs=2)
    assert [r["status"] for r in rows] == ["error", "passed", "passed"]
    assert "not a readable notebook" in rows[0]["message"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return ex.release(tmp_path_factory.mktemp("rel") / "bundle", ROOT / "exercises",
                      notebooks_dir=ROOT / "notebooks", log=lambda *a: None)


def test_defect_11_the_bundle_has_no_solutions_hidden_tests_or_reference_answers(bundle):
    assert not (bundle / "solutions").exists() and sorted(p.name for p in (bundle / "exercises").iterdir())
    for nb in (bundle / "exercises").glob("*.ipynb"):
        assert "BEGIN SOLUTION" not in nb.read_text() and "HIDDEN TESTS" not in nb.read_text()
    ch01 = (bundle / "metahpo_lib" / "checks" / "ch01.py").read_text()
    assert "torch.linalg.solve" not in ch01 and "def ref_ridge_closed_form(*args, **kwargs):" in ch01
    stored = pickle.loads((bundle / "metahpo_lib" / "checks" / "recorded.pkl").read_bytes())
    assert any(k.startswith("metahpo_lib.checks.ch06.maml_task_loss") for k in stored)


def test_the_bundles_self_checks_compare_with_stored_results(bundle):
    code = """
import torch
from metahpo_lib.checks import ch01
import metahpo_lib
assert metahpo_lib.__file__.startswith(%r), metahpo_lib.__file__
def ridge_closed_form(X, y, alpha):
    n, d = X.shape
    return torch.linalg.solve(X.T @ X / n + torch.diag(torch.as_tensor(alpha, dtype=X.dtype).expand(d)), X.T @ y / n)
ch01.ridge_closed_form(ridge_closed_form)
try:
    ch01.ridge_closed_form(lambda X, y, alpha: torch.zeros(X.shape[1], dtype=X.dtype))
except AssertionError as e:
    print("wrong answer:", e)
try:
    ch01.ref_ridge_closed_form(None, None, 1.0)
except NotImplementedError:
    print("no reference")
""" % str(bundle)
    env = dict(os.environ, PYTHONPATH=str(bundle))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=bundle)
    assert done.returncode == 0, done.stderr
    assert "✔ ridge_closed_form matches" in done.stdout and "wrong answer: <lambda>: on n=40" in done.stdout
    assert "no reference" in done.stdout

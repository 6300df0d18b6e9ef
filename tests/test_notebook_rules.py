"""Notebook rules (CONTRIBUTING.md): lectures and solutions are committed executed top to
bottom with their outputs; exercises are committed with outputs cleared and no answers."""

import re
from pathlib import Path

import nbformat
import pytest

from metahpo_lib.exercises import exercises_of

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_executed_in_order_without_errors(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert NAME.match(path.name), f"{path.name}: name notebooks NN_snake_case.ipynb"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: re-run it top to bottom (counts {counts})"
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: cells {errors} end in an error"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_exercises_cleared_and_without_answers(path):
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        assert "### BEGIN" not in c.source and "### END" not in c.source
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


def test_every_chapter_has_lecture_solution_exercise():
    lectures = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    solutions = {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    assert "00_start_here.ipynb" in lectures
    assert solutions <= lectures, f"solutions without a lecture: {solutions - lectures}"
    assert {p.name for p in EXERCISES} == solutions


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_each_solution_has_graded_exercises(path):
    found = exercises_of(nbformat.read(path, as_version=4))
    assert len(found) >= 2, f"{path.name}: at least two exercises"
    assert all(e.test_ids for e in found), f"{path.name}: every exercise needs a check cell: {found}"

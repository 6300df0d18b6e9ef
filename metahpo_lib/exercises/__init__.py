"""Exercise notebooks: generate them from the solutions, work on a copy, grade one notebook or a class,
release a student bundle (notebook 00, "How the exercises work"; README, "Exercises, for learners and
teachers").

Markers (nbgrader's), written once in ``solutions/NN_*.ipynb``:

- ``### BEGIN SOLUTION`` ... ``### END SOLUTION``: replaced in the student copy by
  ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (same indentation);
- ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``: removed from the student copy.

An *exercise* is a code cell holding a solution block, keyed by its function name; its *tests* are the
code cells after it that call ``checks.``, hold hidden tests or an ``assert``, or that nbgrader marks as
graded, up to the next exercise. Their nbgrader ``points`` are the exercise's points.

Modules: ``notebooks`` (markers, exercises, nbgrader metadata), ``generation`` (generate, start),
``kernel`` and ``running`` (a limited kernel, timeouts, dead kernels), ``grading`` (one notebook),
``batch`` (a class), ``release`` (a student bundle), ``cli``. Command line (``metahpo-exercises``)::

    metahpo-exercises generate [--check] [--force] [NAME ...]
    metahpo-exercises start [--force] [NAME ...]
    metahpo-exercises grade exercises/01_bilevel_hpo.ipynb [--timeout 60]
    metahpo-exercises grade submitted/ --jobs 2 --csv grades.csv --json grades.json
    metahpo-exercises release bundle/
"""

from .batch import COLUMNS, grade_many, submissions, summary, timed, write_results
from .cli import main
from .generation import backup, generate, learner_edited, start, student_notebook, sync
from .grading import FAILED, NOT_ATTEMPTED, PASSED, Grade, grade, print_grades
from .kernel import SandboxKernelManager, kernel_env
from .sandbox import Limits, apply_limits
from .notebooks import (BEGIN_HIDDEN, BEGIN_SOLUTION, CODE_STUB, END_HIDDEN, END_SOLUTION, TEXT_STUB, Exercise,
                        chapter_of, content_hash, defined_functions, exercises_of, is_test_cell, parse_cell,
                        solution_for, stable_metadata, strip_source, with_nbgrader_metadata)
from .release import release, without_references
from .running import cell_errors, run_cells

__all__ = ["COLUMNS", "grade_many", "submissions", "summary", "timed", "write_results", "main", "backup", "generate",
           "learner_edited", "start", "student_notebook", "sync", "FAILED", "NOT_ATTEMPTED", "PASSED", "Grade",
           "grade", "print_grades", "Limits", "SandboxKernelManager", "apply_limits", "kernel_env", "BEGIN_HIDDEN",
           "BEGIN_SOLUTION", "CODE_STUB", "END_HIDDEN", "END_SOLUTION", "TEXT_STUB", "Exercise", "chapter_of",
           "content_hash", "defined_functions", "exercises_of", "is_test_cell", "parse_cell", "solution_for",
           "stable_metadata", "strip_source", "with_nbgrader_metadata", "release", "without_references",
           "cell_errors", "run_cells", "execute"]


def execute(nb, cwd, timeout: int = 600):
    r"""Run every cell of ``nb`` in a fresh kernel (working directory ``cwd``), going on after errors;
    returns the run copy (see :func:`run_cells` for the statuses). Starting the kernel takes about a second.

    >>> import nbformat, tempfile
    >>> from metahpo_lib import exercises
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)"),
    ...                                      nbformat.v4.new_code_cell("1 / 0")])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ran = exercises.execute(nb, tmp, timeout=60)
    >>> ran.cells[0].outputs[0].text, exercises.cell_errors(ran.cells[1])
    ('42\n', [('ZeroDivisionError', 'division by zero')])
    """
    return run_cells(nb, cwd, timeout=timeout)[0]

"""The ``metahpo-exercises`` command line."""

from __future__ import annotations

import argparse
import sys

from .batch import grade_many, summary, timed, write_results
from .generation import generate, start
from .grading import PASSED, grade, print_grades
from .sandbox import Limits
from .release import release

DESCRIPTION = "metahpo exercises: generate them from solutions/, work on a copy, grade one or a class, release"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metahpo-exercises", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write exercises/ (and nbgrader metadata into solutions/) from solutions/")
    g.add_argument("names", nargs="*", help="only these notebooks (file name, stem or chapter number)")
    g.add_argument("--solutions", default="solutions")
    g.add_argument("--exercises", default="exercises")
    g.add_argument("--check", action="store_true", help="write nothing; fail if anything is out of step")
    g.add_argument("--force", action="store_true", help="replace changed notebooks whose solution changed "
                   "(only NAMES when given); yours go to exercises/backups/")
    s = sub.add_parser("start", help="copy the exercises into your work folder (git-ignored), or update it")
    s.add_argument("names", nargs="*")
    s.add_argument("--exercises", default="exercises")
    s.add_argument("--work", default="work")
    s.add_argument("--force", action="store_true", help="replace your changed NAMES by the new version "
                   "(yours go to work/backups/)")
    r = sub.add_parser("grade", help="grade one notebook, or many (files, folders, submitted/<student>/)")
    r.add_argument("paths", nargs="+")
    r.add_argument("--solutions", default=None, help="folder of solution notebooks (default: ../solutions)")
    r.add_argument("--timeout", type=int, default=60, help="seconds per cell before it is stopped (default 60)")
    r.add_argument("--jobs", type=int, default=2, help="parallel processes for many notebooks (default 2)")
    r.add_argument("--memory-mb", type=int, default=Limits.memory_mb, help="kernel address-space limit")
    r.add_argument("--cpu-seconds", type=int, default=Limits.cpu_seconds, help="kernel CPU-time limit")
    r.add_argument("--csv", default=None, help="write one row per student and exercise here")
    r.add_argument("--json", default=None, help="write the rows and each student's total here")
    e = sub.add_parser("release", help="write a student bundle without solutions or reference answers")
    e.add_argument("out")
    e.add_argument("--exercises", default="exercises")
    e.add_argument("--notebooks", default="notebooks")
    return parser


def _grade(args) -> int:
    if args.timeout < 1:
        raise ValueError(f"--timeout must be at least 1 second, got {args.timeout}")
    limits = Limits(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds)
    single = len(args.paths) == 1 and args.paths[0].endswith(".ipynb") and not (args.csv or args.json)
    if single:
        rows = grade(args.paths[0], args.solutions, timeout=args.timeout, limits=limits)
        print_grades(rows)
        return 0 if all(r.status == PASSED for r in rows) else 1
    rows, seconds = timed(grade_many, args.paths, args.solutions or "solutions", jobs=args.jobs,
                          timeout=args.timeout, limits=limits,
                          progress=lambda rs: print(f"graded {rs[0]['student']}: {rs[0]['notebook']}", flush=True))
    write_results(rows, args.csv, args.json)
    if rows:
        print("\n" + summary(rows))
    print(f"{len({(r['student'], r['notebook']) for r in rows})} notebooks graded in {seconds:.0f} s"
          + "".join(f"; {k} written to {v}" for k, v in [("CSV", args.csv), ("JSON", args.json)] if v))
    return 0


def main(argv=None) -> int:
    """The ``metahpo-exercises`` command line: ``generate``, ``start``, ``grade``, ``release`` (``-h`` for
    each); returns the exit status: 0 all well, 1 out of step or not all exercises passed, 2 a bad
    argument, a missing notebook or folder.

    >>> import tempfile
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     exercises.main(["grade", f"{tmp}/missing.ipynb"])       # the error goes to stderr
    2
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            return 0 if generate(args.solutions, args.exercises, force=args.force, check=args.check,
                                 names=args.names) else 1
        if args.command == "start":
            return 0 if start(args.exercises, args.work, force=args.force, names=args.names) else 1
        if args.command == "release":
            release(args.out, args.exercises, notebooks_dir=args.notebooks)
            return 0
        return _grade(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

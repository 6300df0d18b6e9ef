"""Grade a class: many notebooks, or a ``submitted/<student>/`` tree, in parallel processes; a CSV, a JSON
and a short summary table."""

from __future__ import annotations

import csv
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .sandbox import Limits
from .notebooks import chapter_of

COLUMNS = ["student", "notebook", "exercise", "status", "points", "max_points", "message"]


def submissions(paths) -> list[tuple[str, Path]]:
    """``(student, notebook)`` for each path: a notebook file (the student is its name without the
    chapter's, e.g. ``01_bilevel_hpo-alice.ipynb`` -> ``alice``, else its folder's name) or a folder
    (each ``*.ipynb`` below it; the student is the first folder below it, else the file's stem).

    >>> import tempfile, pathlib
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = pathlib.Path(tmp) / "submitted"
    ...     for who in ["bob", "alice"]:
    ...         (root / who).mkdir(parents=True)
    ...         _ = (root / who / "01_bilevel_hpo.ipynb").write_text("{}")
    ...     [(s, p.name) for s, p in exercises.submissions([root])]
    [('alice', '01_bilevel_hpo.ipynb'), ('bob', '01_bilevel_hpo.ipynb')]
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            for nb in sorted(path.rglob("*.ipynb")):
                rel = nb.relative_to(path)
                if ".ipynb_checkpoints" not in rel.parts and "backups" not in rel.parts[:-1]:
                    found.append((rel.parts[0] if len(rel.parts) > 1 else nb.stem, nb))
        elif path.is_file():
            rest = path.stem.split("-", 1)[1] if chapter_of(path) and "-" in path.stem else ""
            found.append((rest or path.parent.name or path.stem, path))
        else:
            raise ValueError(f"paths: {str(path)!r} is neither a notebook nor a folder")
    return found


def _grade_one(job) -> list[dict]:
    from .grading import grade

    student, path, solutions_dir, timeout, limits, threads = job
    base = {"student": student, "notebook": path.name}
    try:
        rows = grade(path, solutions_dir, timeout=timeout, limits=limits, threads=threads)
    except Exception as e:  # one broken submission must not stop the class
        return [{**base, "exercise": "", "status": "error", "points": 0.0, "max_points": 0.0,
                 "message": f"{type(e).__name__}: {e}"[:300]}]
    return [{**base, **r._asdict()} for r in rows]


def grade_many(paths, solutions_dir="solutions", *, jobs: int = 2, timeout: int = 60,
               limits: Limits | None = None, progress=None) -> list[dict]:
    """Grade every submission of :func:`submissions` in ``jobs`` parallel processes (each kernel with
    one thread per job); returns one dict per student and exercise with the keys of :data:`COLUMNS`.
    ``progress`` is called with each finished submission's rows.

    >>> import tempfile
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     exercises.grade_many([tmp])          # an empty folder: nothing to grade
    []
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    todo = [(s, p, solutions_dir, timeout, limits or Limits(), 1 if jobs > 1 else None) for s, p in submissions(paths)]
    if not todo:
        return []
    out = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
        for rows in pool.map(_grade_one, todo):
            out += rows
            if progress:
                progress(rows)
    return out


def write_results(rows, csv_path=None, json_path=None) -> None:
    """Write rows of :func:`grade_many` to a CSV (:data:`COLUMNS`) and a JSON (the rows, and each
    student's total).

    >>> import tempfile, pathlib
    >>> from metahpo_lib import exercises
    >>> rows = [dict(student="alice", notebook="01_x.ipynb", exercise="f", status="passed", points=2.0,
    ...              max_points=2.0, message="")]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     exercises.write_results(rows, pathlib.Path(tmp) / "g.csv", pathlib.Path(tmp) / "g.json")
    ...     print((pathlib.Path(tmp) / "g.csv").read_text().splitlines()[1])
    alice,01_x.ipynb,f,passed,2,2,
    """
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows({**r, "points": f"{r['points']:g}", "max_points": f"{r['max_points']:g}"} for r in rows)
    if json_path:
        totals = {}
        for r in rows:
            t = totals.setdefault(r["student"], {"points": 0.0, "max_points": 0.0})
            t["points"] += r["points"]
            t["max_points"] += r["max_points"]
        Path(json_path).write_text(json.dumps({"rows": rows, "totals": totals}, indent=1) + "\n")


def summary(rows) -> str:
    """A short table: per exercise how many passed / failed / were not attempted and the mean points, then
    the students' totals (lowest, median, highest).

    >>> from metahpo_lib import exercises
    >>> rows = [dict(student=s, notebook="01_x.ipynb", exercise="f", status=st, points=p, max_points=2.0, message="")
    ...         for s, st, p in [("a", "passed", 2.0), ("b", "failed", 0.0)]]
    >>> print(exercises.summary(rows))
    exercise  passed  failed  not attempted  mean points
    f              1       1              0       1.00/2
    2 students: total points lowest 0, median 1, highest 2 (of 2)
    """
    names = list(dict.fromkeys(r["exercise"] for r in rows))
    width = max([len(n) for n in names] + [8])
    lines = [f"{'exercise':<{width}}  passed  failed  not attempted  mean points"]
    for name in names:
        sub = [r for r in rows if r["exercise"] == name]
        count = {s: sum(r["status"] == s for r in sub) for s in ("passed", "failed", "not attempted")}
        mean = statistics.fmean(r["points"] for r in sub)
        lines.append(f"{name or '(error)':<{width}}  {count['passed']:>6}  {count['failed']:>6}  "
                     f"{count['not attempted']:>13}  {mean:>7.2f}/{max(r['max_points'] for r in sub):g}")
    totals = {}
    for r in rows:
        totals[r["student"]] = totals.get(r["student"], 0.0) + r["points"]
    most = max(sum(r["max_points"] for r in rows if r["student"] == s) for s in totals)
    t = sorted(totals.values())
    lines.append(f"{len(t)} students: total points lowest {t[0]:g}, median {statistics.median(t):g}, "
                 f"highest {t[-1]:g} (of {most:g})")
    return "\n".join(lines)


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call.

    >>> from metahpo_lib import exercises
    >>> result, seconds = exercises.timed(sum, [1, 2, 3])
    >>> result, seconds >= 0
    (6, True)
    """
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start

"""Write ``exercises/`` from ``solutions/`` and copy exercises into a learner's work folder, never
destroying a learner's changes (notebook 00, "How the exercises work")."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import nbformat

from .notebooks import content_hash, exercises_of, strip_source, with_nbgrader_metadata


#: the cell tag that lets Jupyter's Run All go on after the cell raises (JupyterLab, nbval)
RAISES_EXCEPTION = "raises-exception"


def student_notebook(solution, name: str = "notebook"):
    r"""The exercise notebook for a solution notebook: nbgrader metadata added, solutions stubbed, hidden
    tests removed, outputs cleared, test cells locked in Jupyter, with a generation record in
    ``metadata["metahpo"]`` (see :func:`learner_edited`).

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
    >>> nb.metadata["metahpo"]["generated_from"], nb.cells[1].metadata["nbgrader"]["grade_id"]
    ('solutions/01_demo.ipynb', 'test_double')
    >>> nb.cells[1].metadata["tags"]
    ['raises-exception']
    """
    nb = with_nbgrader_metadata(solution)
    tests = {i for ex in exercises_of(nb) for i in ex.tests}
    for i, cell in enumerate(nb.cells):
        where = f"{name}, cell {i}"
        if cell.cell_type in ("code", "markdown"):
            cell.source = strip_source(cell.source, markdown=cell.cell_type == "markdown", where=where)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        if i in tests:  # locked; and Run All goes on past a failing check to show every exercise's state
            cell.metadata.update(editable=False, deletable=False)
            cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {RAISES_EXCEPTION})
    nb.metadata["metahpo"] = {"generated_from": f"solutions/{name}", "source_hash": content_hash(nb)}
    return nb


def learner_edited(nb) -> bool:
    """True when a generated exercise notebook's content differs from what was generated
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


def _recorded(nb) -> str | None:
    return nb.metadata.get("metahpo", {}).get("source_hash")


def _selected(path: Path, names) -> bool:
    return not names or any(n in (path.name, path.stem) or path.name.startswith(f"{n}_") for n in names)


def backup(target, folder=None) -> Path:
    """Copy a notebook to ``folder`` (default: ``backups/`` next to it) as ``NAME-YYYYmmdd-HHMMSS.ipynb``,
    a notebook Jupyter opens; returns the copy's path.

    >>> import tempfile, pathlib
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     nb = pathlib.Path(tmp) / "01_demo.ipynb"
    ...     _ = nb.write_text("{}")
    ...     copy = exercises.backup(nb)
    ...     copy.parent.name, copy.suffix, copy.read_text()
    ('backups', '.ipynb', '{}')
    """
    target = Path(target)
    folder = Path(folder) if folder else target.parent / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    out = folder / f"{target.stem}-{stamp}.ipynb"
    while out.exists():
        n += 1
        out = folder / f"{target.stem}-{stamp}-{n}.ipynb"
    out.write_bytes(target.read_bytes())
    return out


def sync(notebooks: dict, folder, *, force: bool = False, check: bool = False, names=(), log=print) -> bool:
    """Bring ``folder`` in step with ``notebooks`` (file name -> generated notebook): write missing and
    outdated notebooks, keep those a learner changed (``force`` backs them up to ``folder/backups/`` and
    replaces them, for the notebooks named in ``names`` or all when empty). A notebook whose source did not
    change is up to date, edited or not. With ``check``, write nothing and return False when anything is
    missing, outdated or changed by hand.

    >>> import tempfile, nbformat
    >>> from metahpo_lib import exercises
    >>> nb = exercises.student_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     exercises.sync({"01_demo.ipynb": nb}, tmp, log=lambda line: print(line.split()[0]))
    written
    True
    """
    folder, ok = Path(folder), True
    for name, new in sorted(notebooks.items()):
        target = folder / name
        if not _selected(target, names):
            continue
        old = nbformat.read(target, as_version=4) if target.exists() else None
        edited = old is not None and learner_edited(old)
        if old is not None and _recorded(old) == _recorded(new):
            if check and edited:
                ok = False
                log(f"CHANGED BY HAND  {target}  (learners work on a copy: metahpo-exercises start)")
            else:
                log(f"up to date   {target}" + ("  (your changes kept)" if edited else ""))
            continue
        if check:
            ok = False
            log(f"{'OUT OF STEP' if old is not None else 'MISSING'}  {target}  (run: metahpo-exercises generate)")
            continue
        if edited:
            if not force:
                log(f"kept         {target}  (you changed it; a newer version exists: --force {target.stem} "
                    f"keeps yours in {folder / 'backups'} and writes the new one)")
                continue
            log(f"backed up    {target} -> {backup(target)}")
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(new, target)
        log(f"{'updated' if old is not None else 'written':<12} {target}")
    return ok


def _annotate_solution(path: Path, *, check: bool, log) -> tuple[bool, object]:
    solution = nbformat.read(path, as_version=4)
    annotated = with_nbgrader_metadata(solution)
    if [c.metadata for c in annotated.cells] == [c.metadata for c in solution.cells]:
        return True, solution
    if check:
        log(f"NO NBGRADER METADATA  {path}  (run: metahpo-exercises generate)")
        return False, annotated
    nbformat.write(annotated, path)
    log(f"annotated    {path}  (nbgrader cell metadata: grade ids, points, solution and test cells)")
    return True, annotated


def generate(solutions_dir="solutions", exercises_dir="exercises", *, force: bool = False,
             check: bool = False, names=(), log=print) -> bool:
    r"""Write ``exercises/`` from ``solutions/`` (see :func:`sync`; ``names`` restricts it to some
    notebooks, by file name, stem or chapter number) and write nbgrader's cell metadata into the solution
    notebooks (their code and outputs are untouched). With ``check``, write nothing and return False when
    anything is missing or out of step. Returns True otherwise; ``log`` gets one line per notebook.

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
    NO NBGRADER METADATA  ...01_demo.ipynb  (run: metahpo-exercises generate)
    MISSING  ...01_demo.ipynb  (run: metahpo-exercises generate)
    False
    >>> exercises.generate(root / "solutions", root / "exercises")
    annotated    ...01_demo.ipynb  (nbgrader cell metadata: grade ids, points, solution and test cells)
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
    paths = [p for p in sorted(src.glob("*.ipynb")) if _selected(p, names)]
    if not paths:
        raise ValueError(f"solutions_dir {str(src)!r} holds no .ipynb notebooks" + (f" named {list(names)}" if names else ""))
    ok, notebooks = True, {}
    for path in paths:
        annotated, solution = _annotate_solution(path, check=check, log=log)
        ok &= annotated
        notebooks[path.name] = student_notebook(solution, path.name)
    return sync(notebooks, dst, force=force, check=check, names=names, log=log) and ok


def start(exercises_dir="exercises", work_dir="work", *, force: bool = False, names=(), log=print) -> bool:
    """Copy the exercise notebooks into the learner's work folder (git-ignored; open it in JupyterLab), or
    bring it up to date after a teacher's update: notebooks you changed are kept unless ``force`` (then
    backed up to ``work/backups/``). ``exercises/`` itself is never edited.

    >>> import tempfile, pathlib, nbformat
    >>> from metahpo_lib import exercises
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = pathlib.Path(tmp)
    ...     nb = exercises.student_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))
    ...     (root / "exercises").mkdir()
    ...     nbformat.write(nb, root / "exercises" / "01_demo.ipynb")
    ...     exercises.start(root / "exercises", root / "work", log=lambda line: print(line.split()[0]))
    written
    True
    """
    src = Path(exercises_dir)
    paths = sorted(src.glob("*.ipynb")) if src.is_dir() else []
    if not paths:
        raise ValueError(f"exercises_dir {str(src)!r} holds no .ipynb notebooks (run: metahpo-exercises generate)")
    notebooks = {p.name: nbformat.read(p, as_version=4) for p in paths}
    return sync(notebooks, work_dir, force=force, names=names, log=log)

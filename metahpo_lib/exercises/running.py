"""Execute a notebook cell by cell: a per-cell timeout, a dead kernel replaced by a fresh one (the cells
that ran before are replayed in it), and a status for every code cell."""

from __future__ import annotations

import copy

from .kernel import Limits, SandboxKernelManager, kernel_env

#: a cell's status after :func:`run_cells`
OK, ERROR, TIMEOUT, DIED, SKIPPED = "ok", "error", "timed out", "kernel died", "not run"


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


def _session(nb, todo, replay, status, *, cwd, timeout, limits, threads):
    """Run ``replay`` (outputs dropped), then ``todo`` in one kernel; returns the index where it stopped
    (timeout or dead kernel) or None."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    km = SandboxKernelManager(kernel_name="python3", limits=limits)
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True, shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(cwd)}})
    try:
        with client.setup_kernel(env=kernel_env(threads)):
            for i in replay:
                try:
                    client.execute_cell(copy.deepcopy(nb.cells[i]), i)
                except (CellTimeoutError, DeadKernelError):
                    return todo[0] if todo else None
            for i in todo:
                try:
                    client.execute_cell(nb.cells[i], i)
                except CellTimeoutError:
                    status[i] = TIMEOUT
                    return i
                except DeadKernelError:
                    status[i] = DIED
                    return i
                status[i] = ERROR if cell_errors(nb.cells[i]) else OK
        return None
    finally:  # the client does not own a kernel manager it was given: kill the kernel here (a timed-out
        # cell may still be spinning in it, e.g. an infinite loop that ignores the interrupt)
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)


def run_cells(nb, cwd, *, timeout: int = 60, limits: Limits | None = None, threads: int | None = None,
              cells=None):
    r"""Execute the code cells of ``nb`` (those in ``cells``, default all) in a kernel started in ``cwd``
    under ``limits``; returns ``(ran, status)``: the run copy and ``{cell index: status}``, status one of
    ok / error / timed out / kernel died / not run. A cell running past ``timeout`` seconds, or a kernel
    that dies, does not stop the run: the later cells run in a fresh kernel, after the cells that
    succeeded are replayed there. Starting a kernel takes about a second.

    >>> import nbformat, tempfile
    >>> from metahpo_lib import exercises
    >>> v4 = nbformat.v4
    >>> nb = v4.new_notebook(cells=[v4.new_code_cell("x = 6 * 7"), v4.new_code_cell("import os; os._exit(1)"),
    ...                             v4.new_code_cell("print(x)")])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ran, status = exercises.run_cells(nb, tmp, timeout=30)
    >>> status, ran.cells[2].outputs[0].text
    ({0: 'ok', 1: 'kernel died', 2: 'ok'}, '42\n')
    """
    nb = copy.deepcopy(nb)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (cells is None or i in cells)]
    status: dict[int, str] = {}
    for attempt in range(len(code) + 1):
        todo = [i for i in code if i not in status]
        if not todo:
            break
        replay = [i for i in code if status.get(i) == OK]
        stopped = _session(nb, todo, replay, status, cwd=cwd, timeout=timeout, limits=limits, threads=threads)
        if stopped is None:
            break
        if stopped not in status:  # the replay itself failed: give up on the rest
            status.update({i: DIED for i in todo})
    return nb, {i: status.get(i, SKIPPED) for i in code}

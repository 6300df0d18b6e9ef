r"""Staying correct while worker processes and database connections fail (used by
:mod:`~metahpo_lib.hpo.workers`, notebook 07, "scaling out").

- :func:`worker_tag`, :func:`tag_alive`: who owns a running trial (``host:pid:start``, the start
  time telling a re-used process id apart) and whether that process still lives; a zombie (a
  dead child its parent has not reaped yet) counts as dead;
- :func:`retrying`: call a storage operation again, with exponential back-off, while the
  database connection is lost, for a bounded time; then :class:`StorageUnavailableError`.
"""

from __future__ import annotations

import os
import socket
import sys
import time

__all__ = ["worker_tag", "tag_alive", "StorageUnavailableError", "is_connection_error", "retrying"]


def _proc_stat(pid: int):
    """``(state, start time)`` of a process from ``/proc``; ``"gone"`` when there is no such
    process; ``None`` when ``/proc`` cannot tell (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return "gone" if os.path.isdir("/proc/self") else None
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (comm) ": state is field 3, start time 22
    return fields[0].decode(), int(fields[19])


def worker_tag(pid: int | None = None) -> str:
    """The owner tag of a trial: ``"host:pid:start"`` for process ``pid`` (default: this one);
    ``start`` is its start time in clock ticks since boot (0 where ``/proc`` is absent).

    >>> import os
    >>> from metahpo_lib.hpo.resilience import worker_tag
    >>> worker_tag().split(":")[1] == str(os.getpid())
    True
    """
    pid = os.getpid() if pid is None else int(pid)
    stat = _proc_stat(pid)
    start = stat[1] if isinstance(stat, tuple) else 0
    return f"{socket.gethostname()}:{pid}:{start}"


def tag_alive(tag: str) -> bool | None:
    """Whether the process of a :func:`worker_tag` still runs: ``False`` when it is gone, a
    zombie or its process id now belongs to another process; ``None`` when this machine cannot
    tell (another host: the database heartbeat decides there).

    >>> from metahpo_lib.hpo.resilience import tag_alive, worker_tag
    >>> tag_alive(worker_tag()), tag_alive("some-other-host:1:0")
    (True, None)
    """
    host, _, rest = str(tag).partition(":")
    pid_text, _, start_text = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    stat = _proc_stat(pid)
    if stat == "gone":
        return False
    if stat is None:  # no /proc: signal 0 tells "exists", not "zombie"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OSError):
            return True
        return True
    state, start = stat
    if state in ("Z", "X", "x"):
        return False
    return not (start_text.isdigit() and int(start_text) not in (0, start))


class StorageUnavailableError(RuntimeError):
    """The storage stayed unreachable for longer than the retry time; the worker gives up.

    >>> from metahpo_lib.hpo.resilience import StorageUnavailableError
    >>> issubclass(StorageUnavailableError, RuntimeError)
    True
    """


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a lost or refused database
    connection, which a retry may cure: SQLAlchemy's ``OperationalError`` / ``InterfaceError``
    / pool time-outs, and Optuna's ``StorageInternalError`` (its wrapper of them).

    >>> from metahpo_lib.hpo.resilience import is_connection_error
    >>> is_connection_error(ValueError("bad budget"))
    False
    """
    names = {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError", "StorageInternalError"}
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in names and type(error).__module__.split(".")[0] in ("sqlalchemy", "optuna",
                                                                                        "psycopg", "psycopg2"):
            return True
        error = error.__cause__ or error.__context__
    return False


def retrying(fn, *args, retry_for: float = 60.0, what: str = "storage", log=sys.stderr, **kwargs):
    """``fn(*args, **kwargs)``, called again after 0.25, 0.5, 1, 2, 4, 5, 5 ... s while it fails
    with a lost connection (:func:`is_connection_error`), for at most ``retry_for`` seconds;
    then :class:`StorageUnavailableError` saying why. Other errors pass through at once.
    Each retry is announced on ``log`` (``None``: silent).

    >>> from metahpo_lib.hpo.resilience import retrying
    >>> retrying(sum, [1, 2, 3])
    6
    """
    delay, first = 0.25, None
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_connection_error(e):
                raise
            now = time.monotonic()
            first = now if first is None else first
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            if now - first >= retry_for:
                raise StorageUnavailableError(f"{what} unreachable for {now - first:.0f} s (retry_for={retry_for:g}), "
                                              f"giving up; last error: {reason}") from e
            if log is not None:
                print(f"[{worker_tag()}] {what} connection lost ({reason}); retrying in {delay:g} s", file=log,
                      flush=True)
            time.sleep(min(delay, max(0.0, retry_for - (now - first))) or 0.01)
            delay = min(2 * delay, 5.0)

"""Self-checks for exercises: run a learner's function and the reference on the same seeded
inputs and say, in plain words, what differs.

Each chapter has its own module (``checks.ch01``, ...) of ready-made checks; they all use
:func:`compare`. A check prints one line when everything matches and raises
``AssertionError`` with an explanation otherwise. An unsolved exercise (its ``raise
NotImplementedError()`` still in place) raises :class:`ExerciseNotWritten`, a ``NotImplementedError``
shown as one plain sentence, so the grader still says "not attempted"; the generated exercise
notebooks tag their check cells ``raises-exception``, so Run All goes on to the next exercise.

In a student bundle (``metahpo-exercises release``) the reference answers are not shipped: each
check compares with the reference's results on its seeded cases, recorded by :func:`record` and
stored next to this file in ``recorded.pkl``.
"""

from __future__ import annotations

import inspect
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

__all__ = ["compare", "describe_difference", "expected", "record", "RECORDED", "ExerciseNotWritten"]

#: where a student bundle keeps the references' results
RECORDED = Path(__file__).with_name("recorded.pkl")
_recorder: dict | None = None
_stored: dict | None = None


class ExerciseNotWritten(NotImplementedError):
    """Raised by a self-check when the learner's function still raises ``NotImplementedError``;
    Jupyter shows only its message, no traceback.

    >>> from metahpo_lib.checks import ExerciseNotWritten
    >>> print(ExerciseNotWritten("double"))
    `double` is not written yet: replace `raise NotImplementedError()` in its cell with your code, run that cell, then this check.
    >>> isinstance(ExerciseNotWritten("double"), NotImplementedError)
    True
    """

    def __init__(self, name: str):
        super().__init__(f"`{name}` is not written yet: replace `raise NotImplementedError()` in its cell with "
                         f"your code, run that cell, then this check.")

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback."""
        return [f"✘ {self}"]


def _fmt(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    if isinstance(x, Mapping):
        return f"dict with keys {sorted(x)}"
    return f"{type(x).__name__} {x!r}" if not isinstance(x, (list, tuple)) else f"{type(x).__name__} of length {len(x)}"


def describe_difference(got, want, *, rtol: float, atol: float, where: str = "the result") -> str | None:
    """None when ``got`` matches ``want`` (tensors, numbers, dicts, lists; numbers and tensors within
    ``|got - want| <= atol + rtol |want|``), else a sentence that says where and how they differ
    (notebook 00, "How the exercises work").

    >>> import torch
    >>> from metahpo_lib.checks import describe_difference
    >>> describe_difference(torch.ones(3), torch.ones(3), rtol=1e-6, atol=0) is None
    True
    >>> describe_difference({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, rtol=1e-6, atol=0)
    "the result['w'] should have shape (3,), but has shape (2,)"
    """
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return f"{where} should be a dict with keys {sorted(want)}, but is a {_fmt(got)}"
        if set(got) != set(want):
            return f"{where} should have keys {sorted(want)}, but has keys {sorted(got)}"
        for k in want:
            msg = describe_difference(got[k], want[k], rtol=rtol, atol=atol, where=f"{where}[{k!r}]")
            if msg:
                return msg
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where} should be a {type(want).__name__} of length {len(want)}, but is a {_fmt(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = describe_difference(g, w, rtol=rtol, atol=atol, where=f"{where}[{i}]")
            if msg:
                return msg
        return None
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a {_fmt(want)}, but is a {_fmt(got)}"
        if got.shape != want.shape:
            return f"{where} should have shape {tuple(want.shape)}, but has shape {tuple(got.shape)}"
        got = got.detach().to(want.device, want.dtype)
        if not bool(torch.isfinite(got).all()) and bool(torch.isfinite(want).all()):
            return f"{where} contains NaN or inf values"
        if not torch.allclose(got, want.detach(), rtol=rtol, atol=atol):
            err = (got - want.detach()).abs()
            i = int(err.argmax())
            return (f"{where} differs from the reference: largest difference {float(err.max()):.3g} at flat index {i} "
                    f"(yours {float(got.flatten()[i]):.6g}, expected {float(want.detach().flatten()[i]):.6g})")
        return None
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)):
            return f"{where} should be a number, but is a {_fmt(got)}"
        if not math.isclose(got, want, rel_tol=rtol, abs_tol=atol):
            return f"{where} is {got:.6g}, expected {want:.6g}"
        return None
    return None if got == want else f"{where} is {got!r}, expected {want!r}"


def compare(fn: Callable, reference: Callable, cases: Sequence[tuple[str, tuple, dict]], *, name: str | None = None,
            rtol: float = 1e-6, atol: float = 1e-8, quiet: bool = False) -> None:
    """Call ``fn(*args, **kwargs)`` and ``reference(*args, **kwargs)`` for each case
    ``(description, args, kwargs)`` and raise ``AssertionError`` at the first difference
    (see :func:`describe_difference`); print one ✔ line when all match (notebook 00).

    >>> from metahpo_lib.checks import compare
    >>> def double(x):
    ...     return 2 * x
    >>> compare(double, lambda x: x + x, [("x = 3", (3.0,), {})])
    ✔ double matches the reference on 1 seeded case(s).
    >>> compare(lambda x: 3 * x, lambda x: x + x, [("x = 3", (3.0,), {})], name="triple")
    Traceback (most recent call last):
        ...
    AssertionError: triple: on x = 3, the result is 9, expected 6
    """
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise AssertionError(f"{name} should be a function, but is a {type(fn).__name__}")
    caller = inspect.currentframe().f_back
    where = f"{caller.f_globals.get('__name__')}.{caller.f_code.co_name}"
    for i, (desc, args, kwargs) in enumerate(cases):
        want = _reference_result(f"{where}[{i}] {desc}", reference, args, kwargs)
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError:
            raise ExerciseNotWritten(name) from None
        except Exception as e:  # the learner's code crashed: say where
            raise AssertionError(f"{name} raised {type(e).__name__}: {e}  (on {desc})") from e
        msg = describe_difference(got, want, rtol=rtol, atol=atol)
        if msg:
            raise AssertionError(f"{name}: on {desc}, {msg}")
    if not quiet:
        print(f"✔ {name} matches the reference on {len(cases)} seeded case(s).")


def _reference_result(key: str, reference: Callable, args, kwargs):
    """The reference's result on one case: stored in a student bundle, computed (and recorded) otherwise."""
    global _stored
    if _stored is None and RECORDED.is_file():
        with open(RECORDED, "rb") as f:
            _stored = pickle.load(f)
    if _stored is not None:
        if key not in _stored:
            raise RuntimeError(f"no stored reference result for {key!r}: regenerate the bundle")
        return _stored[key]
    want = reference(*args, **kwargs)
    if _recorder is not None:
        _recorder[key] = want
    return want


def expected(reference: Callable, args: tuple, kwargs: dict | None = None, *, case: str = ""):
    """``reference(*args, **kwargs)`` for a check that compares by hand (not with :func:`compare`); in a
    student bundle, the stored result instead. ``case`` tells the cases of one check apart.

    >>> from metahpo_lib.checks import expected
    >>> expected(lambda x: 2 * x, (21,), case="x = 21")
    42
    """
    caller = inspect.currentframe().f_back
    key = f"{caller.f_globals.get('__name__')}.{caller.f_code.co_name}[{case}]"
    return _reference_result(key, reference, args, kwargs or {})


def record(module) -> dict:
    """Run every check of a ``checks.chNN`` module on its own reference (``check(ref_check)``) and return
    the references' results on the seeded cases, keyed by check and case: what a student bundle stores
    instead of the reference answers.

    >>> from metahpo_lib import checks
    >>> from metahpo_lib.checks import ch01
    >>> results = checks.record(ch01)
    ✔ ref_expected_improvement matches the reference on 4 seeded case(s).
    ...
    >>> sorted(results)[0]
    'metahpo_lib.checks.ch01.expected_improvement[0] 6 seeded points, best=0.0, xi=0.0'
    """
    global _recorder
    _recorder = {}
    try:
        for name, check in inspect.getmembers(module, inspect.isfunction):
            reference = getattr(module, f"ref_{name}", None)
            if check.__module__ == module.__name__ and callable(reference):
                check(reference)
        return _recorder
    finally:
        _recorder = None

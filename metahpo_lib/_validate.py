"""Small input checks shared by every module: clear errors that name the argument.

Every public entry point checks its arguments once, with these helpers; algorithm bodies
below the entry do not check again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def tensor(x, name: str, *, ndim: int | tuple[int, ...] | None = None, floating: bool = True,
           finite: bool = True) -> torch.Tensor:
    """Return ``x`` if it is a tensor of the expected kind (floating, ``ndim``, finite, not on 'meta'),
    else raise a clear error naming ``name``.

    >>> import torch
    >>> from metahpo_lib import _validate as V
    >>> V.tensor(torch.zeros(3, 2), "X", ndim=2).shape
    torch.Size([3, 2])
    >>> V.tensor(torch.zeros(3, dtype=torch.long), "X")
    Traceback (most recent call last):
        ...
    TypeError: X must be a floating-point tensor (float32 or float64), got dtype torch.int64; ...
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64), got dtype {x.dtype}; "
                        f"convert it with {name}.double() or {name}.float()")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                             f"got shape {tuple(x.shape)}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device (a shape without data); create it on 'cpu' or 'cuda'")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def same_rows(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise if ``a`` and ``b`` do not have the same number of rows.

    >>> import torch
    >>> from metahpo_lib import _validate as V
    >>> V.same_rows(torch.zeros(4, 2), torch.zeros(4), "X", "y")
    >>> V.same_rows(torch.zeros(4, 2), torch.zeros(3), "X", "y")
    Traceback (most recent call last):
        ...
    ValueError: X and y must have the same number of rows, got 4 and 3
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same number of rows, "
                         f"got {a.shape[0]} and {b.shape[0]}")


def tensor_dict(d, name: str, expected: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Check a params/hparams dict: a mapping of str to finite floating tensors, with the
    keys, shapes, dtypes and devices of ``expected`` when given.

    >>> import torch
    >>> from metahpo_lib import _validate as V
    >>> want = {"w": torch.zeros(2)}
    >>> V.tensor_dict({"w": torch.ones(2)}, "params", want)
    {'w': tensor([1., 1.])}
    >>> V.tensor_dict({"v": torch.ones(2)}, "params", want)
    Traceback (most recent call last):
        ...
    ValueError: params must have keys ['w']; missing ['w'], unexpected ['v']
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"{name} must be a dict of str to torch.Tensor, got {type(d).__name__}")
    if expected is not None:
        missing = sorted(set(expected) - set(d))
        extra = sorted(set(d) - set(expected))
        if missing or extra:
            raise ValueError(f"{name} must have keys {sorted(expected)}; missing {missing}, unexpected {extra}")
    for k, v in d.items():
        tensor(v, f"{name}[{k!r}]")
        if expected is None:
            continue
        want = expected[k]
        if v.shape != want.shape:
            raise ValueError(f"{name}[{k!r}] must have shape {tuple(want.shape)}, got {tuple(v.shape)}")
        if v.dtype != want.dtype or v.device != want.device:
            raise TypeError(f"{name}[{k!r}] must be {want.dtype} on {want.device} like the problem's data, "
                            f"got {v.dtype} on {v.device}")
    return dict(d)


def positive_int(x, name: str, minimum: int = 1) -> int:
    """Return ``x`` as an int if it is an integer >= ``minimum`` (bools are refused).

    >>> from metahpo_lib import _validate as V
    >>> V.positive_int(5, "steps")
    5
    >>> V.positive_int(0, "steps")
    Traceback (most recent call last):
        ...
    ValueError: steps must be an integer >= 1, got 0
    """
    if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return x


def positive_float(x, name: str, *, allow_zero: bool = False) -> float:
    """Return ``x`` as a float if it is finite and > 0 (or >= 0 with ``allow_zero``).

    >>> from metahpo_lib import _validate as V
    >>> V.positive_float(0, "noise", allow_zero=True)
    0.0
    >>> V.positive_float(float("nan"), "lr")
    Traceback (most recent call last):
        ...
    ValueError: lr must be a finite number > 0, got nan
    """
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {x!r}")
    return v


def choice(x, name: str, options) -> str:
    """Return ``x`` if it is one of ``options``.

    >>> from metahpo_lib import _validate as V
    >>> V.choice("forward", "mode", {"reverse", "forward"})
    'forward'
    >>> V.choice("backward", "mode", {"reverse", "forward"})
    Traceback (most recent call last):
        ...
    ValueError: mode must be one of ['forward', 'reverse'], got 'backward'
    """
    if x not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {x!r}")
    return x


def unit_interval(x, name: str, *, closed_low: bool = True) -> float:
    """Return ``x`` as a float in [0, 1) (or (0, 1) with ``closed_low=False``): momenta, betas, rates.

    >>> from metahpo_lib import _validate as V
    >>> V.unit_interval(0.9, "momentum")
    0.9
    >>> V.unit_interval(1.0, "momentum")
    Traceback (most recent call last):
        ...
    ValueError: momentum must be in [0, 1), got 1.0
    """
    v = positive_float(x, name, allow_zero=closed_low)
    if v >= 1:
        raise ValueError(f"{name} must be in {'[0' if closed_low else '(0'}, 1), got {x!r}")
    return v


def betas(x, name: str = "betas") -> tuple[float, float]:
    """Return Adam's ``(beta1, beta2)``, two numbers in [0, 1).

    >>> from metahpo_lib import _validate as V
    >>> V.betas([0.9, 0.999])
    (0.9, 0.999)
    >>> V.betas(0.9)
    Traceback (most recent call last):
        ...
    ValueError: betas must be two numbers in [0, 1), got 0.9
    """
    if not (isinstance(x, (tuple, list)) and len(x) == 2):
        raise ValueError(f"{name} must be two numbers in [0, 1), got {x!r}")
    return unit_interval(x[0], f"{name}[0]"), unit_interval(x[1], f"{name}[1]")


def generator(seed, name: str = "seed") -> torch.Generator:
    """The one way to pass randomness: ``seed`` is an int (a fresh CPU generator seeded with it) or
    a ``torch.Generator`` (used as it is, so consecutive calls draw different numbers).

    >>> import torch
    >>> from metahpo_lib import _validate as V
    >>> V.generator(0).initial_seed()
    0
    >>> g = torch.Generator().manual_seed(1)
    >>> V.generator(g) is g
    True
    >>> V.generator(0.5)
    Traceback (most recent call last):
        ...
    TypeError: seed must be an int or a torch.Generator, got float
    """
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def scalar_loss(value, name: str) -> torch.Tensor:
    """Return ``value`` if it is a real scalar tensor (a loss), else raise naming ``name``.

    >>> import torch
    >>> from metahpo_lib import _validate as V
    >>> V.scalar_loss(torch.tensor(0.5), "inner_loss")
    tensor(0.5000)
    >>> V.scalar_loss(torch.ones(3), "inner_loss")
    Traceback (most recent call last):
        ...
    ValueError: inner_loss must return a scalar tensor (shape ()), got shape (3,); ...
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a scalar torch.Tensor, got {type(value).__name__} "
                        "(a Python number has no gradient: compute the loss with torch operations)")
    if value.numel() != 1 or value.ndim > 1:
        raise ValueError(f"{name} must return a scalar tensor (shape ()), got shape {tuple(value.shape)}; "
                         "reduce it with .mean() or .sum()")
    if not value.is_floating_point():
        raise TypeError(f"{name} must return a floating-point tensor, got dtype {value.dtype}")
    return value

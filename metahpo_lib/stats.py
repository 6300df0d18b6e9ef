r"""Confidence intervals: the one helper every chapter uses to report a mean over seeds or tasks.

:func:`mean_ci` gives the sample mean and the Student-t confidence interval

.. math:: \bar x \pm t_{(1+\text{level})/2,\ n-1}\ \frac{s}{\sqrt n},

with :math:`s` the sample standard deviation (``n - 1`` in the denominator).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["MeanCI", "mean_ci"]


class MeanCI(NamedTuple):
    """Mean and half-width of a confidence interval (floats, or tensors when a ``dim`` was
    reduced); ``low`` and ``high`` are the interval's ends.

    >>> from metahpo_lib.stats import MeanCI
    >>> ci = MeanCI(2.0, 0.5)
    >>> ci.low, ci.high, str(ci)
    (1.5, 2.5, '2 ± 0.5')
    """

    mean: float | torch.Tensor
    half_width: float | torch.Tensor

    @property
    def low(self):
        return self.mean - self.half_width

    @property
    def high(self):
        return self.mean + self.half_width

    def __str__(self) -> str:
        if isinstance(self.mean, torch.Tensor) and self.mean.ndim:
            return f"MeanCI(mean={self.mean}, half_width={self.half_width})"
        return f"{float(self.mean):.4g} ± {float(self.half_width):.2g}"


def mean_ci(values, *, dim: int | None = None, level: float = 0.95) -> MeanCI:
    r"""Sample mean and Student-t ``level`` confidence interval of ``values``.

    ``values``: a tensor, array or list of numbers; ``dim=None`` pools every entry and returns
    floats, ``dim=k`` reduces dimension ``k`` only and returns tensors. Needs at least two
    values along the reduced dimension; NaN entries propagate (a NaN mean says something
    diverged). Introduced in notebook 06 (MAML accuracies over test tasks).

    >>> from metahpo_lib.stats import mean_ci
    >>> ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    >>> round(ci.mean, 3), round(ci.half_width, 3), round(ci.low, 3)
    (2.5, 2.054, 0.446)
    >>> mean_ci(torch.tensor([[0., 1.], [2., 3.]]), dim=0).mean
    tensor([1., 2.])
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = values if isinstance(values, torch.Tensor) else torch.as_tensor(values, dtype=torch.float64)
    if not x.is_floating_point():
        x = x.double()
    pooled = dim is None
    if pooled:
        x, dim = x.reshape(-1), 0
    n = x.shape[dim] if x.ndim else 1
    if n < 2:
        raise ValueError(f"values needs at least 2 entries{'' if pooled else f' along dim {dim}'} for a "
                         f"confidence interval, got {n}")
    from scipy import stats as _scipy_stats

    t = float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1))
    mean, half = x.mean(dim), t * x.std(dim, correction=1) / math.sqrt(n)
    return MeanCI(float(mean), float(half)) if pooled else MeanCI(mean, half)

"""Pieces every hypergradient method shares."""

from __future__ import annotations

import torch

from ..problems import Bilevel


class HypergradResult(dict):
    """A hypergradient: a dict with the keys and shapes of ``hparams``, plus ``.info`` (a dict
    of what it cost: inner solves, passes, eps, ...). Returned by every ``hypergrad`` method
    (notebooks 01 to 04).

    >>> import torch
    >>> from metahpo_lib import hypergrad
    >>> g = hypergrad.HypergradResult({"log_alpha": torch.tensor(0.5)}, {"method": "exact"})
    >>> g["log_alpha"], g.info, isinstance(g, dict)
    (tensor(0.5000), {'method': 'exact'}, True)
    """

    def __init__(self, grads, info=None):
        super().__init__(grads)
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"HypergradResult({dict.__repr__(self)}, info={self.info})"


def prepare_hparams(problem, hparams) -> dict[str, torch.Tensor]:
    """Validate ``hparams`` against ``problem`` and return detached copies that require grad (the first
    line of every hypergradient method).

    >>> import torch
    >>> from metahpo_lib import hypergrad, problems
    >>> X, y = torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    >>> p = problems.ridge(X, y, X, y)
    >>> hp = hypergrad.prepare_hparams(p, {"log_alpha": torch.tensor(0.0, dtype=torch.float64)})
    >>> hp["log_alpha"].requires_grad, hp["log_alpha"].is_leaf
    (True, True)
    >>> hypergrad.prepare_hparams("ridge", {})
    Traceback (most recent call last):
        ...
    TypeError: problem must be a metahpo_lib.problems.Bilevel, got str
    """
    if not isinstance(problem, Bilevel):
        raise TypeError(f"problem must be a metahpo_lib.problems.Bilevel, got {type(problem).__name__}")
    hparams = problem.check_hparams(hparams)
    return {k: v.detach().clone().requires_grad_(True) for k, v in hparams.items()}


def total_derivative(value: torch.Tensor, hparams: dict[str, torch.Tensor], **grad_kwargs) -> dict[str, torch.Tensor]:
    r"""The total derivative :math:`d\,\mathrm{value} / d\lambda` as a dict like ``hparams``; entries the
    value does not depend on get zeros. ``grad_kwargs`` go to ``torch.autograd.grad``.

    >>> import torch
    >>> from metahpo_lib import hypergrad
    >>> a = torch.tensor(2.0, requires_grad=True)
    >>> b = torch.tensor(1.0, requires_grad=True)
    >>> hypergrad.total_derivative(a ** 3, {"a": a, "b": b})            # 3 a^2, and b is unused
    {'a': tensor(12.), 'b': tensor(0.)}
    """
    keys = list(hparams)
    grads = torch.autograd.grad(value, [hparams[k] for k in keys], allow_unused=True, **grad_kwargs)
    return {k: torch.zeros_like(hparams[k]) if g is None else g for k, g in zip(keys, grads)}

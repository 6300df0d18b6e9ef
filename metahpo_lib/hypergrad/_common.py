"""Pieces every hypergradient method shares."""

from __future__ import annotations

import torch

from ..problems import Bilevel


class HypergradResult(dict):
    """A hypergradient: a dict with the keys and shapes of ``hparams``, plus ``.info`` (a dict
    of what it cost: inner solves, passes, eps, ...)."""

    def __init__(self, grads, info=None):
        super().__init__(grads)
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"HypergradResult({dict.__repr__(self)}, info={self.info})"


def prepare_hparams(problem, hparams) -> dict[str, torch.Tensor]:
    """Validate ``hparams`` against ``problem`` and return detached copies that require grad."""
    if not isinstance(problem, Bilevel):
        raise TypeError(f"problem must be a metahpo_lib.problems.Bilevel, got {type(problem).__name__}")
    hparams = problem.check_hparams(hparams)
    return {k: v.detach().clone().requires_grad_(True) for k, v in hparams.items()}


def total_derivative(value: torch.Tensor, hparams: dict[str, torch.Tensor], **grad_kwargs) -> dict[str, torch.Tensor]:
    """d value / d hparams as a dict; hparams the value does not depend on get zeros."""
    keys = list(hparams)
    grads = torch.autograd.grad(value, [hparams[k] for k in keys], allow_unused=True, **grad_kwargs)
    return {k: torch.zeros_like(hparams[k]) if g is None else g for k, g in zip(keys, grads)}

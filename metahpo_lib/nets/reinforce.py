r"""Score-function (REINFORCE) estimates for discrete hyperparameters (notebook 05).

A categorical policy :math:`\pi_\alpha(a) = \prod_j \mathrm{softmax}(\alpha_j)_{a_j}` over
independent discrete choices :math:`a_j` (batch size, width, depth, optimiser, ...). For a loss
:math:`R(a)` (a validation loss after training with choices :math:`a`, not differentiable in
:math:`a`), with N samples :math:`a^{(i)} \sim \pi_\alpha` and a baseline :math:`b`,

.. math:: \nabla_\alpha \mathbb E_{a\sim\pi_\alpha}[R(a)] \approx \frac1N\sum_{i=1}^N \big(R(a^{(i)}) - b\big)\,
          \nabla_\alpha \log \pi_\alpha(a^{(i)}), \qquad
          \frac{\partial \log\pi_\alpha(a)}{\partial \alpha_{j}} = e_{a_j} - \mathrm{softmax}(\alpha_j),

unbiased for any :math:`b` that does not depend on the samples (Williams, 1992); a good
baseline (a running mean of past losses) reduces the variance. :func:`reinforce_search` descends
on :math:`\alpha` with these estimates at a budget counted in evaluations of :math:`R`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .. import _validate as V
from .. import inner
from ..hpo import History

TensorDict = dict[str, torch.Tensor]

__all__ = ["check_choices", "sample_choices", "reinforce_gradient", "reinforce_search"]


def check_choices(choices) -> dict[str, tuple]:
    """Return ``choices`` (``{name: list of options}``) as a dict of tuples; every name needs >= 1 option.

    >>> from metahpo_lib import nets
    >>> nets.check_choices({"width": [16, 64], "act": []})
    Traceback (most recent call last):
        ...
    ValueError: choices['act'] has no options: a categorical distribution needs at least one choice
    """
    if not isinstance(choices, Mapping) or not choices:
        raise ValueError(f"choices must be a non-empty dict {{name: list of options}}, got {choices!r}")
    out = {}
    for k, v in choices.items():
        v = tuple(v)
        if not v:
            raise ValueError(f"choices[{k!r}] has no options: a categorical distribution needs at least one choice")
        out[k] = v
    return out


def sample_choices(logits: TensorDict, n: int, *, seed=0) -> dict[str, torch.Tensor]:
    """``n`` samples of each independent categorical ``softmax(logits[name])``: ``{name: (n,) indices}``.

    >>> import torch
    >>> from metahpo_lib import nets
    >>> s = nets.sample_choices({"a": torch.tensor([0.0, 0.0, 50.0])}, 4, seed=0)
    >>> s["a"].tolist()
    [2, 2, 2, 2]
    """
    V.positive_int(n, "n")
    g = V.generator(seed)
    for k, v in logits.items():
        V.tensor(v, f"logits[{k!r}]", ndim=1)
        if v.numel() == 0:
            raise ValueError(f"logits[{k!r}] is empty: a categorical distribution needs at least one choice")
    return {k: torch.multinomial(torch.softmax(v.detach().double().cpu(), 0), n, replacement=True, generator=g)
            .to(v.device) for k, v in logits.items()}


def reinforce_gradient(logits: TensorDict, samples: dict, losses: torch.Tensor, baseline=0.0) -> TensorDict:
    r"""The score-function estimate :math:`\frac1N\sum_i (R_i - b)(e_{a_i} - \mathrm{softmax}(\alpha))`
    for each categorical (module docstring): ``logits`` ``{name: (C,)}``, ``samples``
    ``{name: (N,) indices}``, ``losses`` ``(N,)``, ``baseline`` a number or a tensor.

    >>> import torch
    >>> from metahpo_lib import nets
    >>> g = nets.reinforce_gradient({"a": torch.zeros(2)}, {"a": torch.tensor([0, 1])}, torch.tensor([1.0, 3.0]))
    >>> g["a"]                  # choice 1 cost more: the gradient raises its logit's loss, descent lowers it
    tensor([-0.5000,  0.5000])
    """
    V.tensor(losses, "losses", ndim=1)
    out = {}
    for k, a in samples.items():
        if a.shape != losses.shape:
            raise ValueError(f"samples[{k!r}] and losses must have the same length, got {tuple(a.shape)} and "
                             f"{tuple(losses.shape)}")
        p = torch.softmax(logits[k], 0)
        score = torch.nn.functional.one_hot(a, p.shape[0]).to(p.dtype) - p
        out[k] = ((losses.to(p.dtype) - baseline)[:, None] * score).mean(0)
    return out


def _leave_one_out(losses):
    """Each sample's baseline: the mean of the other samples' losses (independent of its own)."""
    n = losses.shape[0]
    return (losses.sum() - losses) / (n - 1) if n > 1 else torch.zeros_like(losses)


def reinforce_search(objective: Callable, choices, budget: int, *, batch: int = 4, meta_lr: float = 0.5,
                     baseline: bool = True, decay: float = 0.7, seed=0) -> tuple[History, TensorDict]:
    r"""Minimise ``objective(config)`` over discrete ``choices`` (``{name: options}``) with REINFORCE:
    ``budget // batch`` iterations of ``batch`` sampled configurations, Adam steps (``meta_lr``) on the
    logits, the baseline an exponential moving average (``decay``) of past iterations' losses (the
    leave-one-out mean of the batch at the first iteration; 0 without ``baseline``). Returns the :class:`~metahpo_lib.hpo.History` of every evaluation and the final logits.

    >>> from metahpo_lib import nets
    >>> h, logits = nets.reinforce_search(lambda c: (c["x"] - 2) ** 2, {"x": [0, 1, 2, 3]}, 40, seed=0)
    >>> len(h), h.best_config, int(logits["x"].argmax())
    (40, {'x': 2}, 2)
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable config -> float, got {type(objective).__name__}")
    choices = check_choices(choices)
    V.positive_int(batch, "batch")
    if V.positive_int(budget, "budget") < batch:
        raise ValueError(f"budget ({budget}) must be >= batch ({batch})")
    V.unit_interval(decay, "decay")
    g = V.generator(seed)
    logits = {k: torch.zeros(len(v), dtype=torch.float64) for k, v in choices.items()}
    opt = inner.Adam(lr=V.positive_float(meta_lr, "meta_lr"))
    state, hist, b = opt.init(logits), History(), None
    for it in range(budget // batch):
        a = sample_choices(logits, batch, seed=g)
        configs = [{k: choices[k][int(a[k][i])] for k in choices} for i in range(batch)]
        losses = torch.tensor([float(objective(c)) for c in configs], dtype=torch.float64)
        for c, v in zip(configs, losses.tolist()):
            hist.add(c, v)
        base = _leave_one_out(losses) if b is None else torch.tensor(b, dtype=torch.float64)
        grads = reinforce_gradient(logits, a, losses, base if baseline else 0.0)
        b = float(losses.mean()) if b is None else decay * b + (1 - decay) * float(losses.mean())
        logits, state = opt.step(logits, grads, state, {}, it)
    return hist, logits

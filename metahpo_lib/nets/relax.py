r"""Continuous relaxation of a discrete choice: a softmax-weighted mixture (notebook 05).

A :class:`Mixture` over C candidate modules (activations, layers, blocks) computes

.. math:: \mathrm{Mixture}(x) = \sum_{c=1}^{C} \mathrm{softmax}(\alpha)_c\, m_c(x),

with the architecture logits :math:`\alpha` a buffer that :func:`~metahpo_lib.nets.network`
exposes as the hyperparameter ``hparams["arch:<name>.logits"]``. The mixture is differentiable
in :math:`\alpha`, so any hypergradient (``nets.unrolled``) tunes the discrete choice as a
continuous one (DARTS, Liu et al. 2019); :func:`discretize` then keeps the argmax choice.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .model import ARCH_PREFIX

__all__ = ["Mixture", "discretize", "chosen"]


class Mixture(nn.Module):
    r"""A softmax-weighted mixture :math:`\sum_c \mathrm{softmax}(\alpha)_c\, m_c(x)` of ``choices``
    (modules with the same output shape); :math:`\alpha` = the buffer ``logits`` (zeros: the uniform mixture).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> m = nets.Mixture([nn.Identity(), nn.ReLU()])
    >>> m(torch.tensor([-2.0, 2.0]))       # half of x plus half of relu(x)
    tensor([-1.,  2.])
    """

    is_relaxation = True

    def __init__(self, choices):
        super().__init__()
        choices = list(choices)
        if not choices:
            raise ValueError("Mixture needs at least one choice, got an empty list")
        if not all(isinstance(c, nn.Module) for c in choices):
            raise TypeError("every choice of a Mixture must be an nn.Module (e.g. nn.ReLU())")
        self.choices = nn.ModuleList(choices)
        self.register_buffer("logits", torch.zeros(len(choices)))

    def forward(self, x):
        w = torch.softmax(self.logits, 0)
        return sum(w[i] * m(x) for i, m in enumerate(self.choices))


def chosen(model: nn.Module, hparams) -> dict[str, int]:
    """The argmax choice of every :class:`Mixture` of ``model`` under ``hparams`` (``{module path: index}``).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> m = nn.Sequential(nn.Linear(2, 2), nets.Mixture([nn.ReLU(), nn.Tanh()]))
    >>> nets.chosen(m, {"arch:1.logits": torch.tensor([0.0, 3.0])})
    {'1': 1}
    """
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, Mixture):
            key = ARCH_PREFIX + (f"{name}." if name else "") + "logits"
            if key not in hparams:
                raise ValueError(f"hparams has no entry {key!r} for the Mixture at {name!r}")
            out[name] = int(torch.as_tensor(hparams[key]).argmax())
    return out


def discretize(model: nn.Module, hparams) -> nn.Module:
    """A copy of ``model`` with every :class:`Mixture` replaced by its argmax choice (:func:`chosen`);
    parameter names of the kept choices change (``1.choices.0.weight`` becomes ``1.weight``).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> m = nn.Sequential(nn.Linear(2, 2), nets.Mixture([nn.ReLU(), nn.Tanh()]))
    >>> nets.discretize(m, {"arch:1.logits": torch.tensor([0.0, 3.0])})
    Sequential(
      (0): Linear(in_features=2, out_features=2, bias=True)
      (1): Tanh()
    )
    """
    picks = chosen(model, hparams)
    out = copy.deepcopy(model)
    for name in sorted(picks, key=len, reverse=True):
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        if not name:
            return copy.deepcopy(model.choices[picks[name]])
        setattr(parent, child, copy.deepcopy(out.get_submodule(name).choices[picks[name]]))
    return out

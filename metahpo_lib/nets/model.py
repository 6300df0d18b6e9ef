r"""A ``torch.nn.Module`` seen as a pure function of its parameters (notebook 05).

:func:`functional_forward` calls ``torch.func.functional_call(model, params, (X,))``, so that the
parameters are an ordinary dict that training steps replace, autograd differentiates and
``torch.func.vmap`` batches. :func:`init_params` draws a fresh PyTorch default initialisation
from a ``seed`` without touching the global random state. :func:`check_model` refuses modules
that keep state in buffers (BatchNorm's running statistics change during training: they are
neither parameters nor hyperparameters, and a pure training step cannot update them); the only
buffers allowed are the architecture logits of :class:`metahpo_lib.nets.Mixture`, which are
hyperparameters.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import _validate as V

TensorDict = dict[str, torch.Tensor]

__all__ = ["ARCH_PREFIX", "check_model", "init_params", "functional_forward", "arch_buffers", "int_from_seed"]

#: hparams entries ``"arch:<buffer name>"`` hold the logits of a :class:`~metahpo_lib.nets.Mixture`
ARCH_PREFIX = "arch:"


def arch_buffers(model: nn.Module) -> TensorDict:
    """The architecture-logit buffers of every :class:`~metahpo_lib.nets.Mixture` in ``model``,
    by buffer name (``"<module path>.logits"``).

    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> m = nn.Sequential(nn.Linear(2, 3), nets.Mixture([nn.ReLU(), nn.Tanh()]))
    >>> nets.arch_buffers(m)
    {'1.logits': tensor([0., 0.])}
    """
    return {(f"{name}." if name else "") + "logits": m.logits for name, m in model.named_modules()
            if getattr(m, "is_relaxation", False)}


def check_model(model) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module`` with parameters and no state buffers, else raise
    a clear error (BatchNorm's running statistics are state; use ``nn.LayerNorm`` or ``nn.GroupNorm``).

    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> nets.check_model(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
    Traceback (most recent call last):
        ...
    ValueError: model has state buffers ['1.running_mean', '1.running_var', '1.num_batches_tracked'] ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not list(model.parameters()):
        raise ValueError("model has no parameters to train")
    arch = arch_buffers(model)
    state = [n for n, _ in model.named_buffers() if n not in arch]
    if state:
        raise ValueError(f"model has state buffers {state} (BatchNorm's running statistics change during training: "
                         "they are state, neither params nor hparams, and a pure functional training step cannot "
                         "update them); use nn.LayerNorm or nn.GroupNorm, or no normalisation")
    if any(isinstance(m, nn.Dropout) for m in model.modules()):
        raise ValueError("model contains nn.Dropout, whose randomness is hidden global state; remove it and pass "
                         "dropout=rate to nets.network (seeded input dropout, a hyperparameter)")
    return model


def int_from_seed(seed) -> int:
    """An int drawn from ``seed`` (an int is returned as it is; a ``torch.Generator`` advances).

    >>> from metahpo_lib import nets
    >>> nets.int_from_seed(7)
    7
    """
    g = V.generator(seed)
    return seed if isinstance(seed, int) else int(torch.randint(0, 2**62, (), generator=g))


def init_params(model: nn.Module, seed, *, dtype=None, device=None) -> TensorDict:
    """A fresh PyTorch default initialisation of ``model``'s parameters (every submodule's
    ``reset_parameters``), drawn from ``seed`` (int or ``torch.Generator``); the global random
    state and ``model`` are left untouched.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> m = nn.Linear(3, 2)
    >>> a, b = nets.init_params(m, 0), nets.init_params(m, 0)
    >>> torch.equal(a["weight"], b["weight"]), torch.equal(a["weight"], nets.init_params(m, 1)["weight"])
    (True, False)
    """
    s = int_from_seed(seed)
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        for sub in clone.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    ref = next(model.parameters())
    return {k: v.detach().to(dtype=dtype or ref.dtype, device=device or ref.device).clone()
            for k, v in clone.named_parameters()}


def functional_forward(model: nn.Module, params: TensorDict, hparams: TensorDict, X: torch.Tensor) -> torch.Tensor:
    """``model(X)`` with ``params`` as its parameters and ``hparams["arch:<name>"]`` as the logits
    of its :class:`~metahpo_lib.nets.Mixture` modules (``torch.func.functional_call``).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import nets
    >>> m = nn.Linear(2, 1)
    >>> nets.functional_forward(m, {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}, {}, torch.ones(3, 2))
    tensor([[2.],
            [2.],
            [2.]])
    """
    arch = {k[len(ARCH_PREFIX):]: v for k, v in hparams.items() if k.startswith(ARCH_PREFIX)}
    return torch.func.functional_call(model, {**params, **arch}, (X,), strict=False)

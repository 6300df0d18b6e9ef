r"""MAML for fine-tuning a pretrained network (notebook 06): pretrain a classifier on some
classes, give it a new head for the few-shot tasks, then fine-tune it plainly or meta-train it
with MAML / ANIL starting from the pretrained weights.

- :func:`pretrain`: ordinary supervised training (Adam on the cross-entropy, minibatches) of a
  copy of a model's parameters; returns the params dict and a
  :class:`~metahpo_lib.maml.training.LossCurve`;
- :func:`with_new_head`: a copy of the model holding given params whose last ``nn.Linear`` is
  replaced by a zero-initialised ``nn.Linear(in_features, ways)``: every class starts with the
  same logit, so the first inner step on a support set is a step on the head alone.

The few-shot learners are the usual ones: ``maml.Pretrained(with_new_head(...))`` evaluated
without meta-training is plain fine-tuning (SGD on all layers), ``maml.ANIL`` fine-tunes only
the head, and meta-training either of them with :func:`~metahpo_lib.maml.training.meta_train`
starts from the pretrained weights instead of a random initialisation.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import _validate as V
from .base import Params, check_model
from .training import LossCurve

__all__ = ["pretrain", "with_new_head"]


def pretrain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iterations: int = 500, lr: float = 1e-2,
             batch_size: int = 128, seed=0, progress: bool = True) -> tuple[Params, LossCurve]:
    r"""Train a copy of ``model``'s parameters on ``(x, y)`` (class labels ``[n]``, ``torch.long``) by
    ``iterations`` Adam steps at ``lr`` on the cross-entropy of minibatches of ``batch_size`` rows
    drawn with ``seed``: :math:`\min_\theta \frac1B \sum_{j \in \text{batch}} -\log p_\theta(y_j \mid x_j)`.

    ``model`` is not changed. Returns ``(params, curve)``: the trained params dict (detached) and the
    minibatch loss per iteration. Notebook 06 (MAML for fine-tuning).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib.maml import finetune
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(200, 2); y = (x[:, 0] > 0).long()           # a linearly separable toy set
    >>> params, curve = finetune.pretrain(nn.Linear(2, 2), x, y, iterations=100, lr=0.1, progress=False)
    >>> sorted(params), curve.loss[-1] < curve.loss[0]
    (['bias', 'weight'], True)
    """
    from tqdm.auto import tqdm

    check_model(model)
    x = V.tensor(x, "x")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.ndim != 1 or len(y) != len(x):
        raise TypeError(f"y must be a torch.long tensor of class labels [n] with n = len(x) = {len(x)}, got "
                        f"{type(y).__name__}" + (f" {y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else ""))
    V.positive_int(iterations, "iterations")
    V.positive_float(lr, "lr")
    V.positive_int(batch_size, "batch_size")
    g = V.generator(seed)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    losses, t0 = [], time.perf_counter()
    for _ in tqdm(range(iterations), desc="pretraining", disable=not progress):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g).to(x.device)
        loss = F.cross_entropy(functional_call(model, (params, buffers), (x[idx],)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    curve = LossCurve(list(range(1, iterations + 1)), torch.stack(losses).tolist(), time.perf_counter() - t0)
    return {k: v.detach() for k, v in params.items()}, curve


def with_new_head(model: nn.Module, params: Params | None, ways: int) -> nn.Module:
    """A copy of ``model`` holding ``params`` (None: its own), whose last ``nn.Linear`` is replaced by a
    zero-initialised ``nn.Linear(in_features, ways)`` (same name, so parameter names do not change).
    ``model`` is not changed. Notebook 06 (MAML for fine-tuning).

    >>> from torch import nn
    >>> from metahpo_lib.maml import finetune
    >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> five = finetune.with_new_head(net, None, ways=5)
    >>> five[2].weight.shape, float(five[2].weight.detach().abs().sum()), five[0].weight.data_ptr() != net[0].weight.data_ptr()
    (torch.Size([5, 32]), 0.0, True)
    """
    check_model(model)
    V.positive_int(ways, "ways", 2)
    new = copy.deepcopy(model)
    if params is not None:
        params = V.tensor_dict(params, "params", dict(model.named_parameters()))
        with torch.no_grad():
            for k, p in new.named_parameters():
                p.copy_(params[k])
    linears = [(n, m) for n, m in new.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear layer to replace by a new head")
    name, last = linears[-1]
    head = nn.Linear(last.in_features, ways, bias=last.bias is not None).to(last.weight)
    nn.init.zeros_(head.weight)
    if head.bias is not None:
        nn.init.zeros_(head.bias)
    parent = new.get_submodule(name.rpartition(".")[0]) if "." in name else new
    if name == "":
        raise ValueError("model is a single nn.Linear: wrap it in nn.Sequential to give it a body and a head")
    setattr(parent, name.rpartition(".")[2], head)
    return new

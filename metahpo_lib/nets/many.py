r"""Many trials at once: K configurations of one network trained together with ``torch.func.vmap``
(notebook 05).

:func:`train_many` maps the training loop of :func:`~metahpo_lib.nets.train` over a leading
dimension K of the hyperparameters and of the initial parameters, with one minibatch order (and
dropout noise) shared by all K runs:

.. math:: \theta^{(k)}_T = \mathrm{train}\big(\theta^{(k)}_0, \lambda^{(k)}; B_{0..T-1}\big), \qquad k = 1..K,

which equals K separate calls of ``nets.train(net, λ_k, params=θ_0^(k), seed=seed)`` (to 1e-6 in
float64, tested) and is 10-20x faster for small networks on a CPU (``benchmarks/nets_vmap.py``):
one batched matrix product per layer instead of K small ones, and one Python loop instead of K.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .. import _validate as V
from .. import inner
from .problem import NetProblem
from .train import check_hparams, check_net, run_all

TensorDict = dict[str, torch.Tensor]

__all__ = ["stack_configs", "init_many", "train_many", "evaluate_many"]


def stack_configs(configs: Sequence[Mapping[str, torch.Tensor]]) -> TensorDict:
    """Stack K hparams dicts (same keys and shapes) into one dict of ``(K, ...)`` tensors.

    >>> import torch
    >>> from metahpo_lib import nets
    >>> nets.stack_configs([{"a": torch.tensor(1.0)}, {"a": torch.tensor(2.0)}])
    {'a': tensor([1., 2.])}
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs must hold at least one configuration (K >= 1), got K = 0")
    keys = set(configs[0])
    for i, c in enumerate(configs):
        if not isinstance(c, Mapping) or set(c) != keys:
            raise ValueError(f"configs[{i}] must have the keys {sorted(keys)}")
    return {k: torch.stack([torch.as_tensor(c[k]) for c in configs]) for k in configs[0]}


def init_many(net: NetProblem, K: int, *, seed=0) -> TensorDict:
    """K independent initialisations of ``net``, stacked: each entry ``(K, *shape)``.

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val)
    >>> nets.init_many(net, 5, seed=0)["weight"].shape
    torch.Size([5, 3, 4])
    """
    check_net(net)
    if isinstance(K, int) and not isinstance(K, bool) and K == 0:
        raise ValueError("K must be >= 1 configuration, got K = 0")
    V.positive_int(K, "K")
    g = V.generator(seed)
    inits = [net.init_params(g) for _ in range(K)]
    return {k: torch.stack([p[k] for p in inits]) for k in inits[0]}


def _batch_size(hparams) -> int:
    if not isinstance(hparams, Mapping) or not hparams:
        raise TypeError("hparams must be a dict of (K, ...) tensors, one row per configuration")
    sizes = {int(v.shape[0]) if isinstance(v, torch.Tensor) and v.ndim else -1 for v in hparams.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"every hparams entry needs the same leading dimension K (one row per configuration), got "
                         f"shapes { {k: tuple(getattr(v, 'shape', ())) for k, v in hparams.items()} }")
    K = sizes.pop()
    if K == 0:
        raise ValueError("hparams holds K = 0 configurations; give at least one")
    return K


def train_many(net: NetProblem, hparams, *, seed=0, inits=None, return_losses: bool = False):
    r"""Train K configurations at once (module docstring): ``hparams`` a dict of ``(K, ...)``
    tensors (see :func:`stack_configs`), ``inits`` stacked initial params (default
    :func:`init_many` drawn after the data order from ``seed``). Returns stacked final params;
    ``return_losses`` also gives the ``(K, steps)`` minibatch losses. Raises
    ``inner.DivergenceError`` naming the configuration whose training diverged.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=20, batch_size=16)
    >>> H = nets.stack_configs([{"log_lr": torch.tensor(v, dtype=torch.float64), "log_wd": torch.tensor([-9.0],
    ...                          dtype=torch.float64)} for v in (-3.0, -1.0, 0.0)])
    >>> P = nets.train_many(net, H, seed=0)
    >>> P["weight"].shape
    torch.Size([3, 3, 4])
    """
    check_net(net)
    K = _batch_size(hparams)
    hparams = check_hparams(net, hparams, batch=K)
    g = V.generator(seed)
    batches = net.draw(g)
    inits = init_many(net, K, seed=g) if inits is None else V.tensor_dict(
        inits, "inits", {k: v.expand(K, *v.shape) for k, v in net.init_params(0).items()})
    params, losses = torch.func.vmap(lambda p, h: run_all(net, p, h, batches, None))(inits, hparams)
    for k, row in enumerate(losses):
        try:
            inner.check_losses(list(row), optimizer=net.optimizer)
        except inner.DivergenceError as err:
            raise inner.DivergenceError(f"configuration {k}: {err}") from None
    return (params, losses.detach()) if return_losses else params


def evaluate_many(net: NetProblem, params, hparams, X, y) -> tuple[torch.Tensor, torch.Tensor]:
    """``(losses (K,), accuracies (K,))`` of K stacked trained params on ``(X, y)``.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val)
    >>> H = nets.stack_configs([net.init_hparams()] * 2)
    >>> loss, acc = nets.evaluate_many(net, nets.init_many(net, 2), H, s.X_test, s.y_test)
    >>> loss.shape, acc.shape
    (torch.Size([2]), torch.Size([2]))
    """
    check_net(net)
    V.same_rows(X, y, "X", "y")

    def one(p, h):
        out = net.forward(p, h, X)
        acc = (out.argmax(-1) == y).to(out.dtype).mean() if net.loss is None else torch.full((), torch.nan)
        return net.plain_loss(p, h, X, y), acc

    with torch.no_grad():
        return torch.func.vmap(one)(params, hparams)

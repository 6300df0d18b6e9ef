r"""Any ``nn.Module``, a loss and train/validation data as a bilevel problem (notebook 05).

:func:`network` builds a :class:`NetProblem`: minibatch training of the module from a random
initialisation by an inner optimiser object (``inner.GD``, ``inner.Momentum``, ``inner.Adam``),

.. math:: \theta_{t+1} = \Phi_t\big(\theta_t, \nabla_\theta \hat L_{B_t}(\theta_t, \lambda), \lambda\big),\qquad
          \hat L_B = \frac{1}{|B|}\sum_{i\in B} \ell_\varepsilon\big(f_\theta(m_i \odot x_i), y_i\big)
          + \tfrac12 \sum_l e^{\omega_l}\lVert W_l\rVert^2 + \tfrac12 \sum_j e^{\phi_j}\lVert W_{1,:j}\rVert^2,

and the validation loss :math:`L_{val}(\theta_T)` as the outer objective. The hyperparameters
(entries of ``hparams``, all optional): ``log_lr`` (:math:`\log\eta`, a scalar or a short
piecewise-constant schedule of P phases), ``logit_momentum``, ``log_wd`` (one weight decay
:math:`\omega_l` per layer: per parameter with two or more dimensions), ``log_fd`` (one
penalty :math:`\phi_j` per input feature, on the first weight matrix), ``dropout`` (the rate
:math:`p` of seeded input dropout, :math:`m_i \sim \mathrm{Bernoulli}(1-p)/(1-p)`), ``logit_smoothing``
(label smoothing :math:`\varepsilon = \sigma(\cdot)`) and ``arch:<name>`` (the logits of
:class:`~metahpo_lib.nets.Mixture` modules). The minibatch order and the dropout noise come from
a ``seed``, so that many configurations can share them (:func:`~metahpo_lib.nets.train_many`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as V
from .. import inner, problems
from .model import ARCH_PREFIX, arch_buffers, check_model, functional_forward, init_params

TensorDict = dict[str, torch.Tensor]

__all__ = ["Batches", "NetProblem", "network", "smoothed_cross_entropy"]

OPTIMIZERS = ("sgd", "momentum", "adam")


class Batches(NamedTuple):
    """The randomness of one training run: minibatch ``index`` ``(steps, batch_size)`` and the
    input-dropout ``noise`` ``(steps, batch_size, *feature shape)`` (uniform; None without dropout).

    >>> import torch
    >>> from metahpo_lib import nets
    >>> nets.Batches(torch.zeros(3, 2, dtype=torch.long), None).index.shape
    torch.Size([3, 2])
    """

    index: torch.Tensor
    noise: torch.Tensor | None


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing=0.0) -> torch.Tensor:
    r"""Cross-entropy with label smoothing, :math:`(1-\varepsilon)\,\mathrm{CE}(z, y) + \varepsilon\,
    \frac1C\sum_c -\log\mathrm{softmax}(z)_c`, differentiable in :math:`\varepsilon` (a number or tensor).

    >>> import torch
    >>> from metahpo_lib import nets
    >>> z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    >>> torch.allclose(nets.smoothed_cross_entropy(z, y, 0.1), torch.nn.functional.cross_entropy(z, y, label_smoothing=0.1))
    True
    """
    logp = F.log_softmax(logits, -1)
    nll = -logp.gather(-1, y[:, None]).squeeze(-1)
    return ((1 - smoothing) * nll - smoothing * logp.mean(-1)).mean()


@dataclasses.dataclass(frozen=True)
class NetProblem:
    """A network training problem with hyperparameters (built by :func:`network`; notebook 05).

    ``init_hparams()``, ``init_params(seed)``, ``draw(seed)`` (a :class:`Batches`),
    ``train_loss(params, hparams, X, y, noise)``, ``val_loss(params, hparams)``,
    ``evaluate(params, hparams, X, y) -> (loss, accuracy)``, ``optimizer`` (an inner optimiser
    object reading ``hparams["log_lr"]``), ``bilevel`` (a :class:`~metahpo_lib.problems.Bilevel`
    with the full-batch training loss, for ``hypergrad.implicit`` / ``hypergrad.unrolled``) and
    ``with_data(...)`` (the same network on other data, e.g. a cross-validation fold).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=5, batch_size=8)
    >>> sorted(net.init_hparams()), tuple(net.draw(0).index.shape)
    (['log_lr', 'log_wd'], (5, 8))
    """

    model: nn.Module
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    loss: Callable | None
    optimizer: inner.InnerOptimizer
    steps: int
    batch_size: int
    defaults: dict
    layers: tuple

    def init_hparams(self) -> TensorDict:
        """The initial hyperparameters (new tensors, dtype and device of the data)."""
        kw = dict(dtype=self.X_train.dtype, device=self.X_train.device)
        return {k: torch.as_tensor(v, **kw).clone() for k, v in self.defaults.items()}

    def init_params(self, seed=0) -> TensorDict:
        """A PyTorch default initialisation drawn from ``seed``, in the data's dtype and device."""
        return init_params(self.model, seed, dtype=self.X_train.dtype, device=self.X_train.device)

    def draw(self, seed) -> Batches:
        """Minibatch indices (each step a batch without replacement) and dropout noise from ``seed``."""
        g = V.generator(seed)
        n = self.X_train.shape[0]
        index = torch.stack([torch.randperm(n, generator=g)[:self.batch_size] for _ in range(self.steps)])
        noise = None
        if "dropout" in self.defaults:
            noise = torch.rand((self.steps, self.batch_size, *self.X_train.shape[1:]), generator=g,
                               dtype=self.X_train.dtype).to(self.X_train.device)
        return Batches(index.to(self.X_train.device), noise)

    def forward(self, params, hparams, X, noise=None):
        """The network's outputs on ``X``; with ``noise``, inputs are dropped where ``noise < dropout``."""
        if noise is not None:
            p = hparams["dropout"]
            X = X * (noise >= p).to(X.dtype) / (1 - p)
        return functional_forward(self.model, params, hparams, X)

    def penalty(self, params, hparams):
        """Per-layer weight decay and per-input-feature penalties (0 when absent)."""
        out = 0.0
        if "log_wd" in hparams:
            wd = hparams["log_wd"].exp()
            out = out + 0.5 * sum(wd[i] * params[k].pow(2).sum() for i, k in enumerate(self.layers))
        if "log_fd" in hparams:
            W = params[self.layers[0]]
            out = out + 0.5 * (hparams["log_fd"].exp() * W.reshape(W.shape[0], -1).pow(2).sum(0)).sum()
        return out

    def data_loss(self, outputs, y, hparams):
        """The training loss of ``outputs`` (label smoothing when ``logit_smoothing`` is present)."""
        if self.loss is not None:
            return self.loss(outputs, y)
        eps = torch.sigmoid(hparams["logit_smoothing"]) if "logit_smoothing" in hparams else 0.0
        return smoothed_cross_entropy(outputs, y, eps)

    def train_loss(self, params, hparams, X, y, noise=None):
        """Minibatch training objective :math:`\\hat L_B(\\theta, \\lambda)` (module docstring)."""
        return self.data_loss(self.forward(params, hparams, X, noise), y, hparams) + self.penalty(params, hparams)

    def plain_loss(self, params, hparams, X, y):
        """The unregularised loss on ``(X, y)``: cross-entropy (no smoothing) or the given loss."""
        out = self.forward(params, hparams, X)
        return F.cross_entropy(out, y) if self.loss is None else self.loss(out, y)

    def val_loss(self, params, hparams):
        """The outer objective :math:`L_{val}(\\theta)`: :meth:`plain_loss` on the validation set."""
        return self.plain_loss(params, hparams, self.X_val, self.y_val)

    @torch.no_grad()
    def evaluate(self, params, hparams, X, y) -> tuple[float, float]:
        """``(plain loss, accuracy)`` on ``(X, y)`` as floats (accuracy NaN for a custom loss)."""
        out = self.forward(params, hparams, X)
        acc = float((out.argmax(-1) == y).double().mean()) if self.loss is None else math.nan
        return float(self.plain_loss(params, hparams, X, y)), acc

    def optimizer_hparams(self, hparams) -> TensorDict:
        """``hparams`` with ``log_lr`` expanded from P phases to one entry per step (what the optimiser reads)."""
        lr = hparams["log_lr"]
        if lr.ndim == 1:
            lr = lr.repeat_interleave(self.steps // lr.shape[0])
        return {**hparams, "log_lr": lr}

    @property
    def bilevel(self) -> problems.Bilevel:
        """The full-batch problem (no dropout), with ``init_params()`` drawn from seed 0."""
        return problems.Bilevel(lambda p, h: self.train_loss(p, h, self.X_train, self.y_train),
                                self.val_loss, init_params=lambda: self.init_params(0),
                                init_hparams=self.init_hparams, name=f"network({type(self.model).__name__})")

    def with_data(self, X_train, y_train, X_val, y_val) -> NetProblem:
        """The same network and hyperparameters on other train/validation data (checked)."""
        _check_data(X_train, y_train, X_val, y_val, self.loss is None, self.batch_size)
        return dataclasses.replace(self, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


def _check_data(X_train, y_train, X_val, y_val, labels: bool, batch_size: int) -> None:
    for xn, yn, X, y in (("X_train", "y_train", X_train, y_train), ("X_val", "y_val", X_val, y_val)):
        V.tensor(X, xn, ndim=tuple(range(2, 6)))
        V.tensor(y, yn, floating=not labels)
        V.same_rows(X, y, xn, yn)
        if labels and (y.is_floating_point() or y.dtype == torch.bool):
            raise TypeError(f"{yn} must hold integer class labels (torch.long) for the cross-entropy loss, "
                            f"got dtype {y.dtype}")
    if X_val.shape[1:] != X_train.shape[1:] or X_val.dtype != X_train.dtype or X_val.device != X_train.device:
        raise ValueError(f"X_val must match X_train in feature shape, dtype and device; got {tuple(X_val.shape)} "
                         f"{X_val.dtype} vs {tuple(X_train.shape)} {X_train.dtype}")
    if batch_size > X_train.shape[0]:
        raise ValueError(f"batch_size must be <= the number of training examples ({X_train.shape[0]}), "
                         f"got {batch_size}")


def _defaults(model, *, lr, schedule, weight_decay, momentum, dropout, label_smoothing, feature_decay, n_in):
    layers = tuple(k for k, p in model.named_parameters() if p.ndim >= 2)
    d = {"log_lr": [math.log(V.positive_float(lr, "lr"))] * schedule if schedule else math.log(V.positive_float(lr, "lr"))}
    if momentum is not None:
        m = V.unit_interval(momentum, "momentum", closed_low=False)
        d["logit_momentum"] = math.log(m / (1 - m))
    if weight_decay is not None:
        d["log_wd"] = [math.log(V.positive_float(weight_decay, "weight_decay"))] * len(layers)
    if feature_decay is not None:
        d["log_fd"] = [math.log(V.positive_float(feature_decay, "feature_decay"))] * n_in
    if dropout is not None:
        d["dropout"] = V.unit_interval(dropout, "dropout")
    if label_smoothing is not None:
        e = V.unit_interval(label_smoothing, "label_smoothing", closed_low=False)
        d["logit_smoothing"] = math.log(e / (1 - e))
    d.update({ARCH_PREFIX + k: v.tolist() for k, v in arch_buffers(model).items()})
    return d, layers


def network(model: nn.Module, X_train, y_train, X_val, y_val, *, loss: Callable | None = None, optimizer: str = "sgd",
            steps: int = 100, batch_size: int = 64, lr: float = 0.1, schedule: int | None = None,
            weight_decay: float | None = 1e-4, momentum: float | None = None, dropout: float | None = None,
            label_smoothing: float | None = None, feature_decay: float | None = None) -> NetProblem:
    r"""Build a :class:`NetProblem` from ``model``, a loss and train/validation data (module docstring).

    ``loss``: ``None`` for cross-entropy on integer labels (label smoothing allowed) or a
    function ``(outputs, targets) -> scalar``; ``optimizer``: ``"sgd"``, ``"momentum"`` (needs
    ``momentum``) or ``"adam"``; the other arguments are the initial hyperparameter values (None
    leaves one out): ``schedule=P`` makes ``log_lr`` P phases (``steps`` divisible by P).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, dropout=1.0)
    Traceback (most recent call last):
        ...
    ValueError: dropout must be in [0, 1), got 1.0
    """
    check_model(model)
    V.choice(optimizer, "optimizer", OPTIMIZERS)
    V.positive_int(steps, "steps")
    V.positive_int(batch_size, "batch_size")
    _check_data(X_train, y_train, X_val, y_val, loss is None, batch_size)
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be None (cross-entropy) or a function (outputs, targets) -> scalar, got {loss!r}")
    if loss is not None and label_smoothing is not None:
        raise ValueError("label_smoothing needs the cross-entropy loss (loss=None)")
    if schedule is not None and steps % V.positive_int(schedule, "schedule"):
        raise ValueError(f"steps ({steps}) must be divisible by schedule ({schedule}), the number of lr phases")
    if (optimizer == "momentum") != (momentum is not None):
        raise ValueError("momentum is a hyperparameter of optimizer='momentum' only: give both or neither")
    n_in = X_train[0].numel()
    if feature_decay is not None:
        first = next(p for p in model.parameters() if p.ndim >= 2)
        if first[0].numel() != n_in:
            raise ValueError(f"feature_decay needs a first weight matrix with one column per input feature ({n_in}), "
                             f"got shape {tuple(first.shape)}")
    defaults, layers = _defaults(model, lr=lr, schedule=schedule, weight_decay=weight_decay, momentum=momentum,
                                 dropout=dropout, label_smoothing=label_smoothing, feature_decay=feature_decay,
                                 n_in=n_in)
    opt = {"sgd": lambda: inner.GD(lr="log_lr"), "adam": lambda: inner.Adam(lr="log_lr"),
           "momentum": lambda: inner.Momentum(lr="log_lr", momentum="logit_momentum")}[optimizer]()
    return NetProblem(model, X_train, y_train, X_val, y_val, loss, opt, steps, batch_size, defaults, layers)

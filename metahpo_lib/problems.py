r"""Bilevel problems (notebook 01).

Hyperparameter optimisation as a bilevel problem:

.. math::  \min_\lambda L_{val}(\theta^*(\lambda), \lambda) \quad
           \text{s.t.}\quad \theta^*(\lambda) = \arg\min_\theta L_{train}(\theta, \lambda)

A :class:`Bilevel` holds the two losses as plain functions of ``(params, hparams)``
dicts, the initial values, and optionally a closed-form inner solver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import _validate as V

TensorDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Bilevel:
    """A bilevel problem: ``inner_loss(params, hparams)`` (training objective),
    ``outer_loss(params, hparams)`` (validation objective), initial values, and an
    optional differentiable closed-form ``solve_inner(hparams) -> params``.

    ``data`` keeps the tensors the losses close over (for plots and metrics). Both losses are
    checked to return a scalar tensor, so a loss that returns a vector or a Python float fails
    at once with a clear message.

    >>> import torch
    >>> from metahpo_lib import problems
    >>> p = problems.Bilevel(inner_loss=lambda p, h: ((p["x"] - 1) ** 2).sum() + h["a"].exp() * p["x"].pow(2).sum(),
    ...                      outer_loss=lambda p, h: ((p["x"] - 2) ** 2).sum(),
    ...                      init_params=lambda: {"x": torch.zeros(3)}, init_hparams=lambda: {"a": torch.tensor(0.)})
    >>> p.inner_loss(p.init_params(), p.init_hparams())
    tensor(3.)
    """

    inner_loss: Callable[[TensorDict, TensorDict], torch.Tensor]
    outer_loss: Callable[[TensorDict, TensorDict], torch.Tensor]
    init_params: Callable[[], TensorDict]
    init_hparams: Callable[[], TensorDict]
    solve_inner: Callable[[TensorDict], TensorDict] | None = None
    name: str = "bilevel"
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("inner_loss", "outer_loss", "init_params", "init_hparams"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be a function, got {type(getattr(self, name)).__name__}")
        if self.solve_inner is not None and not callable(self.solve_inner):
            raise TypeError(f"solve_inner must be None or a function hparams -> params, got "
                            f"{type(self.solve_inner).__name__}")
        for name in ("inner_loss", "outer_loss"):
            object.__setattr__(self, name, _checked_loss(getattr(self, name), name))

    def check_hparams(self, hparams) -> TensorDict:
        """Raise a clear error unless ``hparams`` has the keys and shapes of ``init_hparams()``."""
        return V.tensor_dict(hparams, "hparams", self.init_hparams())

    def check_params(self, params) -> TensorDict:
        """Raise a clear error unless ``params`` has the keys and shapes of ``init_params()``."""
        return V.tensor_dict(params, "params", self.init_params())


def _checked_loss(f, name: str):
    """``f`` with its result checked to be a scalar tensor (once wrapped, not wrapped again)."""
    if getattr(f, "_checked", False):
        return f

    def loss(params, hparams):
        return V.scalar_loss(f(params, hparams), name)
    loss._checked = True
    loss.__wrapped__ = f
    return loss


def _check_xy(X, y, xname: str, yname: str, *, labels: bool = False) -> None:
    V.tensor(X, xname, ndim=2)
    if X.shape[0] == 0:
        raise ValueError(f"{xname} has no rows: a bilevel problem needs at least one training and one validation "
                         "example")
    if labels:
        V.tensor(y, yname, ndim=1, floating=False)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"{yname} must hold integer class labels (torch.long), got dtype {y.dtype}")
    else:
        V.tensor(y, yname, ndim=1)
    V.same_rows(X, y, xname, yname)
    if labels is False and y.dtype != X.dtype:
        raise TypeError(f"{xname} and {yname} must share a dtype, got {X.dtype} and {y.dtype}")


def _check_pair(X_train, X_val) -> None:
    if X_val.shape[1] != X_train.shape[1] or X_val.dtype != X_train.dtype or X_val.device != X_train.device:
        raise ValueError("X_val must match X_train in number of columns, dtype and device; got "
                         f"{tuple(X_val.shape)} {X_val.dtype} {X_val.device} vs "
                         f"{tuple(X_train.shape)} {X_train.dtype} {X_train.device}")


def ridge(X_train, y_train, X_val, y_val, per_feature: bool = False, log_alpha: float = 0.0) -> Bilevel:
    r"""Ridge regression as a bilevel problem.

    inner:  :math:`\frac{1}{2n}\|X w - y\|^2 + \frac12 \sum_j e^{\log\alpha_j} w_j^2`
    outer:  :math:`\frac{1}{2m}\|X_{val} w - y_{val}\|^2`
    closed form: :math:`w^* = (X^\top X/n + \mathrm{diag}(e^{\log\alpha}))^{-1} X^\top y / n`.

    params ``{"w": (d,)}``; hparams ``{"log_alpha": ()}`` or ``(d,)`` with ``per_feature``.
    No intercept: standardise the data first (``metahpo_lib.data`` does).

    >>> from metahpo_lib import data, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    >>> p.init_hparams()["log_alpha"].shape, round(float(p.outer_loss(p.solve_inner(p.init_hparams()), {})), 4)
    (torch.Size([10]), 0.2547)
    """
    _check_xy(X_train, y_train, "X_train", "y_train")
    _check_xy(X_val, y_val, "X_val", "y_val")
    _check_pair(X_train, X_val)
    n, d = X_train.shape
    m = X_val.shape[0]
    kw = dict(dtype=X_train.dtype, device=X_train.device)
    gram = X_train.T @ X_train / n
    rhs = X_train.T @ y_train / n

    def inner_loss(params, hparams):
        w = params["w"]
        return (X_train @ w - y_train).pow(2).sum() / (2 * n) + 0.5 * (hparams["log_alpha"].exp() * w.pow(2)).sum()

    def outer_loss(params, hparams):
        return (X_val @ params["w"] - y_val).pow(2).sum() / (2 * m)

    def solve_inner(hparams):
        alpha = hparams["log_alpha"].exp().expand(d)
        return {"w": torch.linalg.solve(gram + torch.diag(alpha), rhs)}

    shape = (d,) if per_feature else ()
    return Bilevel(
        inner_loss, outer_loss,
        init_params=lambda: {"w": torch.zeros(d, **kw)},
        init_hparams=lambda: {"log_alpha": torch.full(shape, float(log_alpha), **kw)},
        solve_inner=solve_inner, name="ridge" + ("(per-feature)" if per_feature else ""),
        data=dict(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val),
    )


def logistic(X_train, y_train, X_val, y_val, num_classes: int | None = None, per_feature: bool = False,
             log_alpha: float = -3.0) -> Bilevel:
    r"""L2-regularised logistic regression (binary or multiclass) as a bilevel problem.

    inner:  :math:`\frac1n \sum_i \mathrm{CE}(x_i W + b, y_i) + \frac12 \sum_j e^{\log\alpha_j} \|W_j\|^2`
    outer:  :math:`\frac1m \sum_i \mathrm{CE}(x^{val}_i W + b, y^{val}_i)`  (bias not penalised)

    Two classes use one logit (sigmoid): params ``{"W": (d,), "b": ()}``; C > 2 classes use
    softmax: ``{"W": (d, C), "b": (C,)}``. hparams ``{"log_alpha": ()}`` or ``(d,)``.
    No closed form: use an iterative inner solver (chapters 03-04).

    >>> from metahpo_lib import data, problems
    >>> s = data.load("iris", seed=0)
    >>> p = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> {k: tuple(v.shape) for k, v in p.init_params().items()}, round(float(p.outer_loss(p.init_params(), {})), 4)
    ({'W': (4, 3), 'b': (3,)}, 1.0986)
    """
    _check_xy(X_train, y_train, "X_train", "y_train", labels=True)
    _check_xy(X_val, y_val, "X_val", "y_val", labels=True)
    _check_pair(X_train, X_val)
    d = X_train.shape[1]
    C = int(num_classes) if num_classes is not None else int(max(y_train.max(), y_val.max())) + 1
    if C < 2:
        raise ValueError(f"num_classes must be >= 2, got {C}")
    if min(int(y_train.min()), int(y_val.min())) < 0 or int(max(y_train.max(), y_val.max())) >= C:
        raise ValueError(f"labels must lie in 0..{C - 1} (num_classes={C})")
    kw = dict(dtype=X_train.dtype, device=X_train.device)
    binary = C == 2

    def loss(params, X, y):
        logits = X @ params["W"] + params["b"]
        if binary:
            return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        return F.cross_entropy(logits, y)

    def penalty(params, hparams):
        W = params["W"]
        a = hparams["log_alpha"].exp()
        a = a if binary or a.ndim == 0 else a[:, None]
        return 0.5 * (a * W.pow(2)).sum()

    def inner_loss(params, hparams):
        return loss(params, X_train, y_train) + penalty(params, hparams)

    def outer_loss(params, hparams):
        return loss(params, X_val, y_val)

    wshape, bshape = ((d,), ()) if binary else ((d, C), (C,))
    return Bilevel(
        inner_loss, outer_loss,
        init_params=lambda: {"W": torch.zeros(wshape, **kw), "b": torch.zeros(bshape, **kw)},
        init_hparams=lambda: {"log_alpha": torch.full((d,) if per_feature else (), float(log_alpha), **kw)},
        name="logistic" + ("(per-feature)" if per_feature else ""),
        data=dict(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, num_classes=C),
    )


def predict_logistic(params: TensorDict, X: torch.Tensor) -> torch.Tensor:
    """Class predictions of a :func:`logistic` model (binary or multiclass).

    >>> import torch
    >>> from metahpo_lib import problems
    >>> problems.predict_logistic({"W": torch.eye(2), "b": torch.zeros(2)}, torch.tensor([[1., 0.], [0., 3.]]))
    tensor([0, 1])
    """
    logits = X @ params["W"] + params["b"]
    return (logits > 0).long() if logits.ndim == 1 else logits.argmax(-1)

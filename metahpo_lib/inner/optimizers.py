r"""Inner optimisers as small objects with one step interface (notebook 03).

Every optimiser follows the same two-method protocol, used by :func:`metahpo_lib.inner.run`,
:func:`metahpo_lib.hypergrad.unrolled`, :mod:`metahpo_lib.optim` and the MAML family::

    state = opt.init(params)                                   # dict of tensors (may be empty)
    params, state = opt.step(params, grads, state, hparams, t)  # pure: new dicts, inputs untouched

``t`` is the 0-based global step. Each step is an ordinary differentiable torch expression, so
reverse mode (``torch.autograd``) and forward mode (``torch.func.jvp``) can differentiate
through it, and ``torch.func.vmap`` can batch it.

- :class:`GD`:       :math:`\theta_{t+1} = \theta_t - \eta_t g_t`
- :class:`Momentum`: :math:`v_{t+1} = \mu v_t + g_t,\ \theta_{t+1} = \theta_t - \eta_t v_{t+1}` (``torch.optim.SGD`` form)
- :class:`Adam`:     :math:`\theta_{t+1} = \theta_t - \eta_t \hat m_t / (\sqrt{\hat v_t} + \epsilon)` (``torch.optim.Adam`` form)

**An optimiser's own hyperparameters may be hyperparameters of the bilevel problem.** The
learning rate ``lr`` may be a number, a tensor of shape ``()`` or ``(steps,)`` (a per-step
schedule), a dict like params (one rate per entry, as Meta-SGD learns), or the *name of an
hparams entry* that holds :math:`\log\eta` (shape ``()`` or ``(steps,)``); ``momentum`` may
likewise name an entry that holds :math:`\mathrm{logit}\,\mu`. Then every hypergradient method
returns :math:`dL_{val}/d\log\eta` like any other hyperparameter
(see :func:`metahpo_lib.inner.with_optimizer_hparams`).

To add an optimiser, subclass :class:`InnerOptimizer` and write ``init`` and ``step``; nothing
in the library needs to change.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .. import _validate as V

TensorDict = dict[str, torch.Tensor]

__all__ = ["InnerOptimizer", "GD", "Momentum", "Adam"]


def _check_lr(lr):
    """A learning rate given as a number, a tensor, a dict of tensors or an hparams key."""
    if isinstance(lr, str):
        return lr
    if isinstance(lr, Mapping):  # per-entry rates (Meta-SGD builds one per step: no device sync here)
        for k, v in lr.items():
            V.tensor(v, f"lr[{k!r}]", finite=False)
        return dict(lr)
    if isinstance(lr, torch.Tensor):
        V.tensor(lr, "lr", ndim=(0, 1))
        if bool((lr.detach() <= 0).any()):
            raise ValueError("lr must be > 0 everywhere")
        return lr
    return V.positive_float(lr, "lr")


class InnerOptimizer:
    """The step interface every inner optimiser follows (see the module docstring).

    Subclasses set ``lr`` and implement :meth:`step` (and :meth:`init` when they keep state).

    >>> import torch
    >>> from metahpo_lib import inner
    >>> class SignGD(inner.InnerOptimizer):                 # a new optimiser: no library edit needed
    ...     def __init__(self, lr):
    ...         self.lr = lr
    ...     def step(self, params, grads, state, hparams, t):
    ...         return {k: p - self.lr_at(hparams, t) * grads[k].sign() for k, p in params.items()}, state
    >>> SignGD(0.1).step({"w": torch.tensor([1., 1.])}, {"w": torch.tensor([3., -2.])}, {}, {}, 0)[0]
    {'w': tensor([0.9000, 1.1000])}
    """

    lr: float | torch.Tensor | dict | str

    def init(self, params: TensorDict) -> TensorDict:
        """The optimiser state for ``params`` (a dict of tensors; empty for plain GD)."""
        return {}

    def step(self, params: TensorDict, grads: TensorDict, state: TensorDict, hparams: TensorDict,
             t: int) -> tuple[TensorDict, TensorDict]:
        """One step at 0-based global step ``t``: returns ``(new params, new state)``."""
        raise NotImplementedError

    # ---- reading optimiser hyperparameters that live in hparams
    def hparam_keys(self) -> dict[str, str]:
        """The hparams entries this optimiser reads, as ``{key: what it holds}``."""
        return {self.lr: "log(lr)"} if isinstance(self.lr, str) else {}

    def check(self, hparams: TensorDict, steps: int) -> None:
        """Raise a clear error unless ``hparams`` holds the entries this optimiser reads, and a
        per-step schedule has one entry per step."""
        for key, what in self.hparam_keys().items():
            if key not in hparams:
                raise ValueError(f"{type(self).__name__} reads {what} from hparams[{key!r}], but hparams has "
                                 f"keys {sorted(hparams)}; add it with inner.with_optimizer_hparams")
        lr = hparams[self.lr] if isinstance(self.lr, str) else self.lr
        if isinstance(lr, torch.Tensor) and lr.ndim == 1 and lr.shape[0] != steps:
            raise ValueError(f"a per-step learning rate needs one entry per step ({steps}), got shape {tuple(lr.shape)}")
        if isinstance(lr, torch.Tensor) and lr.ndim > 1:
            raise ValueError(f"the learning rate must have shape () or (steps,), got {tuple(lr.shape)}")

    def lr_at(self, hparams: TensorDict, t: int):
        """The learning rate of step ``t``: a number, a tensor, or a dict of tensors (per entry)."""
        lr = self.lr
        if isinstance(lr, str):
            lr = hparams[lr].exp()
        if isinstance(lr, torch.Tensor) and lr.ndim == 1:
            lr = lr[t]
        return lr

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={_describe(v)}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


def _describe(v) -> str:
    if isinstance(v, str):
        return f"hparams[{v!r}]"
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    if isinstance(v, Mapping):
        return "{per-entry}"
    return repr(v)


def _scaled(params: TensorDict, direction: TensorDict, lr) -> TensorDict:
    """``params - lr * direction`` key by key; ``lr`` a number, a tensor or a dict like params."""
    if isinstance(lr, Mapping):
        return {k: p - lr[k] * direction[k] for k, p in params.items()}
    return {k: p - lr * direction[k] for k, p in params.items()}


class GD(InnerOptimizer):
    r"""Gradient descent, :math:`\theta_{t+1} = \theta_t - \eta_t \nabla_\theta L_{in}(\theta_t, \lambda)`.

    ``lr``: a number, a tensor ``()`` or ``(steps,)``, a dict like params, or the name of an
    hparams entry holding :math:`\log\eta` (module docstring).

    >>> import torch
    >>> from metahpo_lib import inner
    >>> opt = inner.GD(lr=0.5)
    >>> params, state = opt.step({"w": torch.tensor(2.0)}, {"w": torch.tensor(1.0)}, opt.init({}), {}, t=0)
    >>> params["w"]
    tensor(1.5000)
    """

    def __init__(self, lr):
        self.lr = _check_lr(lr)

    def step(self, params, grads, state, hparams, t):
        return _scaled(params, grads, self.lr_at(hparams, t)), state


class Momentum(InnerOptimizer):
    r"""Heavy-ball momentum in ``torch.optim.SGD`` form:
    :math:`v_{t+1} = \mu v_t + g_t,\ \theta_{t+1} = \theta_t - \eta_t v_{t+1}`, from :math:`v_0 = 0`.

    ``lr`` as :class:`GD`; ``momentum`` :math:`\mu`: a number in [0, 1), or the name of an
    hparams entry (shape ``()``) holding :math:`\mathrm{logit}\,\mu`.

    >>> import torch
    >>> from metahpo_lib import inner
    >>> opt = inner.Momentum(lr=0.1, momentum=0.9)
    >>> p, s = {"w": torch.tensor(1.0)}, opt.init({"w": torch.tensor(1.0)})
    >>> for t in range(2):
    ...     p, s = opt.step(p, {"w": torch.tensor(1.0)}, s, {}, t)
    >>> round(float(p["w"]), 4)  # 1 - 0.1 * (1 + 1.9)
    0.71
    """

    def __init__(self, lr, momentum=0.9):
        self.lr = _check_lr(lr)
        self.momentum = momentum if isinstance(momentum, str) else V.unit_interval(momentum, "momentum")

    def hparam_keys(self):
        keys = super().hparam_keys()
        if isinstance(self.momentum, str):
            keys[self.momentum] = "logit(momentum)"
        return keys

    def check(self, hparams, steps):
        super().check(hparams, steps)
        if isinstance(self.momentum, str) and hparams[self.momentum].ndim != 0:
            raise ValueError(f"hparams[{self.momentum!r}] (logit of the momentum) must be a scalar, "
                             f"got shape {tuple(hparams[self.momentum].shape)}")

    def init(self, params):
        return {"v." + k: torch.zeros_like(p) for k, p in params.items()}

    def step(self, params, grads, state, hparams, t):
        mu = torch.sigmoid(hparams[self.momentum]) if isinstance(self.momentum, str) else self.momentum
        velocity = {k: mu * state["v." + k] + grads[k] for k in params}
        new_state = {"v." + k: v for k, v in velocity.items()}
        return _scaled(params, velocity, self.lr_at(hparams, t)), new_state


class Adam(InnerOptimizer):
    r"""Adam in ``torch.optim.Adam`` form: :math:`m, v` moving averages of :math:`g, g^2` with
    rates ``betas``, :math:`\theta_{t+1} = \theta_t - \eta_t \hat m_t / (\sqrt{\hat v_t} + \epsilon)`
    with the bias corrections :math:`\hat m_t = m_t / (1 - \beta_1^{t+1})`, likewise :math:`\hat v_t`.

    ``lr`` as :class:`GD`; ``betas``: two numbers in [0, 1); ``epsilon`` > 0 (named so because
    ``eps`` in this library is only the finite-difference step).

    >>> import torch
    >>> from metahpo_lib import inner
    >>> opt = inner.Adam(lr=0.1)
    >>> p, s = opt.step({"w": torch.tensor(1.0)}, {"w": torch.tensor(3.0)}, opt.init({"w": torch.tensor(1.0)}), {}, 0)
    >>> round(float(p["w"]), 4)  # the first Adam step moves by lr whatever the gradient's size
    0.9
    """

    def __init__(self, lr, betas=(0.9, 0.999), epsilon: float = 1e-8):
        self.lr = _check_lr(lr)
        self.betas = V.betas(betas)
        self.epsilon = V.positive_float(epsilon, "epsilon")

    def init(self, params):
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return {**{"m." + k: z for k, z in zeros.items()}, **{"v." + k: z.clone() for k, z in zeros.items()}}

    def step(self, params, grads, state, hparams, t):
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        new_state, direction = {}, {}
        for k in params:
            m = b1 * state["m." + k] + (1 - b1) * grads[k]
            v = b2 * state["v." + k] + (1 - b2) * grads[k] * grads[k]
            # clamp_min keeps d sqrt(v)/dv finite where a gradient entry is exactly 0 (v = 0);
            # the value differs from sqrt(v) only below the smallest normal number.
            direction[k] = (m / c1) / ((v / c2).clamp_min(torch.finfo(v.dtype).tiny).sqrt() + self.epsilon)
            new_state["m." + k], new_state["v." + k] = m, v
        return _scaled(params, direction, self.lr_at(hparams, t)), new_state

r"""Inner optimisers in functional form (notebook 03).

:func:`run` applies T steps of an optimiser to ``problem.inner_loss`` starting from
``problem.init_params()`` (or given ``params``) and returns the final params as a dict. Every
step is an ordinary differentiable torch expression, so the result depends on the
hyperparameters through the whole trajectory and ``torch.autograd.grad`` (reverse mode) or
``torch.func.jvp`` (forward mode, see :func:`hypergrad.unrolled <metahpo_lib.hypergrad.unrolled>`)
can differentiate it:

- ``"gd"``:        :math:`\theta_{t+1} = \theta_t - \eta_t\, g_t`, with :math:`g_t = \nabla_\theta L_{in}(\theta_t, \lambda)`
- ``"momentum"``:  :math:`v_{t+1} = \mu v_t + g_t,\ \theta_{t+1} = \theta_t - \eta_t v_{t+1}` (heavy ball, ``torch.optim.SGD`` form)
- ``"adam"``:      :math:`m, v` moving averages of :math:`g, g^2`;
  :math:`\theta_{t+1} = \theta_t - \eta_t\, \hat m / (\sqrt{\hat v} + \epsilon)` (``torch.optim.Adam`` form)

**Optimiser hyperparameters.** The learning rate and the momentum can themselves be
hyperparameters: when ``hparams`` holds the key ``"log_lr"`` (shape ``()`` or ``(steps,)``
for a per-step schedule), :math:`\eta_t = e^{\log\eta_t}` and the ``lr`` argument must be left
out; when it holds ``"logit_momentum"`` (shape ``()``), :math:`\mu = \sigma(\text{logit})`.
:func:`with_optimizer_hparams` adds these keys to a problem's ``init_hparams`` (the losses
ignore them), so every hypergradient method returns d L_val / d log_lr like any other entry.

:func:`minimize` is the accurate, *non-differentiable* solver (L-BFGS, then Newton polishing
for small problems) used when a method needs θ*(λ) itself (finite differences, implicit
differentiation).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from tqdm.auto import tqdm

from .. import _validate as V
from ..problems import Bilevel

TensorDict = dict[str, torch.Tensor]

OPTIMIZERS = ("gd", "momentum", "adam")
#: hparams keys that :func:`run` reads as optimiser hyperparameters (and what they mean)
OPTIMIZER_KEYS = {"log_lr": "learning rate = exp(log_lr), shape () or (steps,)",
                  "logit_momentum": "momentum = sigmoid(logit_momentum), shape ()"}

__all__ = ["run", "minimize", "with_optimizer_hparams", "DivergenceError", "OPTIMIZERS", "OPTIMIZER_KEYS"]


class DivergenceError(ValueError):
    """The inner loop produced a NaN or infinite loss (usually: the learning rate is too large)."""


# --------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class _Config:
    optimizer: str
    lr: float | torch.Tensor | None   # None: taken from hparams["log_lr"]
    momentum: float | None            # None: taken from hparams["logit_momentum"] (momentum only)
    betas: tuple[float, float]
    eps: float
    total_steps: int


def _check_problem(problem) -> None:
    if not isinstance(problem, Bilevel):
        raise TypeError(f"problem must be a metahpo_lib.problems.Bilevel, got {type(problem).__name__}")


def _config(hparams: TensorDict, *, steps, lr, optimizer, momentum, betas, eps) -> _Config:
    """Validate the optimiser options against ``hparams`` (which may carry log_lr / logit_momentum)."""
    V.positive_int(steps, "steps")
    V.choice(optimizer, "optimizer", OPTIMIZERS)
    if "log_lr" in hparams:
        if lr is not None:
            raise ValueError("lr was given both as an argument and as hparams['log_lr']; leave out the lr "
                             "argument when the learning rate is a hyperparameter")
        shape = tuple(hparams["log_lr"].shape)
        if shape not in ((), (steps,)):
            raise ValueError(f"hparams['log_lr'] must have shape () or (steps,) = ({steps},), got {shape}")
    elif lr is None:
        raise ValueError("lr is required (a positive number or tensor) unless hparams has a 'log_lr' entry")
    elif isinstance(lr, torch.Tensor):
        V.tensor(lr, "lr", ndim=(0, 1))
        if lr.ndim == 1 and lr.shape[0] != steps:
            raise ValueError(f"lr as a 1-d tensor must have one entry per step ({steps}), got shape {tuple(lr.shape)}")
        if bool((lr.detach() <= 0).any()):
            raise ValueError("lr must be > 0")
    else:
        lr = V.positive_float(lr, "lr")
    if "logit_momentum" in hparams:
        if optimizer != "momentum":
            raise ValueError(f"hparams['logit_momentum'] is only used with optimizer='momentum', got optimizer={optimizer!r}")
        if momentum is not None:
            raise ValueError("momentum was given both as an argument and as hparams['logit_momentum']")
        if hparams["logit_momentum"].ndim != 0:
            raise ValueError(f"hparams['logit_momentum'] must be a scalar, got shape {tuple(hparams['logit_momentum'].shape)}")
    elif optimizer == "momentum":
        momentum = 0.9 if momentum is None else V.positive_float(momentum, "momentum", allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    elif momentum is not None:
        raise ValueError(f"momentum is only used with optimizer='momentum', got optimizer={optimizer!r}")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= float(b) < 1 for b in betas)):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    V.positive_float(eps, "eps")
    return _Config(optimizer, lr, momentum, (float(betas[0]), float(betas[1])), float(eps), steps)


def _lr_at(cfg: _Config, hparams: TensorDict, t: int):
    lr = hparams["log_lr"].exp() if cfg.lr is None else cfg.lr
    if isinstance(lr, torch.Tensor) and lr.ndim == 1:
        lr = lr[t]
    return lr


def _momentum(cfg: _Config, hparams: TensorDict):
    return torch.sigmoid(hparams["logit_momentum"]) if cfg.momentum is None else cfg.momentum


def _init_state(cfg: _Config, params: TensorDict) -> TensorDict:
    if cfg.optimizer == "momentum":
        return {"v." + k: torch.zeros_like(p) for k, p in params.items()}
    if cfg.optimizer == "adam":
        return {**{"m." + k: torch.zeros_like(p) for k, p in params.items()},
                **{"v." + k: torch.zeros_like(p) for k, p in params.items()}}
    return {}


def _update(cfg: _Config, params: TensorDict, state: TensorDict, grads: TensorDict, hparams: TensorDict, t: int):
    """One optimiser step at (0-based) global step ``t``: returns (params, state). Pure function."""
    lr = _lr_at(cfg, hparams, t)
    if cfg.optimizer == "gd":
        return {k: p - lr * grads[k] for k, p in params.items()}, state
    if cfg.optimizer == "momentum":
        mu = _momentum(cfg, hparams)
        new_state = {"v." + k: mu * state["v." + k] + grads[k] for k in params}
        return {k: p - lr * new_state["v." + k] for k, p in params.items()}, new_state
    b1, b2 = cfg.betas
    c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
    new_params, new_state = {}, {}
    for k, p in params.items():
        m = b1 * state["m." + k] + (1 - b1) * grads[k]
        v = b2 * state["v." + k] + (1 - b2) * grads[k] * grads[k]
        # clamp_min keeps d sqrt(v)/dv finite where a gradient entry is exactly 0 (v = 0);
        # the value differs from sqrt(v) only below the smallest normal number.
        denom = (v / c2).clamp_min(torch.finfo(v.dtype).tiny).sqrt() + cfg.eps
        new_params[k] = p - lr * (m / c1) / denom
        new_state["m." + k], new_state["v." + k] = m, v
    return new_params, new_state


# --------------------------------------------------------------------------- gradients
def _grad_autograd(problem, params: TensorDict, hparams: TensorDict, create_graph: bool):
    """(grads, loss) with torch.autograd; keeps the graph to the hyperparameters when asked."""
    with torch.enable_grad():
        ps = {k: p if p.requires_grad else p.detach().requires_grad_(True) for k, p in params.items()}
        loss = problem.inner_loss(ps, hparams)
        keys = list(ps)
        gs = torch.autograd.grad(loss, [ps[k] for k in keys], create_graph=create_graph, allow_unused=True)
    grads = {k: torch.zeros_like(ps[k]) if g is None else g for k, g in zip(keys, gs)}
    if not create_graph:
        grads = {k: g.detach() for k, g in grads.items()}
    return grads, loss.detach()


def _raise_if_diverged(losses: list, start: int, cfg: _Config, final_params: TensorDict | None = None) -> None:
    if not losses:
        return
    ls = torch.stack(losses)
    bad = ~torch.isfinite(ls)
    if bool(bad.any()):
        i = start + int(bad.nonzero()[0, 0])
        last_ok = float(ls[i - start - 1]) if i > start else float("nan")
        raise DivergenceError(
            f"the inner loop diverged: inner_loss is {float(ls[i - start])} at step {i} of {cfg.total_steps} "
            f"(optimizer={cfg.optimizer!r}, lr={_describe_lr(cfg)}; last finite loss {last_ok:.4g}). "
            "Use a smaller learning rate.")
    if final_params is not None and not all(bool(torch.isfinite(p).all()) for p in final_params.values()):
        raise DivergenceError(
            f"the inner loop diverged: params became NaN/inf at the last step {cfg.total_steps} "
            f"(optimizer={cfg.optimizer!r}, lr={_describe_lr(cfg)}). Use a smaller learning rate.")


def _describe_lr(cfg: _Config) -> str:
    if cfg.lr is None:
        return "exp(hparams['log_lr'])"
    if isinstance(cfg.lr, torch.Tensor):
        return f"tensor (max {float(cfg.lr.detach().max()):.4g})"
    return f"{cfg.lr:g}"


def _unroll(problem, hparams: TensorDict, params: TensorDict, state: TensorDict, cfg: _Config, *, start: int,
            steps: int, differentiable: bool, progress: bool = False, check_every: int = 50):
    """Run ``steps`` steps from global step ``start``; returns (params, state, losses list)."""
    losses = []
    it = range(start, start + steps)
    for t in tqdm(it, desc=f"inner {cfg.optimizer}", disable=not progress, leave=False):
        grads, loss = _grad_autograd(problem, params, hparams, differentiable)
        losses.append(loss)
        if differentiable:
            with torch.enable_grad():  # also under an outer torch.no_grad()
                params, state = _update(cfg, params, state, grads, hparams, t)
        else:  # no graph at all, the optimiser state included
            with torch.no_grad():
                params, state = _update(cfg, {k: p.detach() for k, p in params.items()}, state, grads, hparams, t)
        if (t - start + 1) % check_every == 0:
            _raise_if_diverged(losses, start, cfg)
    if not differentiable:
        params = {k: p.detach() for k, p in params.items()}
        state = {k: s.detach() for k, s in state.items()}
    _raise_if_diverged(losses, start, cfg, params)
    return params, state, losses


def _start_params(problem, params) -> TensorDict:
    if params is None:
        return problem.init_params()
    return problem.check_params(params)


def run(problem, hparams, *, steps: int, lr=None, optimizer: str = "gd", params=None, momentum: float | None = None,
        betas=(0.9, 0.999), eps: float = 1e-8, differentiable: bool | None = None, return_losses: bool = False,
        progress: bool = False):
    r"""Run ``steps`` steps of ``optimizer`` on ``problem.inner_loss(·, hparams)``; return the final params.

    ``lr``: a number, a 0-d tensor or a ``(steps,)`` tensor (per-step schedule); leave it out when
    ``hparams`` holds ``"log_lr"``. ``momentum`` (default 0.9) for ``"momentum"``, ``betas``/``eps`` for ``"adam"``.
    ``params``: start here instead of ``problem.init_params()`` (its graph, if any, is kept).
    ``differentiable``: keep the graph so the result can be differentiated w.r.t. ``hparams``
    (default: when some hparam, a tensor ``lr`` or the given ``params`` require grad; ``True``
    when none does is an error).
    ``return_losses``: also return the ``(steps,)`` tensor of inner losses :math:`L_{in}(\theta_t, \lambda)`, t < steps.
    Raises :class:`DivergenceError` (a ``ValueError``) naming the step where the loss became NaN/inf.
    """
    _check_problem(problem)
    hparams = problem.check_hparams(hparams)
    cfg = _config(hparams, steps=steps, lr=lr, optimizer=optimizer, momentum=momentum, betas=betas, eps=eps)
    p0 = _start_params(problem, params)
    needs_grad = (any(h.requires_grad for h in hparams.values())
                  or (isinstance(cfg.lr, torch.Tensor) and cfg.lr.requires_grad)
                  or (params is not None and any(p.requires_grad for p in p0.values())))
    if differentiable is None:
        differentiable = needs_grad
    elif differentiable and not needs_grad:
        raise ValueError("differentiable=True but no entry of hparams (nor lr, nor the given params) requires grad, "
                         "so the result could not be differentiated; prepare them with "
                         "metahpo_lib.hypergrad.prepare_hparams(problem, hparams) or call .requires_grad_() on them")
    out, _, losses = _unroll(problem, hparams, p0, _init_state(cfg, p0), cfg, start=0, steps=steps,
                             differentiable=bool(differentiable), progress=progress)
    return (out, torch.stack(losses)) if return_losses else out


def with_optimizer_hparams(problem, *, lr: float | None = None, momentum: float | None = None,
                           schedule: int | None = None) -> Bilevel:
    r"""A copy of ``problem`` whose ``init_hparams()`` also holds ``"log_lr" = log(lr)`` and/or
    ``"logit_momentum" = logit(momentum)``, so that hypergradient methods differentiate w.r.t. them.
    ``schedule=T`` makes ``log_lr`` a ``(T,)`` per-step schedule (use with ``steps=T``).

    The losses and ``solve_inner`` ignore the new keys (θ*(λ) does not depend on the optimiser,
    only an unrolled θ_T does).
    """
    _check_problem(problem)
    if lr is None and momentum is None:
        raise ValueError("give lr and/or momentum (the initial values of the new hyperparameters)")
    extra = {}
    if lr is not None:
        extra["log_lr"] = math.log(V.positive_float(lr, "lr"))
    if momentum is not None:
        m = V.positive_float(momentum, "momentum")
        if m >= 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum!r}")
        extra["logit_momentum"] = math.log(m / (1 - m))
    if schedule is not None:
        V.positive_int(schedule, "schedule")
        if lr is None:
            raise ValueError("schedule needs lr (the initial value of every step's learning rate)")
    clash = sorted(set(extra) & set(problem.init_hparams()))
    if clash:
        raise ValueError(f"problem already has hyperparameters {clash}")
    base = problem.init_hparams

    def init_hparams():
        h = base()
        ref = next(iter(h.values())) if h else next(iter(problem.init_params().values()))
        new = {k: torch.tensor(v, dtype=ref.dtype, device=ref.device) for k, v in extra.items()}
        if schedule is not None:
            new["log_lr"] = new["log_lr"].expand(schedule).clone()
        return {**h, **new}

    return dataclasses.replace(problem, init_hparams=init_hparams, name=f"{problem.name}+{'+'.join(extra)}")


# --------------------------------------------------------------------------- accurate solver
def _flat(params: TensorDict) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def _unflat(x: torch.Tensor, like: TensorDict) -> TensorDict:
    out, i = {}, 0
    for k, p in like.items():
        out[k] = x[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def _cg(hvp, b: torch.Tensor, iters: int, rtol: float) -> torch.Tensor:
    """Conjugate gradient for H x = b with H given as a Hessian-vector product."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = (rtol * b.norm()) ** 2
    for _ in range(iters):
        if rr <= stop:
            break
        Hp = hvp(p)
        a = rr / (p @ Hp)
        x = x + a * p
        r = r - a * Hp
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def minimize(problem, hparams, *, params=None, tol: float = 1e-10, max_iter: int = 500,
             newton_steps: int = 5, warn: bool = True) -> TensorDict:
    r"""θ*(λ) = argmin_θ ``problem.inner_loss(θ, λ)``, accurately and **without** a graph to λ.

    L-BFGS (strong Wolfe line search, at most ``max_iter`` iterations) on detached copies, then up
    to ``newton_steps`` Newton steps (the Newton system solved by conjugate gradient with
    Hessian-vector products) until the largest gradient entry is ≤ ``tol``. Meant for smooth,
    strongly convex inner problems (ridge, logistic). Returns detached params on the device and
    dtype of ``init_params()``; warns if ``tol`` was not reached.
    """
    _check_problem(problem)
    hparams = {k: v.detach() for k, v in problem.check_hparams(hparams).items()}
    V.positive_float(tol, "tol")
    V.positive_int(max_iter, "max_iter")
    V.positive_int(newton_steps, "newton_steps", 0)
    like = _start_params(problem, params)
    like = {k: v.detach() for k, v in like.items()}

    def f(x):
        return problem.inner_loss(_unflat(x, like), hparams)

    def loss_grad(x, create_graph=False):
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            loss = f(xx)
            g = torch.autograd.grad(loss, xx, create_graph=create_graph)[0]
        return xx, loss, g

    x = _flat(like).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = f(x)
        if not torch.isfinite(loss):
            raise DivergenceError(f"minimize: inner_loss became {float(loss)}; check the problem and hparams")
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    x = x.detach()
    _, loss, g = loss_grad(x)
    gmax = float(g.abs().max())
    for _ in range(newton_steps):
        if gmax <= tol:
            break
        xx, _, gg = loss_grad(x, create_graph=True)
        with torch.enable_grad():
            def hvp(v):
                return torch.autograd.grad(gg, xx, v, retain_graph=True)[0]
            step = _cg(hvp, gg.detach(), iters=max(50, min(len(x), 500)), rtol=1e-12)
        x_new = x - step
        _, loss_new, g_new = loss_grad(x_new)
        gmax_new = float(g_new.abs().max())
        if not math.isfinite(gmax_new) or gmax_new >= gmax:
            break
        x, gmax = x_new, gmax_new
    if warn and gmax > tol:
        warnings.warn(f"inner.minimize stopped with max |grad| = {gmax:.3g} > tol = {tol:g}; "
                      "raise max_iter or tol", RuntimeWarning, stacklevel=2)
    return {k: v.clone() for k, v in _unflat(x, like).items()}

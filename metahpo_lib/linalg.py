r"""Matrix-free linear algebra for implicit hypergradients (notebook 04).

The implicit function theorem asks for the solution of :math:`H q = v`, where
:math:`H = \nabla^2_\theta L_{train}(\theta^*, \lambda)` is far too large to form. Every solver
here only needs a function ``matvec(q) -> H q`` (a Hessian-vector product, see :func:`hvp`):

- :func:`cg`: conjugate gradient, optionally preconditioned (Jacobi diagonal or any
  ``z = M r``), for symmetric positive-definite ``H``;
- :func:`neumann`: the truncated Neumann series
  :math:`q_K = \alpha \sum_{k=0}^{K-1} (I - \alpha H)^k v`;
- :func:`fixed_point`: the iteration :math:`q \leftarrow q - \alpha (H q - v) + \beta (q - q_{prev})`
  (Richardson; heavy ball when ``momentum`` β > 0; from ``x0 = 0`` and β = 0 it reproduces
  :func:`neumann` iterate by iterate).

``v`` may be a Tensor or a params dict ``{name: Tensor}``; the solution has the same
structure. Each solver returns a :class:`SolveResult` with the solution ``.x``, the residual
history ``.residuals`` (``||v - H q_k||`` for k = 0, 1, ..., as Python floats) and
``.converged`` (``||v - H q|| <= tol * ||v||``). Solvers never return NaN silently: a
direction of non-positive curvature met by CG, a diverging Neumann / fixed-point iteration
(step too large, or ``H`` not positive definite) or a non-finite value raise a
:class:`SolverError` (a ``ValueError``), or warn and stop with ``on_failure="warn"``.

Hessian-vector products (:func:`hvp`). Measured on this course's problems (CPU, float64,
``torch.set_num_threads(1)``, median time of one product after a warm-up; the script is
``benchmarks/hypergrad_implicit.py``, ``python -m benchmarks.hypergrad_implicit --hvp``)::

    HVP_TABLE_PLACEHOLDER

``"double_backward"`` builds the graph of :math:`\nabla_\theta L` once (``create_graph=True``)
and each product is a single backward pass through that graph (``retain_graph=True``); the
``torch.func`` variants re-trace the loss at every product (``jvp_grad``: forward-over-reverse)
or keep a functional vjp closure (``vjp_grad``). Re-using the graph is the fastest on small and
medium problems because the per-product Python/dispatcher overhead dominates there, and it
stays within a small factor on large ones; it is the default. ``jvp_grad`` needs no retained
graph (less memory when ``L`` has a big graph) and is offered for that case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from . import _validate as V

__all__ = ["SolveResult", "SolverError", "cg", "neumann", "fixed_point", "hvp", "hessian_diagonal",
           "max_eigenvalue", "tree_norm", "tree_dot"]

Tree = torch.Tensor | dict  # a Tensor or a dict str -> Tensor


class SolverError(ValueError):
    """A matrix-free solver could not continue (non-positive curvature, divergence, NaN)."""


@dataclass
class SolveResult:
    """Result of a matrix-free solve of ``H x = b``.

    ``x``: the solution (same structure as ``b``); ``residuals``: ``||b - H x_k||`` for every
    iterate, starting with the initial guess (floats); ``converged``: whether
    ``||b - H x|| <= tol * ||b||`` was reached; ``iters``: iterations (matvecs) done;
    ``message``: why it stopped.
    """

    x: Tree
    residuals: list[float] = field(default_factory=list)
    converged: bool = False
    iters: int = 0
    message: str = ""
    b_norm: float = 0.0

    @property
    def residual(self) -> float:
        """Final absolute residual ``||b - H x||``."""
        return self.residuals[-1] if self.residuals else float("nan")

    @property
    def relative_residual(self) -> float:
        """Final relative residual ``||b - H x|| / ||b||`` (0 when b = 0)."""
        return self.residual / self.b_norm if self.b_norm > 0 else 0.0

    def __repr__(self) -> str:
        return (f"SolveResult(converged={self.converged}, iters={self.iters}, "
                f"relative_residual={self.relative_residual:.3g}, message={self.message!r})")


# ----------------------------------------------------------------------------- tree helpers
def _check_tree(x, name: str) -> Tree:
    if isinstance(x, torch.Tensor):
        V.tensor(x, name)
        return x
    if isinstance(x, Mapping):
        if not x:
            raise ValueError(f"{name} must be a non-empty dict of tensors")
        V.tensor_dict(x, name)
        for k, t in x.items():
            V.tensor(t, f"{name}[{k!r}]")
        return dict(x)
    raise TypeError(f"{name} must be a torch.Tensor or a dict of str to torch.Tensor, got {type(x).__name__}")


def _same_structure(a: Tree, b: Tree, name_a: str, name_b: str) -> None:
    if isinstance(b, torch.Tensor):
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            raise ValueError(f"{name_a} must have the structure of {name_b}: a tensor of shape {tuple(b.shape)}, "
                             f"got {_describe(a)}")
    else:
        if not isinstance(a, Mapping) or set(a) != set(b) or any(a[k].shape != b[k].shape for k in b):
            raise ValueError(f"{name_a} must have the structure of {name_b}: a dict with keys and shapes "
                             f"{ {k: tuple(v.shape) for k, v in b.items()} }, got {_describe(a)}")


def _describe(a) -> str:
    if isinstance(a, torch.Tensor):
        return f"a tensor of shape {tuple(a.shape)}"
    if isinstance(a, Mapping):
        return f"a dict with keys and shapes { {k: tuple(getattr(v, 'shape', ())) for k, v in a.items()} }"
    return f"a {type(a).__name__}"


def _map(f, *xs):
    if isinstance(xs[0], torch.Tensor):
        return f(*xs)
    return {k: f(*(x[k] for x in xs)) for k in xs[0]}


def tree_dot(a: Tree, b: Tree) -> torch.Tensor:
    """Inner product ``<a, b>`` of two tensors or two dicts of tensors (a 0-dim tensor)."""
    if isinstance(a, torch.Tensor):
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return sum(torch.dot(a[k].reshape(-1), b[k].reshape(-1)) for k in a)


def tree_norm(a: Tree) -> torch.Tensor:
    """Euclidean norm of a tensor or of all tensors of a dict together (a 0-dim tensor)."""
    return tree_dot(a, a).sqrt()


def _flat_numel(a: Tree) -> int:
    return a.numel() if isinstance(a, torch.Tensor) else sum(t.numel() for t in a.values())


def _check_matvec(matvec) -> Callable:
    if not callable(matvec):
        raise TypeError(f"matvec must be a function q -> H q, got {type(matvec).__name__}")
    return matvec


def _apply(matvec, x: Tree, b: Tree) -> Tree:
    out = matvec(x)
    if isinstance(b, torch.Tensor):
        if not isinstance(out, torch.Tensor) or out.shape != b.shape:
            raise ValueError(f"matvec must return the structure of b ({_describe(b)}), got {_describe(out)}")
    elif not isinstance(out, Mapping) or set(out) != set(b):
        raise ValueError(f"matvec must return the structure of b ({_describe(b)}), got {_describe(out)}")
    return out


def _preconditioner(precondition, b: Tree) -> Callable[[Tree], Tree] | None:
    """None, a callable r -> M r, or the Hessian diagonal (Jacobi) as a tensor/dict like b."""
    if precondition is None:
        return None
    if callable(precondition) and not isinstance(precondition, (torch.Tensor, Mapping)):
        return precondition
    if isinstance(precondition, (torch.Tensor, Mapping)):
        diag = _check_tree(precondition, "precondition")
        _same_structure(diag, b, "precondition (the Hessian diagonal)", "b")
        bad = _map(lambda d: bool((d <= 0).any()), diag)
        if bad is True or (isinstance(bad, dict) and any(bad.values())):
            raise ValueError("precondition (the Hessian diagonal for Jacobi preconditioning) must be > 0 "
                             "everywhere; a non-positive diagonal means H is not positive definite")
        inv = _map(torch.reciprocal, diag)
        return lambda r: _map(torch.mul, r, inv)
    raise TypeError("precondition must be None, a function r -> M r, or the Hessian diagonal as a tensor or "
                    f"dict like b (Jacobi), got {type(precondition).__name__}")


def _fail(msg: str, on_failure: str, stacklevel: int = 3) -> None:
    if on_failure == "raise":
        raise SolverError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)


def _common_args(b, iters, tol, on_failure):
    b = _check_tree(b, "b")
    iters = V.positive_int(iters, "iters")
    tol = V.positive_float(tol, "tol")
    V.choice(on_failure, "on_failure", {"raise", "warn"})
    return b, iters, tol


# ----------------------------------------------------------------------------- solvers
def cg(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 100, tol: float = 1e-10, precondition=None,
       x0: Tree | None = None, on_failure: str = "raise") -> SolveResult:
    r"""Conjugate gradient for :math:`H x = b`, ``H`` symmetric positive definite, given as ``matvec``.

    Stops when :math:`\|b - Hx\| \le \mathrm{tol}\,\|b\|` or after ``iters`` matvecs.
    ``precondition``: None, a function ``r -> M r`` with ``M ≈ H^{-1}`` (symmetric positive
    definite), or the diagonal of ``H`` (a tensor/dict like ``b``) for Jacobi preconditioning.
    ``x0``: initial guess (default zeros). A direction with :math:`p^\top H p \le 0` (``H`` not
    positive definite) or a non-finite value raises :class:`SolverError`; with
    ``on_failure="warn"`` it warns and returns the last good iterate (``converged=False``).
    """
    b, iters, tol = _common_args(b, iters, tol, on_failure)
    _check_matvec(matvec)
    M = _preconditioner(precondition, b)
    if x0 is None:
        x = _map(torch.zeros_like, b)
        r = b
    else:
        x = _check_tree(x0, "x0")
        _same_structure(x, b, "x0", "b")
        r = _map(torch.sub, b, _apply(matvec, x, b))
    b_norm = float(tree_norm(b))
    res = [float(tree_norm(r))]
    out = SolveResult(x, res, b_norm=b_norm)
    if not math.isfinite(res[0]):
        _fail("cg: the initial residual b - H x0 is not finite (NaN or inf in b, x0 or H x0)", on_failure)
        out.message = "non-finite initial residual"
        return out
    z = r if M is None else M(r)
    p = z
    rz = tree_dot(r, z)
    thresh = tol * b_norm
    k = 0
    while True:
        if res[-1] <= thresh:
            out.converged, out.message = True, f"converged: relative residual <= tol={tol:g}"
            break
        if k == iters:
            out.message = f"reached iters={iters} with relative residual {res[-1] / max(b_norm, 1e-300):.3g}"
            break
        Ap = _apply(matvec, p, b)
        pAp = tree_dot(p, Ap)
        alpha = rz / pAp
        x_new = _map(lambda xi, pi: xi + alpha * pi, x, p)
        r_new = _map(lambda ri, ai: ri - alpha * ai, r, Ap)
        z_new = r_new if M is None else M(r_new)
        rz_new = tree_dot(r_new, z_new)
        rr = tree_dot(r_new, r_new)
        pAp_f, rr_f, rz_f = torch.stack([pAp, rr, rz_new]).tolist()  # one device sync per iteration
        k += 1
        if not pAp_f > 0:
            msg = (f"cg: H is not positive definite: met a direction p with p^T H p = {pAp_f:.3g} <= 0 at "
                   f"iteration {k}; CG needs a symmetric positive-definite H (is params a minimum of the inner "
                   "loss? add damping, or use a smaller model)") if math.isfinite(pAp_f) else (
                   f"cg: H p is not finite (NaN or inf) at iteration {k}")
            _fail(msg, on_failure)
            out.message = msg
            break
        if not (math.isfinite(rr_f) and math.isfinite(rz_f)):
            msg = f"cg: the residual became non-finite at iteration {k}"
            _fail(msg, on_failure)
            out.message = msg
            break
        if M is not None and not rz_f > 0 and rr_f > 0:
            msg = f"cg: the preconditioner is not positive definite (r^T M r = {rz_f:.3g} at iteration {k})"
            _fail(msg, on_failure)
            out.message = msg
            break
        x, r = x_new, r_new
        res.append(math.sqrt(rr_f))
        out.x, out.iters = x, k
        if rr_f == 0:
            continue
        beta = rz_new / rz
        p = _map(lambda zi, pi: zi + beta * pi, z_new, p)
        rz = rz_new
    out.x, out.iters = x, k
    return out


def _check_step(step, matvec, b) -> float:
    if step is None:
        return 1.0 / max_eigenvalue(matvec, b)
    return V.positive_float(step, "step")


def _diverging(res: list[float], b_norm: float, window: int = 3) -> bool:
    """True when the residual grew in each of the last ``window`` steps (by more than round-off)
    and is above its starting value: the iteration map is not a contraction."""
    if len(res) <= window or not math.isfinite(res[-1]):
        return not math.isfinite(res[-1])
    tail = res[-window - 1:]
    grew = all(b_ > a_ * (1 + 1e-6) for a_, b_ in zip(tail, tail[1:]))
    return grew and res[-1] > res[0] and res[-1] > 1e-12 * b_norm


def _linear_iteration(matvec, b, iters, tol, step, momentum, x0, on_failure, name) -> SolveResult:
    b_norm = float(tree_norm(b))
    if x0 is None:
        x = _map(torch.zeros_like, b)
        r = b  # residual b - H x
    else:
        x = _check_tree(x0, "x0")
        _same_structure(x, b, "x0", "b")
        r = _map(torch.sub, b, _apply(matvec, x, b))
    res = [float(tree_norm(r))]
    out = SolveResult(x, res, b_norm=b_norm)
    x_prev = x
    k = 0
    while True:
        if res[-1] <= tol * b_norm:
            out.converged, out.message = True, f"converged: relative residual <= tol={tol:g}"
            break
        if k == iters:
            out.message = f"reached iters={iters} with relative residual {res[-1] / max(b_norm, 1e-300):.3g}"
            break
        if momentum:
            x_new = _map(lambda xi, ri, pi: xi + step * ri + momentum * (xi - pi), x, r, x_prev)
        else:
            x_new = _map(lambda xi, ri: xi + step * ri, x, r)
        x_prev, x = x, x_new
        r = _map(torch.sub, b, _apply(matvec, x, b))
        k += 1
        res.append(float(tree_norm(r)))
        out.x, out.iters = x, k
        if _diverging(res, b_norm):
            msg = (f"{name}: the residual is growing (||b - H x|| = {res[-4]:.3g} -> {res[-1]:.3g} over the last 3 "
                   f"iterations, started at {res[0]:.3g}): step={step:.3g} is too large for convergence "
                   "(it needs step < 2 / lambda_max(H); try step=None to estimate it) or H is not positive definite")
            if not math.isfinite(res[-1]):
                msg = f"{name}: the iteration produced NaN or inf at iteration {k} (step={step:.3g} too large?)"
            _fail(msg, on_failure, stacklevel=4)
            out.message = msg
            break
    return out


def neumann(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 100, tol: float = 1e-10,
            step: float | None = None, on_failure: str = "raise") -> SolveResult:
    r"""Truncated Neumann series :math:`x_K = \alpha \sum_{k=0}^{K-1} (I - \alpha H)^k b \approx H^{-1} b`.

    Converges when :math:`0 < \alpha < 2/\lambda_{max}(H)` and ``H`` is positive definite, at
    the rate :math:`\max_i |1 - \alpha \lambda_i|` per term. ``step`` α (default: ``1 /``
    :func:`max_eigenvalue`, a few extra matvecs). One matvec per term; the residual history is
    ``||b - H x_k||``. A residual that keeps growing (step too large, or ``H`` not positive
    definite) raises :class:`SolverError` (or warns and stops with ``on_failure="warn"``).
    """
    b, iters, tol = _common_args(b, iters, tol, on_failure)
    _check_matvec(matvec)
    step = _check_step(step, matvec, b)
    # term p_k = (I - aH)^k b; partial sum x_K = a sum_{k<K} p_k; residual b - H x_K = p_K
    p = b
    x = _map(torch.zeros_like, b)
    b_norm = float(tree_norm(b))
    res = [b_norm]
    out = SolveResult(x, res, b_norm=b_norm)
    k = 0
    while True:
        if res[-1] <= tol * b_norm:
            out.converged, out.message = True, f"converged: relative residual <= tol={tol:g}"
            break
        if k == iters:
            out.message = f"reached iters={iters} with relative residual {res[-1] / max(b_norm, 1e-300):.3g}"
            break
        x = _map(lambda xi, pi: xi + step * pi, x, p)
        Hp = _apply(matvec, p, b)
        p = _map(lambda pi, hi: pi - step * hi, p, Hp)
        k += 1
        res.append(float(tree_norm(p)))
        out.x, out.iters = x, k
        if _diverging(res, b_norm):
            msg = (f"neumann: the residual is growing (||b - H x|| = {res[-4]:.3g} -> {res[-1]:.3g} over the last 3 "
                   f"terms, started at {res[0]:.3g}): step={step:.3g} is too large for the series to converge "
                   "(it needs step < 2 / lambda_max(H); try step=None to estimate it) or H is not positive definite")
            if not math.isfinite(res[-1]):
                msg = f"neumann: the series produced NaN or inf at term {k} (step={step:.3g} too large?)"
            _fail(msg, on_failure)
            out.message = msg
            break
    return out


def fixed_point(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 100, tol: float = 1e-10,
                step: float | None = None, momentum: float = 0.0, x0: Tree | None = None,
                on_failure: str = "raise") -> SolveResult:
    r"""Fixed-point (Richardson) iteration for :math:`H x = b`:
    :math:`x_{k+1} = x_k + \alpha (b - H x_k) + \beta (x_k - x_{k-1})`.

    Its fixed point solves the system; it contracts when :math:`0 < \alpha < 2/\lambda_{max}(H)`.
    With ``x0=None`` (zeros) and ``momentum`` β = 0 the iterates equal :func:`neumann`'s; the
    fixed-point view adds a warm start ``x0`` (e.g. the previous outer step's solution) and
    heavy-ball momentum β ∈ [0, 1), which with :math:`\alpha = 4/(\sqrt{L}+\sqrt{\mu})^2`,
    :math:`\beta = ((\sqrt{\kappa}-1)/(\sqrt{\kappa}+1))^2` converges like CG's :math:`\sqrt{\kappa}`
    rate. ``step`` defaults to ``1 /`` :func:`max_eigenvalue`. Divergence raises
    :class:`SolverError` (or warns and stops with ``on_failure="warn"``).
    """
    b, iters, tol = _common_args(b, iters, tol, on_failure)
    _check_matvec(matvec)
    momentum = V.positive_float(momentum, "momentum", allow_zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    step = _check_step(step, matvec, b)
    return _linear_iteration(matvec, b, iters, tol, step, momentum, x0, on_failure, "fixed_point")


def max_eigenvalue(matvec: Callable[[Tree], Tree], like: Tree, *, iters: int = 30, seed: int = 0) -> float:
    r"""Largest eigenvalue of a symmetric positive semi-definite ``H`` by power iteration
    (``iters`` matvecs from a seeded random start shaped ``like``). Slightly underestimates."""
    like = _check_tree(like, "like")
    iters = V.positive_int(iters, "iters")
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = _map(lambda t: torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device), like)
    lam = 0.0
    for _ in range(iters):
        nv = tree_norm(v)
        v = _map(lambda t: t / nv, v)
        Hv = _apply(matvec, v, like)
        lam = float(tree_dot(v, Hv))
        if not math.isfinite(lam):
            raise SolverError("max_eigenvalue: H v is not finite")
        v = Hv
        if float(tree_norm(v)) == 0:
            break
    if not lam > 0:
        raise SolverError(f"max_eigenvalue: the power iteration found v^T H v = {lam:.3g} <= 0; "
                          "H is not positive definite, so Neumann / fixed-point steps cannot converge")
    return lam


# ----------------------------------------------------------------------------- Hessian-vector products
_HVP_METHODS = {"double_backward", "jvp_grad", "vjp_grad", "autograd_functional"}


def hvp(f: Callable[[dict], torch.Tensor], params: dict, *, method: str = "double_backward") -> Callable[[dict], dict]:
    r"""A function ``v -> H v`` with :math:`H = \nabla^2_\theta f(\theta)` at ``params``, never forming H.

    ``f(params) -> scalar``; ``params`` and ``v`` are dicts of tensors. ``method``:
    ``"double_backward"`` (default and fastest here: builds :math:`\nabla f` once with
    ``create_graph=True``, one backward pass per product), ``"jvp_grad"`` (``torch.func.jvp``
    of ``torch.func.grad``: forward-over-reverse, no retained graph), ``"vjp_grad"``
    (``torch.func.vjp`` of ``grad``, closure kept), ``"autograd_functional"``
    (``torch.autograd.functional.hvp``, for comparison). See the module docstring for timings.
    """
    V.choice(method, "method", _HVP_METHODS)
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar tensor, got {type(f).__name__}")
    params = V.tensor_dict(params, "params")
    keys = list(params)
    if method == "double_backward":
        with torch.enable_grad():
            p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            value = f(p)
            _check_scalar(value)
            grads = torch.autograd.grad(value, [p[k] for k in keys], create_graph=True)
        return _graph_hvp(grads, [p[k] for k in keys], keys)
    if method == "jvp_grad":
        from torch.func import grad, jvp
        gf = grad(f)
        primal = {k: v.detach() for k, v in params.items()}
        return lambda v: jvp(gf, (primal,), (v,))[1]
    if method == "vjp_grad":
        from torch.func import grad, vjp
        _, vjp_fn = vjp(grad(f), {k: v.detach() for k, v in params.items()})
        return lambda v: vjp_fn(v)[0]
    primal = tuple(params[k].detach() for k in keys)

    def ftuple(*xs):
        return f(dict(zip(keys, xs)))

    def mv(v):
        return dict(zip(keys, torch.autograd.functional.hvp(ftuple, primal, tuple(v[k] for k in keys))[1]))
    return mv


def _check_scalar(value) -> None:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(f"the loss must return a scalar tensor, got {_describe(value)}")


def _graph_hvp(grads, inputs, keys):
    """``v -> d<grads, v>/d inputs`` through an existing graph of ``grads`` (retained)."""
    def mv(v):
        out = torch.autograd.grad(grads, inputs, [v[k] for k in keys], retain_graph=True, allow_unused=True)
        return {k: torch.zeros_like(x) if o is None else o for k, x, o in zip(keys, inputs, out)}
    return mv


def hessian_diagonal(matvec: Callable[[Tree], Tree], like: Tree, *, samples: int | None = None,
                     seed: int = 0) -> Tree:
    r"""Diagonal of ``H`` (for Jacobi preconditioning), from matvecs only.

    ``samples=None``: exact, :math:`H_{ii} = e_i^\top H e_i`, one matvec per coordinate (``n``
    matvecs, in a loop over basis vectors; worth it when the same H is solved with several
    right-hand sides or the ill-conditioning is diagonal). ``samples=s``: Hutchinson's estimate
    :math:`\frac1s\sum_j z_j \odot H z_j` with seeded Rademacher ``z`` (cheap, noisy).
    """
    like = _check_tree(like, "like")
    _check_matvec(matvec)
    if samples is not None:
        samples = V.positive_int(samples, "samples")
        g = torch.Generator(device="cpu").manual_seed(seed)
        acc = _map(torch.zeros_like, like)
        for _ in range(samples):
            z = _map(lambda t: (torch.randint(0, 2, t.shape, generator=g) * 2 - 1).to(t.device, t.dtype), like)
            Hz = _apply(matvec, z, like)
            acc = _map(lambda a, zi, hi: a + zi * hi, acc, z, Hz)
        return _map(lambda a: a / samples, acc)
    flat_like = like if isinstance(like, torch.Tensor) else None
    keys = None if flat_like is not None else list(like)
    out = _map(torch.zeros_like, like)
    targets = [(None, like)] if flat_like is not None else [(k, like[k]) for k in keys]
    for key, t in targets:
        flat_out = (out if key is None else out[key]).view(-1)
        for i in range(t.numel()):
            e = _map(torch.zeros_like, like)
            (e if key is None else e[key]).view(-1)[i] = 1
            He = _apply(matvec, e, like)
            flat_out[i] = (He if key is None else He[key]).reshape(-1)[i]
    return out

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

    problem                                      double_backward            vjp_grad            jvp_grad autograd_functional   (microseconds per product)
    ------------------------------------------------------------------------------------------------------------------------
    ridge, diabetes (n=265, d=10)                            177                 247                7323                1155
    logistic, digits (n=1078, 64x10)                        1152                2616               16133                3560
    ridge, make_regression (n=2000, d=200)                   323                 399                9290                1679
    ridge, make_regression (n=6000, d=1000)                 7836                9572              107169               25025

``"double_backward"`` (the default) builds the graph of :math:`\nabla_\theta L` once
(``create_graph=True``) and each product is one backward pass through it (``retain_graph=True``).
``"vjp_grad"`` (``torch.func.vjp`` of ``torch.func.grad``, the closure torchopt uses) is the same
computation and costs about the same, 1.2-2.3x more on these problems. ``"jvp_grad"``
(forward-over-reverse, ``torch.func.jvp`` of ``grad``) re-traces the loss at every call through
Python decompositions: 7-16 ms of overhead per product in torch 2.13 on CPU, 10-40x slower.
``"autograd_functional"`` (``torch.autograd.functional.hvp``) recomputes the forward pass and the
gradient graph at every call: 3-7x slower. Hence double backward, whose per-product cost is close
to that of the two matrix products a ridge Hessian-vector product needs (2 x 120 us of the 323 us
on the n=2000, d=200 problem).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from . import _validate as V

__all__ = ["SolveResult", "SolverError", "cg", "neumann", "fixed_point", "hvp", "hessian_diagonal",
           "max_eigenvalue", "newton_cg", "tree_norm", "tree_dot"]

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
        return V.tensor_dict(x, name)  # floating, finite tensors
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


class _Flat:
    """Flatten a tensor or dict of tensors ``like`` into one vector and back (solvers run on one
    vector: fewer, larger tensor operations per iteration)."""

    def __init__(self, like: Tree):
        self.is_tensor = isinstance(like, torch.Tensor)
        if self.is_tensor:
            self.shape = like.shape
        else:
            self.keys = list(like)
            self.shapes = [like[k].shape for k in self.keys]
            self.sizes = [like[k].numel() for k in self.keys]

    def flat(self, t: Tree) -> torch.Tensor:
        if self.is_tensor:
            return t.reshape(-1)
        if len(self.keys) == 1:
            return t[self.keys[0]].reshape(-1)
        return torch.cat([t[k].reshape(-1) for k in self.keys])

    def tree(self, v: torch.Tensor) -> Tree:
        if self.is_tensor:
            return v.view(self.shape)
        if len(self.keys) == 1:
            return {self.keys[0]: v.view(self.shapes[0])}
        return {k: c.view(s) for k, c, s in zip(self.keys, torch.split(v, self.sizes), self.shapes)}

    def matvec(self, matvec, b: Tree):
        return lambda v: self.flat(_apply(matvec, self.tree(v), b))


def _preconditioner(precondition, b: Tree, fl: _Flat):
    """None, a function r -> M r, or the Hessian diagonal (Jacobi) as a tensor/dict like b;
    returned as a function on flat vectors."""
    if precondition is None:
        return None
    if isinstance(precondition, (torch.Tensor, Mapping)):
        diag = _check_tree(precondition, "precondition")
        _same_structure(diag, b, "precondition (the Hessian diagonal)", "b")
        d = fl.flat(diag)
        if bool((d <= 0).any()):
            raise ValueError("precondition (the Hessian diagonal for Jacobi preconditioning) must be > 0 "
                             "everywhere; a non-positive diagonal means H is not positive definite")
        inv = torch.reciprocal(d)
        return lambda r: r * inv
    if callable(precondition):
        return lambda r: fl.flat(_apply(precondition, fl.tree(r), b))
    raise TypeError("precondition must be None, a function r -> M r, or the Hessian diagonal as a tensor or "
                    f"dict like b (Jacobi), got {type(precondition).__name__}")


def _fail(msg: str, on_failure: str, stacklevel: int = 3) -> None:
    if on_failure == "raise":
        raise SolverError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)


def _common_args(matvec, b, iters, tol, on_failure):
    _check_matvec(matvec)
    b = _check_tree(b, "b")
    iters = V.positive_int(iters, "iters")
    tol = V.positive_float(tol, "tol")
    V.choice(on_failure, "on_failure", {"raise", "warn"})
    return b, iters, tol


def _start(matvec, b, x0, fl):
    """Flat b, x and residual b - H x for the initial guess ``x0`` (zeros when None)."""
    bf = fl.flat(b)
    if x0 is None:
        return bf, torch.zeros_like(bf), bf
    x0 = _check_tree(x0, "x0")
    _same_structure(x0, b, "x0", "b")
    xf = fl.flat(x0).to(bf)
    return bf, xf, bf - matvec(xf)


def _finished(out, res, k, iters, tol, b_norm) -> bool:
    """True (and ``out.converged``/``out.message`` set) when the residual reached ``tol`` or ``k == iters``."""
    if res[-1] <= tol * b_norm:
        out.converged, out.message = True, f"converged: relative residual <= tol={tol:g}"
        return True
    if k == iters:
        out.message = f"reached iters={iters} with relative residual {res[-1] / max(b_norm, 1e-300):.3g} (tol={tol:g})"
        return True
    return False


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
    One device synchronisation per iteration (for the residual history).
    """
    b, iters, tol = _common_args(matvec, b, iters, tol, on_failure)
    fl = _Flat(b)
    A = fl.matvec(matvec, b)
    M = _preconditioner(precondition, b, fl)
    bf, x, r = _start(A, b, x0, fl)
    b_norm, r_norm = torch.stack([bf.norm(), r.norm()]).tolist()
    res = [r_norm]
    out = SolveResult(fl.tree(x), res, b_norm=b_norm)
    if not math.isfinite(r_norm):
        _fail("cg: the initial residual b - H x0 is not finite (NaN or inf in b, x0 or H x0)", on_failure)
        out.message = "non-finite initial residual"
        return out
    z = r if M is None else M(r)
    p = z
    rz = torch.dot(r, z)
    k = 0
    while True:
        if _finished(out, res, k, iters, tol, b_norm):
            break
        Ap = A(p)
        pAp = torch.dot(p, Ap)
        alpha = rz / pAp
        x_new = torch.addcmul(x, p, alpha)
        r_new = torch.addcmul(r, Ap, alpha, value=-1)
        z_new = r_new if M is None else M(r_new)
        rz_new = torch.dot(r_new, z_new)
        rr = rz_new if M is None else torch.dot(r_new, r_new)
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
        out.iters = k
        if rr_f == 0:
            continue
        p = torch.addcmul(z_new, p, rz_new / rz)
        rz = rz_new
    out.x, out.iters = fl.tree(x), k
    return out


def _check_step(step, matvec, b) -> float:
    if step is None:
        return 1.0 / max_eigenvalue(matvec, b)
    return V.positive_float(step, "step")


def _diverging(res: list[float], b_norm: float, window: int = 3) -> bool:
    """True when the residual is not finite, or grew in each of the last ``window`` steps (by
    more than round-off) to above its starting value: the iteration map is not a contraction."""
    if not math.isfinite(res[-1]):
        return True
    if len(res) <= window:
        return False
    tail = res[-window - 1:]
    grew = all(b_ > a_ * (1 + 1e-6) for a_, b_ in zip(tail, tail[1:]))
    return grew and res[-1] > res[0] and res[-1] > 1e-12 * b_norm


def _divergence_message(name, res, k, step, what="iterations"):
    if not math.isfinite(res[-1]):
        return f"{name}: the iteration produced NaN or inf at iteration {k} (step={step:.3g} too large?)"
    return (f"{name}: the residual is growing (||b - H x|| = {res[-4]:.3g} -> {res[-1]:.3g} over the last 3 {what}, "
            f"started at {res[0]:.3g}): step={step:.3g} is too large for convergence (it needs "
            "step < 2 / lambda_max(H); try step=None to estimate it) or H is not positive definite")


def neumann(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 100, tol: float = 1e-10,
            step: float | None = None, on_failure: str = "raise") -> SolveResult:
    r"""Truncated Neumann series :math:`x_K = \alpha \sum_{k=0}^{K-1} (I - \alpha H)^k b \approx H^{-1} b`.

    Converges when :math:`0 < \alpha < 2/\lambda_{max}(H)` and ``H`` is positive definite, at
    the rate :math:`\max_i |1 - \alpha \lambda_i|` per term. ``step`` α (default: ``1 /``
    :func:`max_eigenvalue`, 30 extra matvecs). One matvec per term; the residual
    :math:`b - H x_K = (I - \alpha H)^K b` is the next term, so its history costs nothing. A
    residual that keeps growing (step too large, or ``H`` not positive definite) raises
    :class:`SolverError` (or warns and stops with ``on_failure="warn"``).
    """
    b, iters, tol = _common_args(matvec, b, iters, tol, on_failure)
    step = _check_step(step, matvec, b)
    fl = _Flat(b)
    A = fl.matvec(matvec, b)
    p = fl.flat(b)  # term p_k = (I - aH)^k b = residual of x_k
    x = torch.zeros_like(p)
    b_norm = float(p.norm())
    res = [b_norm]
    out = SolveResult(fl.tree(x), res, b_norm=b_norm)
    k = 0
    while True:
        if _finished(out, res, k, iters, tol, b_norm):
            break
        x_new = torch.add(x, p, alpha=step)
        p = torch.add(p, A(p), alpha=-step)
        k += 1
        res.append(float(p.norm()))
        if _diverging(res, b_norm):
            msg = _divergence_message("neumann", res, k, step, "terms")
            _fail(msg, on_failure)
            out.message = msg
            break
        x = x_new
        out.iters = k
    out.x = fl.tree(x)
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
    :math:`\beta = ((\sqrt{\kappa}-1)/(\sqrt{\kappa}+1))^2` converges at CG's :math:`\sqrt{\kappa}`
    rate. ``step`` defaults to ``1 /`` :func:`max_eigenvalue`. Divergence raises
    :class:`SolverError` (or warns and stops with ``on_failure="warn"``).
    """
    b, iters, tol = _common_args(matvec, b, iters, tol, on_failure)
    momentum = V.positive_float(momentum, "momentum", allow_zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    step = _check_step(step, matvec, b)
    fl = _Flat(b)
    A = fl.matvec(matvec, b)
    bf, x, r = _start(A, b, x0, fl)
    b_norm, r_norm = torch.stack([bf.norm(), r.norm()]).tolist()
    res = [r_norm]
    out = SolveResult(fl.tree(x), res, b_norm=b_norm)
    x_prev = x
    k = 0
    while True:
        if _finished(out, res, k, iters, tol, b_norm):
            break
        x_new = torch.add(x, r, alpha=step)
        if momentum:
            x_new = x_new.add(x - x_prev, alpha=momentum)
        r_new = bf - A(x_new)
        k += 1
        res.append(float(r_new.norm()))
        if _diverging(res, b_norm):
            msg = _divergence_message("fixed_point", res, k, step)
            _fail(msg, on_failure)
            out.message = msg
            break
        x_prev, x, r = x, x_new, r_new
        out.iters = k
    out.x = fl.tree(x)
    return out


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


def hessian_diagonal(f: Callable[[dict], torch.Tensor], params: dict, *, samples: int | None = None,
                     chunk: int = 256, seed: int = 0) -> dict:
    r"""Diagonal of :math:`H = \nabla^2_\theta f(\theta)` at ``params`` (for Jacobi preconditioning).

    ``samples=None``: exact, :math:`H_{ii} = e_i^\top H e_i`: Hessian-vector products with the
    basis vectors, ``chunk`` at a time batched with ``torch.func.vmap`` (cost of ``n / chunk``
    batched products, memory ``chunk x n``; only the diagonal is kept). ``samples=s``:
    Hutchinson's estimate :math:`\frac1s\sum_j z_j \odot H z_j`, seeded Rademacher ``z``
    (cheaper, noisy, entries may come out <= 0). Returns a dict like ``params``.
    """
    from torch.func import grad, vjp, vmap
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar tensor, got {type(f).__name__}")
    params = {k: v.detach() for k, v in V.tensor_dict(params, "params").items()}
    chunk = V.positive_int(chunk, "chunk")
    _, vjp_fn = vjp(grad(f), params)  # H symmetric: the vjp of the gradient is H v
    batched = vmap(lambda v: vjp_fn(v)[0])
    if samples is not None:
        samples = V.positive_int(samples, "samples")
        g = torch.Generator(device="cpu").manual_seed(seed)
        acc = {k: torch.zeros_like(v) for k, v in params.items()}
        for i in range(0, samples, chunk):
            m = min(chunk, samples - i)
            Z = {k: (torch.randint(0, 2, (m, *v.shape), generator=g) * 2 - 1).to(v.device, v.dtype)
                 for k, v in params.items()}
            HZ = batched(Z)
            acc = {k: acc[k] + (Z[k] * HZ[k]).sum(0) for k in acc}
        return {k: a / samples for k, a in acc.items()}
    out = {}
    for key, t in params.items():
        n = t.numel()
        diag = torch.empty(n, dtype=t.dtype, device=t.device)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            rows = torch.arange(m, device=t.device)
            E = {k: torch.zeros((m, *v.shape), dtype=v.dtype, device=v.device) for k, v in params.items()}
            E[key].view(m, -1)[rows, i + rows] = 1
            HE = batched(E)[key].reshape(m, -1)
            diag[i:i + m] = HE[rows, i + rows]
        out[key] = diag.view(t.shape)
    return out


# ----------------------------------------------------------------------------- Newton-CG
def newton_cg(f: Callable[[dict], torch.Tensor], params: dict, *, tol: float = 1e-10, max_iter: int = 50,
              cg_iters: int = 500, warn: bool = True) -> dict:
    r"""Minimise a smooth, strongly convex ``f(params)`` by inexact Newton steps
    :math:`\theta \leftarrow \theta - t\, H^{-1} \nabla f` with ``H^{-1} g`` from :func:`cg`
    (Hessian-vector products only, forcing term :math:`\min(0.5, \sqrt{\|g\|})`) and an
    Armijo backtracking line search; stops when :math:`\|\nabla f\| \le` ``tol``.

    A fast warm-startable inner solver for implicit differentiation (notebook 04): from a
    nearby ``params`` (the previous outer step's solution) it usually needs 1-3 steps. Returns
    detached params; warns (``warn=True``) when ``tol`` was not reached.
    """
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar tensor, got {type(f).__name__}")
    params = {k: v.detach() for k, v in V.tensor_dict(params, "params").items()}
    tol = V.positive_float(tol, "tol")
    max_iter = V.positive_int(max_iter, "max_iter", 0)
    cg_iters = V.positive_int(cg_iters, "cg_iters")
    keys = list(params)
    gnorm = float("inf")
    for _ in range(max_iter + 1):
        with torch.enable_grad():
            p = {k: v.requires_grad_(True) for k, v in params.items()}
            value = f(p)
            _check_scalar(value)
            grads = torch.autograd.grad(value, [p[k] for k in keys], create_graph=True)
        g = {k: gr.detach() for k, gr in zip(keys, grads)}
        gnorm = float(tree_norm(g))
        if not math.isfinite(gnorm):
            raise SolverError("newton_cg: the gradient is not finite (NaN or inf)")
        if gnorm <= tol or _ == max_iter:
            break
        with torch.enable_grad():
            step = cg(_graph_hvp(grads, [p[k] for k in keys], keys), g, iters=cg_iters,
                      tol=min(0.5, math.sqrt(gnorm)), on_failure="warn").x
        f0, slope, t = float(value.detach()), -float(tree_dot(g, step)), 1.0
        if not slope < 0:  # not a descent direction (CG stopped early): fall back to the gradient
            step, slope = g, -gnorm ** 2
        with torch.no_grad():
            while t > 1e-10:
                trial = {k: params[k].detach() - t * step[k] for k in keys}
                ft = float(f(trial))
                if ft <= f0 + 1e-4 * t * slope or (ft <= f0 and gnorm < 1e-6):
                    break
                t *= 0.5
            else:  # no step decreases the loss: stop where we are (the warning below says how far)
                params = {k: params[k].detach() for k in keys}
                break
        params = trial
    if warn and gnorm > tol:
        warnings.warn(f"newton_cg stopped with ||grad|| = {gnorm:.3g} > tol = {tol:g} after {max_iter} steps",
                      RuntimeWarning, stacklevel=2)
    return {k: v.detach() for k, v in params.items()}

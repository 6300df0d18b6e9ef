r"""Matrix-free solvers of :math:`H x = b` given only ``matvec(x) -> H x`` (notebook 04).

Every solver has the call shape ``solver(matvec, b, **options) -> SolveResult``, so that a
solver is a value: :func:`metahpo_lib.hypergrad.implicit` takes any function
``solve(matvec, b)``, e.g. ``functools.partial(linalg.cg, iters=500)``. ``b`` is a tensor or a
dict of tensors; the solution has the same structure. ``tol`` is always a bound on the
*relative residual* :math:`\|b - Hx\| / \|b\|`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from .. import _validate as V
from ..tree import Flat, Tree

__all__ = ["SolveResult", "SolverError", "cg", "neumann", "fixed_point", "max_eigenvalue"]


class SolverError(ValueError):
    """A matrix-free solver could not continue (non-positive curvature, divergence, NaN).

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> linalg.cg(lambda x: -x, torch.ones(2))
    Traceback (most recent call last):
    ...
    metahpo_lib.linalg.solvers.SolverError: cg: H is not positive definite: ...
    """


@dataclass
class SolveResult:
    """Result of a matrix-free solve of ``H x = b``.

    ``x``: the solution (same structure as ``b``); ``residuals``: ``||b - H x_k||`` for every
    iterate, starting with the initial guess; ``converged``: whether the relative residual
    reached ``tol``; ``iters``: iterations done (one matvec each); ``message``: why it stopped.

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> linalg.cg(lambda x: 2 * x, torch.ones(3))
    SolveResult(converged=True, iters=1, relative_residual=0, message='converged: relative residual <= tol=1e-10')
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


# ----------------------------------------------------------------------------- argument checks
def _describe(a) -> str:
    if isinstance(a, torch.Tensor):
        return f"a tensor of shape {tuple(a.shape)}"
    if isinstance(a, Mapping):
        return f"a dict with keys and shapes { {k: tuple(getattr(v, 'shape', ())) for k, v in a.items()} }"
    return f"a {type(a).__name__}"


def check_tree(x, name: str) -> Tree:
    """``x`` if it is a finite floating tensor or a non-empty dict of them, else a clear error."""
    if isinstance(x, torch.Tensor):
        return V.tensor(x, name)
    if isinstance(x, Mapping) and x:
        return V.tensor_dict(x, name)
    if isinstance(x, Mapping):
        raise ValueError(f"{name} must be a non-empty dict of tensors")
    raise TypeError(f"{name} must be a torch.Tensor or a dict of str to torch.Tensor, got {type(x).__name__}")


def same_structure(a: Tree, b: Tree, name_a: str, name_b: str) -> None:
    """Raise unless ``a`` has the keys and shapes of ``b``."""
    ok = (isinstance(a, torch.Tensor) and a.shape == b.shape if isinstance(b, torch.Tensor) else
          isinstance(a, Mapping) and set(a) == set(b) and all(a[k].shape == b[k].shape for k in b))
    if not ok:
        raise ValueError(f"{name_a} must have the structure of {name_b} ({_describe(b)}), got {_describe(a)}")


def _flat_matvec(matvec, b: Tree, fl: Flat):
    """``matvec`` on flat vectors, checking once that it returns the structure of ``b``."""
    if not callable(matvec):
        raise TypeError(f"matvec must be a function x -> H x, got {type(matvec).__name__}")

    def apply(v):
        out = matvec(fl.tree(v))
        try:
            same_structure(out, b, "matvec's result", "b")
        except ValueError:
            raise ValueError(f"matvec must return the structure of b ({_describe(b)}), got {_describe(out)}") from None
        return fl.flat(out)
    return apply


def _setup(matvec, b, iters, tol, on_failure, x0=None):
    """Check the common arguments; return (flat matvec, Flat, b, x, r) with x = x0 or 0, r = b - H x."""
    b = check_tree(b, "b")
    V.positive_int(iters, "iters")
    V.positive_float(tol, "tol")
    V.choice(on_failure, "on_failure", {"raise", "warn"})
    fl = Flat(b)
    A = _flat_matvec(matvec, b, fl)
    bf = fl.flat(b)
    if x0 is None:
        return A, fl, bf, torch.zeros_like(bf), bf
    x0 = check_tree(x0, "x0")
    same_structure(x0, b, "x0", "b")
    x = fl.flat(x0).to(bf)
    return A, fl, bf, x, bf - A(x)


def _stop(out: SolveResult, k: int, iters: int, tol: float) -> bool:
    """True (and ``out`` updated) when the relative residual reached ``tol`` or ``k == iters``."""
    rel = out.residuals[-1] / out.b_norm if out.b_norm > 0 else 0.0
    out.iters = k
    if rel <= tol:
        out.converged, out.message = True, f"converged: relative residual <= tol={tol:g}"
    elif k >= iters:
        out.message = f"reached iters={iters} with relative residual {rel:.3g} (tol={tol:g})"
    return out.converged or k >= iters


def _fail(out: SolveResult, msg: str, on_failure: str) -> SolveResult:
    out.message = msg
    if on_failure == "raise":
        raise SolverError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return out


# ----------------------------------------------------------------------------- conjugate gradient
def _jacobi(precondition, b: Tree, fl: Flat):
    """The preconditioner as a function on flat vectors: None, a function r -> M r, or the
    Hessian diagonal (a tensor / dict like b) for Jacobi preconditioning."""
    if precondition is None or callable(precondition):
        return precondition and _flat_matvec(precondition, b, fl)
    if not isinstance(precondition, (torch.Tensor, Mapping)):
        raise TypeError("precondition must be None, a function r -> M r, or the Hessian diagonal as a tensor or "
                        f"dict like b (Jacobi), got {type(precondition).__name__}")
    diag = check_tree(precondition, "precondition")
    same_structure(diag, b, "precondition (the Hessian diagonal)", "b")
    d = fl.flat(diag)
    if bool((d <= 0).any()):
        raise ValueError("precondition (the Hessian diagonal for Jacobi preconditioning) must be > 0 everywhere; "
                         "a non-positive diagonal means H is not positive definite")
    inv = torch.reciprocal(d)
    return lambda r: r * inv


def _cg_failure(pAp: float, rr: float, rz: float, k: int, preconditioned: bool) -> str | None:
    if not math.isfinite(pAp):
        return f"cg: H p is not finite (NaN or inf) at iteration {k}"
    if not pAp > 0:
        return (f"cg: H is not positive definite: met a direction p with p^T H p = {pAp:.3g} <= 0 at iteration "
                f"{k}; CG needs a symmetric positive-definite H (is params a minimum of the inner loss? add "
                "damping, or use a smaller model)")
    if not (math.isfinite(rr) and math.isfinite(rz)):
        return f"cg: the residual became non-finite at iteration {k}"
    if preconditioned and not rz > 0 and rr > 0:
        return f"cg: the preconditioner is not positive definite (r^T M r = {rz:.3g} at iteration {k})"
    return None


def cg(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 1000, tol: float = 1e-10, precondition=None,
       x0: Tree | None = None, on_failure: str = "raise") -> SolveResult:
    r"""Conjugate gradient for :math:`H x = b`, ``H`` symmetric positive definite, given as ``matvec``.

    Stops when :math:`\|b - Hx\| \le \mathrm{tol}\,\|b\|` or after ``iters`` matvecs.
    ``precondition``: None, a function ``r -> M r`` with ``M ≈ H^{-1}``, or the diagonal of ``H``
    (a tensor / dict like ``b``) for Jacobi preconditioning. ``x0``: initial guess (default 0).
    A direction with :math:`p^\top H p \le 0` or a non-finite value raises :class:`SolverError`
    (``on_failure="warn"``: warns and returns the last good iterate). One device
    synchronisation per iteration.

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> H = torch.tensor([[4., 1.], [1., 3.]], dtype=torch.float64)
    >>> linalg.cg(lambda x: H @ x, torch.tensor([1., 2.], dtype=torch.float64)).x
    tensor([0.0909, 0.6364], dtype=torch.float64)
    """
    A, fl, bf, x, r = _setup(matvec, b, iters, tol, on_failure, x0)
    M = _jacobi(precondition, b, fl)
    b_norm, r_norm = torch.stack([bf.norm(), r.norm()]).tolist()
    out = SolveResult(fl.tree(x), [r_norm], b_norm=b_norm)
    if not math.isfinite(r_norm):
        return _fail(out, "cg: the initial residual b - H x0 is not finite (NaN or inf in b, x0 or H x0)", on_failure)
    z = r if M is None else M(r)
    p, rz, k = z, torch.dot(r, z), 0
    while not _stop(out, k, iters, tol):
        Ap = A(p)
        pAp = torch.dot(p, Ap)
        alpha = rz / pAp
        x_new, r_new = torch.addcmul(x, p, alpha), torch.addcmul(r, Ap, alpha, value=-1)
        z = r_new if M is None else M(r_new)
        rz_new = torch.dot(r_new, z)
        rr = rz_new if M is None else torch.dot(r_new, r_new)
        pAp_f, rr_f, rz_f = torch.stack([pAp, rr, rz_new]).tolist()  # the one device sync per iteration
        k += 1
        msg = _cg_failure(pAp_f, rr_f, rz_f, k, M is not None)
        if msg:
            _fail(out, msg, on_failure)
            break
        x, r = x_new, r_new
        out.residuals.append(math.sqrt(rr_f))
        if rr_f > 0:
            p, rz = torch.addcmul(z, p, rz_new / rz), rz_new
    out.x = fl.tree(x)
    return out


# ----------------------------------------------------------------------------- Neumann and fixed point
def _step_size(step, matvec, b) -> float:
    return 1.0 / max_eigenvalue(matvec, b) if step is None else V.positive_float(step, "step")


def _diverging(res: list[float], window: int = 3) -> bool:
    """True when the residual is not finite, or grew in each of the last ``window`` steps (by more
    than round-off) to above its starting value: the iteration map is not a contraction."""
    if not math.isfinite(res[-1]):
        return True
    tail = res[-window - 1:]
    grew = len(res) > window and all(b_ > a_ * (1 + 1e-6) for a_, b_ in zip(tail, tail[1:]))
    return grew and res[-1] > res[0] and res[-1] > 1e-12 * res[0]


def _divergence_message(name: str, res: list[float], k: int, step: float) -> str:
    if not math.isfinite(res[-1]):
        return f"{name}: the iteration produced NaN or inf at iteration {k} (step={step:.3g} too large?)"
    what = "terms" if name == "neumann" else "iterations"
    return (f"{name}: the residual is growing (||b - H x|| = {res[-4]:.3g} -> {res[-1]:.3g} over the last 3 "
            f"{what}, started at {res[0]:.3g}): step={step:.3g} is too large for convergence (it needs "
            "step < 2 / lambda_max(H); try step=None to estimate it) or H is not positive definite")


def fixed_point(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 1000, tol: float = 1e-10,
                step: float | None = None, momentum: float = 0.0, x0: Tree | None = None,
                on_failure: str = "raise") -> SolveResult:
    r"""Fixed-point (Richardson) iteration for :math:`H x = b`:
    :math:`x_{k+1} = x_k + \alpha (b - H x_k) + \beta (x_k - x_{k-1})`.

    It contracts when :math:`0 < \alpha < 2/\lambda_{max}(H)`. From ``x0=None`` (zeros) with
    ``momentum`` β = 0 its iterates are :func:`neumann`'s; it adds a warm start ``x0`` and heavy-ball
    momentum β ∈ [0, 1), which with :math:`\alpha = 4/(\sqrt{L}+\sqrt{\mu})^2`,
    :math:`\beta = ((\sqrt{\kappa}-1)/(\sqrt{\kappa}+1))^2` converges at CG's :math:`\sqrt{\kappa}` rate.
    ``step`` α defaults to ``1 /`` :func:`max_eigenvalue` (30 extra matvecs). Divergence raises
    :class:`SolverError` (or warns and stops with ``on_failure="warn"``).

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> r = linalg.fixed_point(lambda x: 2 * x, torch.ones(2), step=0.25, tol=1e-6)
    >>> r.x, r.iters
    (tensor([0.5000, 0.5000]), 20)
    """
    return _richardson("fixed_point", matvec, b, iters, tol, step, V.unit_interval(momentum, "momentum"), x0,
                       on_failure)


def _richardson(name, matvec, b, iters, tol, step, momentum, x0, on_failure) -> SolveResult:
    """x <- x + step (b - H x) + momentum (x - x_prev), shared by :func:`fixed_point` and :func:`neumann`."""
    A, fl, bf, x, r = _setup(matvec, b, iters, tol, on_failure, x0)
    step = _step_size(step, matvec, b)
    b_norm, r_norm = torch.stack([bf.norm(), r.norm()]).tolist()
    out, x_prev, k = SolveResult(fl.tree(x), [r_norm], b_norm=b_norm), x, 0
    while not _stop(out, k, iters, tol):
        x_new = torch.add(x, r, alpha=step)
        if momentum:
            x_new = x_new.add(x - x_prev, alpha=momentum)
        r_new = bf - A(x_new)
        k += 1
        out.residuals.append(float(r_new.norm()))
        if _diverging(out.residuals):
            _fail(out, _divergence_message(name, out.residuals, k, step), on_failure)
            break
        x_prev, x, r = x, x_new, r_new
    out.x = fl.tree(x)
    return out


def neumann(matvec: Callable[[Tree], Tree], b: Tree, *, iters: int = 1000, tol: float = 1e-10,
            step: float | None = None, on_failure: str = "raise") -> SolveResult:
    r"""Truncated Neumann series :math:`x_K = \alpha \sum_{k=0}^{K-1} (I - \alpha H)^k b \approx H^{-1} b`.

    Converges when :math:`0 < \alpha < 2/\lambda_{max}(H)` and ``H`` is positive definite, at
    the rate :math:`\max_i |1 - \alpha \lambda_i|` per term; one matvec per term. The iterates
    are those of :func:`fixed_point` from zero without momentum, which computes them.

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> linalg.neumann(lambda x: 2 * x, torch.ones(2), step=0.25, tol=1e-6).x
    tensor([0.5000, 0.5000])
    """
    return _richardson("neumann", matvec, b, iters, tol, step, 0.0, None, on_failure)


def max_eigenvalue(matvec: Callable[[Tree], Tree], like: Tree, *, iters: int = 30, seed: int | torch.Generator = 0
                   ) -> float:
    r"""Largest eigenvalue of a symmetric positive semi-definite ``H`` by power iteration
    (``iters`` matvecs from a seeded random start shaped ``like``). Slightly underestimates.

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> round(linalg.max_eigenvalue(lambda x: torch.tensor([1., 5.]) * x, torch.ones(2), iters=50), 4)
    5.0
    """
    like = check_tree(like, "like")
    V.positive_int(iters, "iters")
    g = V.generator(seed)
    fl = Flat(like)
    A = _flat_matvec(matvec, like, fl)
    ref = fl.flat(like)
    v = torch.randn(fl.numel, generator=g, dtype=ref.dtype).to(ref.device)
    lam = 0.0
    for _ in range(iters):
        v = v / v.norm()
        Hv = A(v)
        lam = float(torch.dot(v, Hv))
        if not math.isfinite(lam):
            raise SolverError("max_eigenvalue: H v is not finite")
        if float(Hv.norm()) == 0:
            break
        v = Hv
    if not lam > 0:
        raise SolverError(f"max_eigenvalue: the power iteration found v^T H v = {lam:.3g} <= 0; "
                          "H is not positive definite, so Neumann / fixed-point steps cannot converge")
    return lam


r"""Matrix-free linear algebra for implicit hypergradients (notebook 04).

Modules: :mod:`.solvers` (``cg``, ``neumann``, ``fixed_point``, ``max_eigenvalue``), :mod:`.hvp`
(``hvp``, ``hessian_diagonal``), :mod:`.newton` (``newton_cg``).


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

from .hvp import hessian_diagonal, hvp
from .newton import newton_cg
from .solvers import SolveResult, SolverError, cg, fixed_point, max_eigenvalue, neumann

__all__ = ["SolveResult", "SolverError", "cg", "neumann", "fixed_point", "hvp", "hessian_diagonal",
           "max_eigenvalue", "newton_cg"]

r"""Bayesian optimisation in a few functions: a Gaussian-process surrogate, expected improvement,
TPE's density ratio and one BO loop (notebook 01, "Black-box HPO").

A black-box search sees only ``objective(config) -> float``. Bayesian optimisation fits a cheap
model of the objective to the trials so far (the *surrogate*), then evaluates next where an
*acquisition* function of the model is largest:

- :func:`rbf_kernel`, :func:`log_marginal_likelihood`, :func:`fit_gp` and :class:`GP`: a GP with an
  RBF kernel, whose length scale is fixed or fitted by maximising the marginal likelihood;
- :func:`expected_improvement`: the acquisition of Jones et al. (1998);
- :func:`parzen_densities`: the two densities :math:`l(x)`, :math:`g(x)` of TPE (Bergstra et al., 2011);
- :func:`to_unit`, :func:`from_unit`: a search space as the unit cube the models work in;
- :func:`bayes_opt`: the loop, returning a :class:`~metahpo_lib.hpo.History` like every search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import _validate as V
from .search import Categorical, History, Int, check_objective, check_space, int_seed

__all__ = ["rbf_kernel", "log_marginal_likelihood", "GP", "fit_gp", "expected_improvement", "parzen_densities",
           "to_unit", "from_unit", "bayes_opt", "LENGTHSCALES"]

#: the length scales (in the unit cube) :func:`fit_gp` chooses from
LENGTHSCALES = tuple(10 ** (-2 + 3 * i / 30) for i in range(31))


def rbf_kernel(A: torch.Tensor, B: torch.Tensor, lengthscale: float, variance: float = 1.0) -> torch.Tensor:
    r"""The RBF (squared-exponential) kernel :math:`k(a, b) = \sigma^2 \exp(-\lVert a - b\rVert^2 / 2\ell^2)`.

    ``A``: ``(n, d)``, ``B``: ``(m, d)``; returns ``(n, m)``.

    >>> import torch
    >>> from metahpo_lib.hpo import bayesopt
    >>> K = bayesopt.rbf_kernel(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0]]), lengthscale=1.0)
    >>> [round(v, 4) for v in K.flatten().tolist()]   # exp(-1/2) at distance 1
    [1.0, 0.6065]
    """
    V.tensor(A, "A", ndim=2)
    V.tensor(B, "B", ndim=2)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same number of columns, got shapes {tuple(A.shape)} and {tuple(B.shape)}")
    V.positive_float(lengthscale, "lengthscale")
    V.positive_float(variance, "variance")
    return variance * torch.exp(-0.5 * torch.cdist(A, B).pow(2) / lengthscale ** 2)


def _cholesky(K: torch.Tensor, noise: float) -> torch.Tensor:
    """Cholesky factors of a batch ``(..., n, n)`` of K + noise I; the jitter of a matrix grows tenfold until
    it factorises. One batched call: many small LAPACK calls are slow when the CPU's threads are contended."""
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    jitter = torch.full(K.shape[:-2], noise, dtype=K.dtype, device=K.device)
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(K + jitter[..., None, None] * eye)
        bad = info > 0
        if not bool(bad.any()):
            return L
        jitter = torch.where(bad, jitter * 10 + 1e-10, jitter)
    raise ValueError("the kernel matrix is not positive definite even with added jitter; are there NaNs in X?")


def _evidence(X: torch.Tensor, y: torch.Tensor, lengthscales, noise: float):
    """Log marginal likelihoods ``(k,)`` and Cholesky factors ``(k, n, n)`` for k length scales at once."""
    ells = torch.tensor(lengthscales, dtype=X.dtype, device=X.device)
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2)[None] / ells[:, None, None] ** 2)
    L = _cholesky(K, noise)
    a = torch.cholesky_solve(y[None, :, None].expand(len(ells), -1, 1), L)[..., 0]
    lml = -0.5 * (a @ y) - L.diagonal(dim1=-2, dim2=-1).log().sum(-1) - 0.5 * len(y) * math.log(2 * math.pi)
    return lml, L


def _check_xy(X, y) -> None:
    V.tensor(X, "X", ndim=2)
    V.tensor(y, "y", ndim=1)
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X (n, d) and y (n,) need the same n >= 1, got shapes {tuple(X.shape)} and {tuple(y.shape)}")


def log_marginal_likelihood(X: torch.Tensor, y: torch.Tensor, lengthscale: float, noise: float = 1e-6) -> torch.Tensor:
    r"""Log evidence of a zero-mean GP with a unit-variance RBF kernel,
    :math:`\log p(y \mid X) = -\tfrac12 y^\top (K + \sigma_n^2 I)^{-1} y - \sum_i \log L_{ii} - \tfrac n2 \log 2\pi`,
    with :math:`L L^\top = K + \sigma_n^2 I` (Rasmussen & Williams, eq. 2.30). ``X``: ``(n, d)``, ``y``: ``(n,)``.

    >>> import torch
    >>> from metahpo_lib.hpo import bayesopt
    >>> X = torch.tensor([[0.0]], dtype=torch.float64)
    >>> round(float(bayesopt.log_marginal_likelihood(X, torch.tensor([0.0], dtype=torch.float64), 1.0)), 4)
    -0.9189
    """
    _check_xy(X, y)
    lml, _ = _evidence(X, y, [V.positive_float(lengthscale, "lengthscale")], V.positive_float(noise, "noise"))
    return lml[0]


@dataclass(frozen=True)
class GP:
    r"""A Gaussian-process posterior fitted by :func:`fit_gp`; :meth:`predict` gives its mean and std.

    With :math:`K = k(X, X) + \sigma_n^2 I` and :math:`k_* = k(X, x_*)` (on standardised ``y``):

    .. math:: \mu(x_*) = k_*^\top K^{-1} y, \qquad \sigma^2(x_*) = k(x_*, x_*) - k_*^\top K^{-1} k_* .

    >>> import torch
    >>> from metahpo_lib.hpo import bayesopt
    >>> X = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> gp = bayesopt.fit_gp(X, torch.tensor([1.0, 3.0], dtype=torch.float64), lengthscale=0.5)
    >>> mean, std = gp.predict(X)
    >>> [round(v, 4) for v in mean.tolist()], float(std.max()) < 1e-2   # it interpolates the data
    ([1.0, 3.0], True)
    """

    X: torch.Tensor
    L: torch.Tensor
    weights: torch.Tensor
    y_mean: float
    y_std: float
    lengthscale: float
    noise: float

    def predict(self, X_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation at ``X_new (m, d)``, in the units of ``y``; two ``(m,)`` tensors."""
        V.tensor(X_new, "X_new", ndim=2)
        if X_new.shape[1] != self.X.shape[1]:
            raise ValueError(f"X_new must have {self.X.shape[1]} columns like X, got shape {tuple(X_new.shape)}")
        X_new = X_new.to(self.X.dtype)
        k_star = rbf_kernel(self.X, X_new, self.lengthscale)
        mean = k_star.T @ self.weights
        v = torch.linalg.solve_triangular(self.L, k_star, upper=False)
        var = (1.0 - v.pow(2).sum(0)).clamp_min(0.0)
        return self.y_mean + self.y_std * mean, self.y_std * var.sqrt()


def fit_gp(X: torch.Tensor, y: torch.Tensor, *, lengthscale: float | None = None, noise: float = 1e-6) -> GP:
    r"""Fit a GP with an RBF kernel to ``X (n, d)``, ``y (n,)``: ``y`` is standardised (mean 0, std 1),
    the kernel variance is 1 and ``noise`` is :math:`\sigma_n^2` on that scale; ``lengthscale=None``
    picks the value of :data:`LENGTHSCALES` with the largest :func:`log_marginal_likelihood`.

    >>> import torch
    >>> from metahpo_lib.hpo import bayesopt
    >>> import math
    >>> X = torch.linspace(0, 1, 8, dtype=torch.float64)[:, None]
    >>> gp = bayesopt.fit_gp(X, torch.sin(6 * X[:, 0]))
    >>> round(gp.lengthscale, 3), round(float(gp.predict(torch.tensor([[0.5]], dtype=torch.float64))[0]), 3)
    (0.316, 0.141)
    >>> round(math.sin(3.0), 3)   # the true value at 0.5
    0.141
    """
    _check_xy(X, y)
    noise = V.positive_float(noise, "noise")
    if lengthscale is not None:
        lengthscale = V.positive_float(lengthscale, "lengthscale")
    y_mean = float(y.mean())
    y_std = float(y.std()) if len(y) > 1 and float(y.std()) > 0 else 1.0
    z = (y - y_mean) / y_std
    grid = LENGTHSCALES if lengthscale is None else (lengthscale,)
    lml, L = _evidence(X, z, grid, noise)
    best = int(lml.argmax())
    return GP(X, L[best], torch.cholesky_solve(z[:, None], L[best])[:, 0], y_mean, y_std, grid[best], noise)


def expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: float, xi: float = 0.0) -> torch.Tensor:
    r"""Expected improvement below ``best`` (minimisation) of :math:`f \sim N(\mu, \sigma^2)` (Jones et al., 1998):

    .. math:: \mathrm{EI} = \mathbb E\,[\max(f_{best} - \xi - f, 0)] = (f_{best} - \xi - \mu)\,\Phi(z) + \sigma\,\varphi(z),
              \qquad z = \frac{f_{best} - \xi - \mu}{\sigma},

    :math:`\Phi`, :math:`\varphi` the standard normal cdf and pdf; where :math:`\sigma = 0`,
    :math:`\max(f_{best} - \xi - \mu, 0)`. ``xi >= 0`` asks for a margin (more exploration).
    ``mean``, ``std``: tensors of one shape; returns that shape.

    >>> import torch
    >>> from metahpo_lib.hpo import bayesopt
    >>> ei = bayesopt.expected_improvement(torch.tensor([0.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 0.0]), best=0.0)
    >>> [round(v, 4) for v in ei.tolist()]   # sigma * phi(0) = 0.3989; no spread, no improvement; a sure 1
    [0.3989, 0.0, 1.0]
    """
    V.tensor(mean, "mean", finite=True)
    V.tensor(std, "std", finite=True)
    if mean.shape != std.shape:
        raise ValueError(f"mean and std must have the same shape, got {tuple(mean.shape)} and {tuple(std.shape)}")
    if bool((std < 0).any()):
        raise ValueError("std must be >= 0 everywhere (a standard deviation)")
    if not isinstance(best, (int, float, torch.Tensor)) or not math.isfinite(float(best)):
        raise ValueError(f"best must be a finite number (the best value so far), got {best!r}")
    xi = V.positive_float(xi, "xi", allow_zero=True)
    gain = float(best) - xi - mean
    z = gain / std.clamp_min(torch.finfo(std.dtype).tiny)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    return torch.where(std > 0, gain * cdf + std * pdf, gain.clamp_min(0.0))


def parzen_densities(X: torch.Tensor, y: torch.Tensor, X_new: torch.Tensor, *, gamma: float = 0.25,
                     bandwidth: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    r"""TPE's two densities at ``X_new (m, d)`` (Bergstra et al., 2011): :math:`l(x)` from the best
    :math:`\lceil\gamma n\rceil` trials of ``X (n, d)``, ``y (n,)``, :math:`g(x)` from the others, each a
    Parzen (Gaussian kernel) estimate :math:`\frac{1}{|S|}\sum_{i \in S} N(x; x_i, h^2 I)`. TPE evaluates
    next where :math:`l(x)/g(x)` is largest, which maximises EI under its model.

    >>> import torch
    >>> from metahpo_lib.hpo import bayesopt
    >>> X = torch.tensor([[0.1], [0.2], [0.8], [0.9]], dtype=torch.float64)
    >>> l, g = bayesopt.parzen_densities(X, torch.tensor([0.0, 1.0, 5.0, 6.0], dtype=torch.float64),
    ...                                  torch.tensor([[0.1], [0.9]], dtype=torch.float64), gamma=0.5)
    >>> (l / g > 1).tolist()   # good trials sit near 0.1
    [True, False]
    """
    _check_xy(X, y)
    V.tensor(X_new, "X_new", ndim=2)
    gamma = V.unit_interval(gamma, "gamma", closed_low=False)
    bandwidth = V.positive_float(bandwidth, "bandwidth")
    if len(y) < 2:
        raise ValueError(f"parzen_densities needs at least 2 trials (one good, one bad), got {len(y)}")
    n_good = min(len(y) - 1, max(1, math.ceil(gamma * len(y))))
    order = torch.argsort(y)
    d = X.shape[1]

    def density(S):
        sq = torch.cdist(X_new.to(X.dtype), S).pow(2)
        return torch.exp(-0.5 * sq / bandwidth ** 2).mean(1) / (2 * math.pi * bandwidth ** 2) ** (d / 2)

    return density(X[order[:n_good]]), density(X[order[n_good:]])


def _numeric_space(space) -> dict:
    space = check_space(space)
    for name, dim in space.items():
        if isinstance(dim, Categorical):
            raise TypeError(f"space[{name!r}] is Categorical; this GP handles Float and Int dimensions only")
    return space


def to_unit(space, configs) -> torch.Tensor:
    r"""Configurations as points of the unit cube, ``(n, d)`` float64: :math:`u = (x - low) / (high - low)`,
    on :math:`\log x` for ``log=True`` dimensions (the inverse of :func:`from_unit`).

    >>> from metahpo_lib.hpo import Float, bayesopt
    >>> bayesopt.to_unit({"a": Float(1e-2, 1e2, log=True)}, [{"a": 1.0}, {"a": 100.0}]).round(decimals=6).tolist()
    [[0.5], [1.0]]
    """
    space = _numeric_space(space)
    rows = []
    for cfg in configs:
        row = []
        for name, dim in space.items():
            lo, hi, x = float(dim.low), float(dim.high), float(cfg[name])
            if dim.log:
                lo, hi, x = math.log(lo), math.log(hi), math.log(x)
            row.append((x - lo) / (hi - lo))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(space))


def from_unit(space, U: torch.Tensor) -> list[dict]:
    """Points ``U (n, d)`` of the unit cube as configurations of ``space`` (Int values rounded).

    >>> import torch
    >>> from metahpo_lib.hpo import Float, Int, bayesopt
    >>> bayesopt.from_unit({"a": Float(0.0, 10.0), "n": Int(1, 5)}, torch.tensor([[0.25, 0.5]]))
    [{'a': 2.5, 'n': 3}]
    """
    space = _numeric_space(space)
    V.tensor(U, "U", ndim=2)
    if U.shape[1] != len(space):
        raise ValueError(f"U must have {len(space)} columns (one per dimension of space), got shape {tuple(U.shape)}")
    out = []
    for row in U.clamp(0, 1).tolist():
        cfg = {}
        for u, (name, dim) in zip(row, space.items()):
            lo, hi = float(dim.low), float(dim.high)
            x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if dim.log else lo + u * (hi - lo)
            cfg[name] = min(dim.high, max(dim.low, int(round(x)))) if isinstance(dim, Int) else x
        out.append(cfg)
    return out


def bayes_opt(objective: Callable, space, budget: int, *, n_init: int = 3, xi: float = 0.01,
              n_candidates: int = 2000, lengthscale: float | None = None, seed=0, progress: bool = False) -> History:
    r"""Bayesian optimisation with a GP surrogate and expected improvement (notebook 01).

    ``n_init`` random trials, then for each further trial: fit :func:`fit_gp` to all trials so far
    (in the unit cube of :func:`to_unit`), draw ``n_candidates`` uniform points and evaluate the one
    with the largest :func:`expected_improvement` ``(mean, std, best, xi * s)``,
    :math:`x_{t+1} = \arg\max_x \mathrm{EI}_t(x)`, where ``s`` is the standard deviation of the values
    so far (so ``xi`` does not depend on the objective's units). Trials scoring NaN or inf (failed runs)
    enter the GP with the worst finite value, so that BO steers away from them. ``space``: Float and Int dimensions;
    ``seed``: an int or a ``torch.Generator``. Returns the :class:`~metahpo_lib.hpo.History`.

    >>> from metahpo_lib.hpo import Float, bayesopt
    >>> h = bayesopt.bayes_opt(lambda c: (c["x"] - 0.3) ** 2, {"x": Float(0.0, 1.0)}, 8, seed=0)
    >>> len(h), round(h.best_config["x"], 2)
    (8, 0.3)
    """
    check_objective(objective)
    space = _numeric_space(space)
    V.positive_int(budget, "budget")
    V.positive_int(n_init, "n_init")
    V.positive_int(n_candidates, "n_candidates")
    xi = V.positive_float(xi, "xi", allow_zero=True)
    if lengthscale is not None:
        V.positive_float(lengthscale, "lengthscale")
    gen = torch.Generator().manual_seed(int_seed(seed))
    hist = History()
    for t in tqdm(range(budget), desc="bayes_opt", disable=not progress, leave=False):
        finite = [i for i, v in enumerate(hist.values) if math.isfinite(v)]
        U = torch.rand(1 if t < n_init or not finite else n_candidates, len(space), generator=gen,
                       dtype=torch.float64)
        if len(U) > 1:  # a failed (NaN/inf) trial enters the GP with the worst finite value
            worst = max(hist.values[i] for i in finite)
            y = torch.tensor([v if math.isfinite(v) else worst for v in hist.values], dtype=torch.float64)
            gp = fit_gp(to_unit(space, hist.configs), y, lengthscale=lengthscale)
            ei = expected_improvement(*gp.predict(U), best=float(y.min()), xi=xi * gp.y_std)
            U = U[int(ei.argmax())][None]
        config = from_unit(space, U)[0]
        hist.add(config, objective(config))
    return hist

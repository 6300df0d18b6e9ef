r"""The exact hypergradient through a closed-form inner solution (notebook 01).

.. math:: \frac{d}{d\lambda} L_{val}(\theta^*(\lambda), \lambda), \quad
          \theta^*(\lambda) = \texttt{problem.solve\_inner}(\lambda)

computed by autograd through the solve (e.g. ``torch.linalg.solve`` for ridge). This is the
reference every other method in the course is compared with.
"""

from __future__ import annotations

import torch

from ._common import HypergradResult, prepare_hparams, total_derivative


def exact(problem, hparams) -> dict[str, torch.Tensor]:
    r"""Exact hypergradient :math:`d L_{val}(\theta^*(\lambda), \lambda) / d\lambda` of ``problem.outer_loss``
    at :math:`\theta^* =` ``problem.solve_inner(hparams)``, by autograd through the solve (notebook 01).

    Returns a dict with the keys and shapes of ``hparams`` (a ``HypergradResult``). Needs
    ``problem.solve_inner``.

    >>> from metahpo_lib import data, hypergrad, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> g = hypergrad.exact(p, p.init_hparams())
    >>> round(float(g["log_alpha"]), 4), g.info
    (0.0408, {'method': 'exact', 'inner_solves': 1})
    """
    hp = prepare_hparams(problem, hparams)
    if problem.solve_inner is None:
        raise ValueError(f"problem {problem.name!r} has no closed-form solve_inner; use an iterative method "
                         "(hypergrad.unrolled or hypergrad.implicit) instead of hypergrad.exact")
    with torch.enable_grad():
        params = problem.solve_inner(hp)
        value = problem.outer_loss(params, hp)
        return HypergradResult(total_derivative(value, hp), {"method": "exact", "inner_solves": 1})

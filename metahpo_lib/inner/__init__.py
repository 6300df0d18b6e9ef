r"""Inner optimisation (notebook 03): optimiser objects, T steps of them, an accurate solver.

- :mod:`.optimizers`: :class:`GD`, :class:`Momentum`, :class:`Adam` (one step interface,
  ``init`` and ``step``; subclass :class:`InnerOptimizer` to add one);
- :mod:`.run`: :func:`run` (T differentiable steps), :func:`unroll` (continue from a state),
  :func:`with_optimizer_hparams` (the learning rate or momentum as hyperparameters),
  :class:`DivergenceError`;
- :mod:`.minimize`: :func:`minimize`, the accurate non-differentiable solver (L-BFGS + Newton-CG).
"""

from .minimize import minimize
from .optimizers import GD, Adam, InnerOptimizer, Momentum
from .run import (DIVERGENCE_FACTOR, DivergenceError, check_losses, check_optimizer, run, start_params, unroll,
                  with_optimizer_hparams)

__all__ = ["InnerOptimizer", "GD", "Momentum", "Adam", "run", "unroll", "minimize", "with_optimizer_hparams",
           "check_losses", "check_optimizer", "start_params", "DivergenceError", "DIVERGENCE_FACTOR"]

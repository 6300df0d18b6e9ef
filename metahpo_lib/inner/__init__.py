"""Inner optimisation (notebook 03): optimiser objects, T steps of them, an accurate solver."""
from .optimizers import GD, Adam, InnerOptimizer, Momentum
from ._old import *  # noqa: F401,F403  (being rewritten)
from ._old import _config, _start_params, _init_state, _unroll, _update, _raise_if_diverged  # noqa: F401

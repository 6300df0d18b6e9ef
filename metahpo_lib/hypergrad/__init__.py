"""Hypergradients d L_val(θ*(λ), λ) / dλ, one method per module, one call shape:

    hypergrad.METHOD(problem, hparams, **method_options) -> dict like hparams

- ``exact``: autograd through the closed-form inner solve (notebook 01)
- ``finite_difference``, ``spsa``: forward / central differences per coordinate, random directions (notebook 02)
- ``unrolled``: reverse / forward mode / truncated differentiation through T inner steps (notebook 03)
- ``implicit``: implicit function theorem with CG / Neumann / fixed-point solves of H q = dL_val/dθ (notebook 04)
"""

from ._common import HypergradResult, prepare_hparams, total_derivative
from .exact import exact
from .implicit import implicit
from .finite_difference import finite_difference, spsa
from .unrolled import unrolled

__all__ = ["HypergradResult", "exact", "finite_difference", "implicit", "prepare_hparams", "spsa",
           "total_derivative", "unrolled"]

"""Hypergradients d L_val(θ*(λ), λ) / dλ, one method per module, one call shape::

    hypergrad.METHOD(problem, hparams, **method_options) -> dict like hparams

- ``exact``: autograd through the closed-form inner solve (notebook 01)
- ``finite_difference``, ``spsa``: forward / central differences per coordinate, random directions (notebook 02)
- ``unrolled``: reverse / forward mode / truncated differentiation through T inner steps (notebook 03)
- ``implicit``: implicit function theorem, H q = dL_val/dθ solved by any ``solve(matvec, b)`` (notebook 04)

To add a method: a module ``hypergrad/<method>.py`` with one function
``method(problem, hparams, **options) -> HypergradResult`` that starts with
``hp = prepare_hparams(problem, hparams)``; export it here and add it to ``METHODS``; the
contract test (``tests/test_hypergrad_contract.py``) then runs it through the shared checks.
"""

from ._common import HypergradResult, prepare_hparams, total_derivative
from .exact import exact
from .implicit import default_solve as implicit_default_solve
from .implicit import implicit
from .finite_difference import finite_difference, spsa
from .unrolled import unrolled

#: every hypergradient method, by name (the contract test runs each through the same checks)
METHODS = {"exact": exact, "finite_difference": finite_difference, "spsa": spsa, "unrolled": unrolled,
           "implicit": implicit}

__all__ = ["HypergradResult", "METHODS", "exact", "finite_difference", "implicit", "implicit_default_solve",
           "prepare_hparams", "spsa", "total_derivative", "unrolled"]

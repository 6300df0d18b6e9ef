"""Meta-learning hyperparameters across a family of ridge regression tasks (notebook 07, part 1).

Module map:

- ``family``: the task family (``TaskSpec``, ``Task``, ``make_task``, ``sample_specs``,
  ``make_tasks``, ``meta_features``, the source lists and the search space ``SPACE``);
- ``predictor``: the hyperparameter predictor (``HyperPredictor``, ``predict``,
  ``meta_gradient``, ``meta_train``), trained by the one outer loop ``hpo.descend``;
- ``compare``: the comparison of HPO methods (``dense_best``, ``incumbent_curves``,
  ``run_methods``), every method through the registry ``hpo.run_method``.

A new task family goes next to ``family`` (a task is an HPO problem: ``space``,
``objective(config)``, optionally ``gradient(config)``); a new HPO baseline is registered
with ``hpo.register``.
"""

from .family import (HPARAM_KEYS, META_FEATURES, META_TEST_SOURCES, META_TRAIN_SOURCES, OUT_OF_DISTRIBUTION_SOURCES,
                     SOURCES, SPACE, Task, TaskSpec, make_task, make_tasks, meta_features, sample_specs, source_size)
from .predictor import HyperPredictor, meta_gradient, meta_train, predict
from .compare import dense_best, incumbent_curves, run_methods

__all__ = ["HPARAM_KEYS", "META_FEATURES", "META_TEST_SOURCES", "META_TRAIN_SOURCES", "OUT_OF_DISTRIBUTION_SOURCES",
           "SOURCES", "SPACE", "Task", "TaskSpec", "make_task", "make_tasks", "meta_features", "sample_specs",
           "source_size", "HyperPredictor", "meta_gradient", "meta_train", "predict", "dense_best",
           "incumbent_curves", "run_methods"]

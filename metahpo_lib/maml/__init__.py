r"""MAML and its family, batched over tasks with ``torch.func`` (notebook 06).

MAML is a bilevel problem whose *hyperparameter* is the initialisation :math:`\theta` (and,
for Meta-SGD, the inner learning rates :math:`\alpha`). For each task :math:`i` with support
set :math:`S_i` and query set :math:`Q_i`:

.. math::

    \min_\theta \; \frac1T \sum_i L_{Q_i}(\phi_i(\theta)), \qquad
    \phi_i(\theta) = \theta - \alpha \nabla L_{S_i}(\theta) \quad \text{(one inner step; ``steps`` of them)}

Modules:

- :mod:`.base`: :class:`MetaLearner`, the shared core (one task's loss, all tasks at once with
  ``torch.vmap``, the inner loop with :class:`metahpo_lib.inner.GD`, the meta-gradient);
- :mod:`.learners`: :class:`MAML` (``first_order=True`` for FOMAML), :class:`MetaSGD`,
  :class:`ANIL`, :class:`Reptile`, :class:`IMAML`, :class:`Pretrained`, each a few lines on
  top of :class:`MetaLearner`;
- :mod:`.training`: :func:`meta_train` (the outer loop) and its :class:`LossCurve`;
- :mod:`.evaluation`: :func:`evaluate` (metric after 0..N adaptation steps, 95% CIs),
  :class:`Evaluation` and :func:`support_curvature` (the inner-loop stability limit);
- :mod:`.finetune`: :func:`~.finetune.pretrain` a classifier and give it a new head
  (:func:`~.finetune.with_new_head`), the start of MAML for fine-tuning.

Names: ``lr`` is the inner step size, ``meta_lr`` the outer one, ``steps`` the inner steps,
``iterations`` the meta-training iterations, ``seed`` an int or a ``torch.Generator``.

>>> import torch
>>> from torch import nn
>>> from metahpo_lib import maml
>>> from metahpo_lib.tasks import Sinusoid
>>> _ = torch.manual_seed(0)
>>> learner = maml.MAML(nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 1)), lr=0.01, steps=1)
>>> curve = maml.meta_train(learner, Sinusoid(), iterations=20, meta_batch=5, progress=False)
>>> ev = maml.evaluate(learner, Sinusoid(), shots=10, tasks=20, steps=1)
>>> ev.steps, ev.metric
([0, 1], 'mse')
"""

from . import finetune
from .base import LOSSES, MetaLearner, check_learner, check_model
from .evaluation import Evaluation, evaluate, support_curvature
from .learners import ANIL, IMAML, MAML, MetaSGD, Pretrained, Reptile
from .training import LossCurve, meta_train

__all__ = ["MetaLearner", "MAML", "MetaSGD", "ANIL", "Reptile", "IMAML", "Pretrained", "meta_train", "LossCurve",
           "evaluate", "Evaluation", "support_curvature", "check_model", "check_learner", "LOSSES"]

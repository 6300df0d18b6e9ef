r"""Hypergradients for real networks (notebook 05): minibatch training of any ``nn.Module`` from a
random initialisation, many trials at once, discrete choices, honest validation.

- :mod:`.model`: a module as a pure function of its params (``functional_forward``,
  ``init_params`` from a seed, ``check_model``: no BatchNorm state);
- :mod:`.problem`: :func:`network` builds a :class:`NetProblem` (hyperparameters: learning rate
  and a short schedule, per-layer weight decay, momentum, dropout, label smoothing, per-feature
  penalties, architecture logits);
- :mod:`.train`: :func:`train`, :func:`unrolled` (a stochastic hypergradient),
  :func:`seed_hypergradients` (S seeds at once);
- :mod:`.many`: :func:`train_many`, K configurations at once with ``torch.func.vmap``;
- :mod:`.relax`: :class:`Mixture` (softmax relaxation of a discrete choice), :func:`discretize`;
- :mod:`.reinforce`: :func:`reinforce_gradient`, :func:`reinforce_search` (score function + baseline);
- :mod:`.validation`: :func:`kfold`, :func:`cv_hypergradient`, :func:`outer_descent` (early stopping).
"""

from .model import ARCH_PREFIX, arch_buffers, check_model, functional_forward, init_params, int_from_seed
from .problem import Batches, NetProblem, network, smoothed_cross_entropy
from .train import check_hparams, check_net, run_all, run_steps, seed_hypergradients, train, unrolled
from .many import evaluate_many, init_many, stack_configs, train_many
from .relax import Mixture, chosen, discretize
from .reinforce import check_choices, reinforce_gradient, reinforce_search, sample_choices
from .validation import OuterRun, cv_hypergradient, fold_problems, kfold, outer_descent

__all__ = ["ARCH_PREFIX", "arch_buffers", "check_model", "functional_forward", "init_params", "int_from_seed",
           "Batches", "NetProblem", "network", "smoothed_cross_entropy", "check_hparams", "check_net", "run_all",
           "run_steps", "seed_hypergradients", "train", "unrolled", "evaluate_many", "init_many", "stack_configs",
           "train_many", "Mixture", "chosen", "discretize", "check_choices", "reinforce_gradient",
           "reinforce_search", "sample_choices", "OuterRun", "cv_hypergradient", "fold_problems", "kfold",
           "outer_descent"]

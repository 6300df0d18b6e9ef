"""metahpo_lib: the library behind the metahpo course on meta-learning for HPO.

Functional core in the style of ``torch.func``: model parameters ("params") and
hyperparameters ("hparams") are plain ``dict[str, Tensor]``. See ``CONTRIBUTING.md``
and the notebooks in ``notebooks/`` for the tour.
"""

__version__ = "0.1.0"

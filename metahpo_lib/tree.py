r"""Tensors and dicts of tensors as one vector: flatten, inner product, norm (notebooks 03-04).

Solvers and optimisers work on ``params`` dicts; the numerical kernels (CG, Newton, L-BFGS)
run fastest on one flat vector. :class:`Flat` converts both ways; :func:`dot` and
:func:`norm` treat a dict as the concatenation of its entries.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Tree = torch.Tensor | dict  # a Tensor or a dict str -> Tensor

__all__ = ["Tree", "Flat", "dot", "norm"]


class Flat:
    """Flatten a tensor or dict of tensors shaped like ``like`` into one vector and back.

    >>> import torch
    >>> from metahpo_lib.tree import Flat
    >>> fl = Flat({"W": torch.zeros(2, 2), "b": torch.zeros(2)})
    >>> v = fl.flat({"W": torch.ones(2, 2), "b": torch.tensor([2., 3.])})
    >>> v
    tensor([1., 1., 1., 1., 2., 3.])
    >>> fl.tree(v)["b"]
    tensor([2., 3.])
    """

    def __init__(self, like: Tree):
        self.is_tensor = isinstance(like, torch.Tensor)
        if self.is_tensor:
            self.keys, self.shapes = [None], [like.shape]
        else:
            self.keys, self.shapes = list(like), [like[k].shape for k in like]
        self.sizes = [s.numel() for s in self.shapes]
        self.numel = sum(self.sizes)

    def flat(self, t: Tree) -> torch.Tensor:
        """One vector holding every entry of ``t`` (a view when ``t`` is one tensor)."""
        if self.is_tensor:
            return t.reshape(-1)
        if len(self.keys) == 1:
            return t[self.keys[0]].reshape(-1)
        return torch.cat([t[k].reshape(-1) for k in self.keys])

    def tree(self, v: torch.Tensor) -> Tree:
        """The tensor or dict shaped like ``like`` whose entries are ``v`` (views of ``v``)."""
        if self.is_tensor:
            return v.view(self.shapes[0])
        return {k: c.view(s) for k, c, s in zip(self.keys, torch.split(v, self.sizes), self.shapes)}

    def function(self, f, like: Tree):
        """``f`` (tree -> tree shaped like ``like``) as a function of flat vectors."""
        return lambda v: self.flat(f(self.tree(v)))


def dot(a: Tree, b: Tree) -> torch.Tensor:
    """Inner product ``<a, b>`` of two tensors or two dicts of tensors (a 0-dim tensor).

    >>> import torch
    >>> from metahpo_lib import tree
    >>> tree.dot({"a": torch.tensor([1., 2.])}, {"a": torch.tensor([3., 4.])})
    tensor(11.)
    """
    if isinstance(a, Mapping):
        return sum(torch.dot(a[k].reshape(-1), b[k].reshape(-1)) for k in a)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def norm(a: Tree) -> torch.Tensor:
    """Euclidean norm of a tensor, or of all tensors of a dict together (a 0-dim tensor).

    >>> import torch
    >>> from metahpo_lib import tree
    >>> tree.norm({"a": torch.tensor([3.]), "b": torch.tensor([4.])})
    tensor(5.)
    """
    return dot(a, a).sqrt()

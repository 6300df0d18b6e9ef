"""Task distributions for meta-learning, sampled (seeded) into batched tensors (notebook 06).

A sampler draws ``tasks`` tasks at once and returns a :class:`TaskBatch`
``(x_support, y_support, x_query, y_query)`` whose tensors have shape
``[tasks, shots, ...]``:

- :class:`Sinusoid`: regression ``y = A sin(x - phi)`` with ``A ~ U[0.1, 5]``,
  ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]`` (Finn et al. 2017). ``x`` and ``y`` are ``[tasks, K, 1]``.
- :class:`DigitsEpisodes`: N-way K-shot classification episodes built from scikit-learn's
  bundled 8x8 digits (no download). Classes are (digit, rotation) pairs; the digits of the
  meta-train and meta-test splits are disjoint. ``x`` is ``[tasks, N*K, 64]`` (pixels in
  [0, 1]), ``y`` is ``[tasks, N*K]`` (``torch.long`` labels 0..N-1).

Both samplers have the same method ``sample(tasks, shots, query, *, seed=0)``, which is all
that :mod:`metahpo_lib.maml` needs. ``seed`` is an int or a ``torch.Generator`` (pass one
generator to consecutive calls to draw fresh tasks each time). Random numbers are drawn on the
CPU and then moved to ``device``, so a seed gives the same tasks on every device.

>>> from metahpo_lib.tasks import Sinusoid
>>> Sinusoid().sample(25, 10, 15, seed=0)
TaskBatch(x_support=(25, 10, 1), y_support=(25, 10, 1), x_query=(25, 15, 1), y_query=(25, 15, 1), torch.float32, cpu)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from . import _validate as V

__all__ = ["TaskBatch", "Sinusoid", "DigitsEpisodes", "check_batch", "check_sampler"]


class TaskBatch(NamedTuple):
    """A batch of tasks: support set (to adapt on) and query set (to evaluate), ``[tasks, shots, ...]``.

    Introduced in notebook 06. Inputs ``x_*`` are ``[tasks, shots, features...]``; targets ``y_*``
    are ``[tasks, shots, ...]`` (regression values or class labels).

    >>> import torch
    >>> from metahpo_lib.tasks import TaskBatch
    >>> b = TaskBatch(torch.zeros(2, 5, 1), torch.zeros(2, 5, 1), torch.zeros(2, 3, 1), torch.zeros(2, 3, 1))
    >>> b.tasks, b.to(dtype=torch.float64).x_query.dtype
    (2, torch.float64)
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor

    @property
    def tasks(self) -> int:
        """Number of tasks (dimension 0)."""
        return self.x_support.shape[0]

    def to(self, device=None, dtype=None) -> "TaskBatch":
        """Move to ``device``; floating tensors (the inputs, regression targets) also to ``dtype``."""
        def mv(t):
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        return TaskBatch(*(mv(t) for t in self))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in zip(self._fields, self))
        return f"TaskBatch({shapes}, {self.x_support.dtype}, {self.x_support.device})"


def check_batch(batch, name: str = "batch") -> TaskBatch:
    """Validate a task batch: four tensors with matching task counts, shots and feature shapes.

    Raises ``ValueError`` naming the tensor that does not fit, so that a support set of 25
    tasks paired with a query set of 20 tasks, or one task without its task dimension
    (``x_support`` of shape ``[shots, 1]``), fails here, not deep inside ``torch.vmap``.
    Introduced in notebook 06.

    >>> import torch
    >>> from metahpo_lib.tasks import Sinusoid, check_batch
    >>> b = Sinusoid().sample(4, 5, seed=0)
    >>> check_batch(b).tasks
    4
    >>> check_batch((b.x_support[0], b.y_support[0], b.x_query[0], b.y_query[0]))
    Traceback (most recent call last):
    ...
    ValueError: batch.x_support must have shape [tasks, shots, features...], got shape (5, 1): is the task dimension missing? For one task, add it with x[None]
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 4:
        raise TypeError(f"{name} must be a TaskBatch or a tuple (x_support, y_support, x_query, y_query), "
                        f"got {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    names = ("x_support", "y_support", "x_query", "y_query")
    for t, n in zip(batch, names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}.{n} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < (3 if n[0] == "x" else 2):
            shape = "[tasks, shots, features...]" if n[0] == "x" else "[tasks, shots, ...]"
            raise ValueError(f"{name}.{n} must have shape {shape}, got shape {tuple(t.shape)}: is the task "
                             "dimension missing? For one task, add it with x[None]")
    xs, ys, xq, yq = batch
    if not xs.is_floating_point() or not xq.is_floating_point():
        raise TypeError(f"{name}.x_support and {name}.x_query must be floating-point tensors, "
                        f"got {xs.dtype} and {xq.dtype}")
    counts = {n: t.shape[0] for n, t in zip(names, batch)}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{name}: support and query must hold the same number of tasks (dimension 0), got "
                         + ", ".join(f"{n} {c}" for n, c in counts.items()))
    for x, y, a, b in ((xs, ys, "x_support", "y_support"), (xq, yq, "x_query", "y_query")):
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"{name}: {a} and {b} must have the same number of shots (dimension 1), "
                             f"got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if xs.shape[2:] != xq.shape[2:]:
        raise ValueError(f"{name}: x_support and x_query must have the same feature shape, got "
                         f"{tuple(xs.shape[2:])} and {tuple(xq.shape[2:])}")
    if ys.shape[2:] != yq.shape[2:] or ys.dtype != yq.dtype:
        raise ValueError(f"{name}: y_support and y_query must have the same target shape and dtype, got "
                         f"{tuple(ys.shape[2:])} ({ys.dtype}) and {tuple(yq.shape[2:])} ({yq.dtype})")
    if len({t.device for t in batch}) != 1:
        raise ValueError(f"{name}: all four tensors must be on one device, got "
                         f"{xs.device}, {ys.device}, {xq.device}, {yq.device}")
    return batch if isinstance(batch, TaskBatch) else TaskBatch(*batch)


def check_sampler(sampler) -> None:
    """Raise ``TypeError`` unless ``sampler`` has the sampler method ``sample(tasks, shots, query, *, seed)``.

    >>> check_sampler(Sinusoid())
    >>> check_sampler([1, 2])
    Traceback (most recent call last):
    ...
    TypeError: sampler must have a method sample(tasks, shots, query, *, seed) (e.g. tasks.Sinusoid), got list
    """
    if not callable(getattr(sampler, "sample", None)):
        raise TypeError(f"sampler must have a method sample(tasks, shots, query, *, seed) (e.g. tasks.Sinusoid), "
                        f"got {type(sampler).__name__}")


def _range(r, name: str) -> tuple[float, float]:
    if not (isinstance(r, (tuple, list)) and len(r) == 2):
        raise ValueError(f"{name} must be a pair (low, high), got {r!r}")
    lo, hi = float(r[0]), float(r[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"{name} must be finite with low <= high, got {r!r}")
    return lo, hi


class Sinusoid:
    r"""Sinusoid regression tasks :math:`y = A \sin(x - \varphi)` (Finn et al. 2017, section 5.1).

    :math:`A \sim U[\text{amplitude}]`, :math:`\varphi \sim U[\text{phase}]`, inputs
    :math:`x \sim U[\text{x\_range}]`; support and query points are drawn independently from
    the same task. Tensors are ``[tasks, shots, 1]``. Introduced in notebook 06.

    >>> from metahpo_lib.tasks import Sinusoid
    >>> b, prm = Sinusoid().sample(3, 10, 20, seed=0, return_params=True)
    >>> b.x_support.shape, b.y_query.shape, sorted(prm)
    (torch.Size([3, 10, 1]), torch.Size([3, 20, 1]), ['amplitude', 'phase'])
    """

    def __init__(self, amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0), *,
                 device=None, dtype: torch.dtype = torch.float32):
        self.amplitude = _range(amplitude, "amplitude")
        self.phase = _range(phase, "phase")
        self.x_range = _range(x_range, "x_range")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype

    def __repr__(self) -> str:
        return (f"Sinusoid(amplitude={self.amplitude}, phase=({self.phase[0]:.3g}, {self.phase[1]:.3g}), "
                f"x_range={self.x_range}, {self.dtype}, {self.device})")

    @staticmethod
    def function(x: torch.Tensor, amplitude, phase) -> torch.Tensor:
        """``A sin(x - phi)``; ``amplitude`` and ``phase`` broadcast against ``x``.

        >>> import math, torch
        >>> Sinusoid.function(torch.tensor([math.pi / 2]), 2.0, 0.0)
        tensor([2.])
        """
        return amplitude * torch.sin(x - phase)

    def sample_tasks(self, tasks: int, *, seed=0) -> dict[str, torch.Tensor]:
        """Draw task parameters: ``{"amplitude": [tasks], "phase": [tasks]}``; ``seed``: int or ``torch.Generator``.

        >>> Sinusoid().sample_tasks(2, seed=0)["amplitude"].shape
        torch.Size([2])
        """
        V.positive_int(tasks, "tasks")
        g = V.generator(seed)
        a = self.amplitude[0] + (self.amplitude[1] - self.amplitude[0]) * torch.rand(tasks, generator=g, dtype=torch.float64)
        p = self.phase[0] + (self.phase[1] - self.phase[0]) * torch.rand(tasks, generator=g, dtype=torch.float64)
        return {"amplitude": a.to(self.device, self.dtype), "phase": p.to(self.device, self.dtype)}

    def batch_for(self, amplitude, phase, shots: int, query: int | None = None, *, seed=0) -> TaskBatch:
        """Support/query sets for given task parameters (tensors ``[tasks]`` or numbers for one task).

        >>> Sinusoid().batch_for(2.0, 0.5, shots=10, query=3, seed=0).x_query.shape
        torch.Size([1, 3, 1])
        """
        V.positive_int(shots, "shots")
        query = shots if query is None else V.positive_int(query, "query")
        a = torch.as_tensor(amplitude, dtype=self.dtype, device=self.device).reshape(-1)
        p = torch.as_tensor(phase, dtype=self.dtype, device=self.device).reshape(-1)
        if a.shape != p.shape:
            raise ValueError(f"amplitude and phase must have the same number of tasks, got {a.numel()} and {p.numel()}")
        g = V.generator(seed)
        lo, hi = self.x_range
        x = lo + (hi - lo) * torch.rand(a.numel(), shots + query, 1, generator=g, dtype=torch.float64)
        x = x.to(self.device, self.dtype)
        y = self.function(x, a[:, None, None], p[:, None, None])
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])

    def sample(self, tasks: int, shots: int, query: int | None = None, *, seed=0, return_params: bool = False):
        """Draw ``tasks`` tasks with ``shots`` support and ``query`` (default ``shots``) query points.

        Returns a :class:`TaskBatch` (and the task parameters when ``return_params``). ``seed``:
        an int, or a ``torch.Generator`` that consecutive calls share (fresh tasks each call).

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> b1, b2 = Sinusoid().sample(2, 5, seed=g), Sinusoid().sample(2, 5, seed=g)
        >>> torch.equal(b1.x_support, b2.x_support), torch.equal(b1.x_support, Sinusoid().sample(2, 5, seed=0).x_support)
        (False, True)
        """
        g = V.generator(seed)
        params = self.sample_tasks(tasks, seed=g)
        batch = self.batch_for(params["amplitude"], params["phase"], shots, query, seed=g)
        return (batch, params) if return_params else batch


_DIGITS_CACHE: dict = {}


def _digits_arrays():
    if "digits" not in _DIGITS_CACHE:
        import sklearn.datasets

        d = sklearn.datasets.load_digits()
        _DIGITS_CACHE["digits"] = (d.images.astype(np.float64) / 16.0, d.target.astype(np.int64))
    return _DIGITS_CACHE["digits"]


class DigitsEpisodes:
    """N-way K-shot episodes from scikit-learn's 8x8 digits (1797 images, bundled).

    Classes are pairs (digit, rotation by a multiple of 90 degrees), the usual trick for
    enlarging the class pool (as done for Omniglot). The default ``rotations=(0, 1)`` (0 and
    90 degrees) avoids near-duplicate classes: a 180-degree turn maps 0, 1, 8 onto themselves
    and 6 onto 9. ``split="train"`` uses the digits in ``train_digits`` (default 0-5, 12
    classes), ``split="test"`` the others (default 6-9, 8 classes), so meta-test classes are
    never seen during meta-training.

    An episode picks ``ways`` classes, assigns them labels 0..ways-1 in random order and draws
    ``shots`` support and ``query`` query images per class, without replacement.
    ``x``: ``[tasks, ways*shots, 64]`` (or ``[tasks, ways*shots, 1, 8, 8]`` with ``flatten=False``).
    Introduced in notebook 06.

    >>> from metahpo_lib.tasks import DigitsEpisodes
    >>> b = DigitsEpisodes(5, split="test").sample(2, 1, 3, seed=0)   # 2 episodes, 5-way 1-shot
    >>> b.x_support.shape, b.y_query.shape, b.y_support.dtype
    (torch.Size([2, 5, 64]), torch.Size([2, 15]), torch.int64)
    """

    def __init__(self, ways: int = 5, *, split: str = "train", train_digits=(0, 1, 2, 3, 4, 5),
                 rotations=(0, 1), flatten: bool = True, device=None, dtype: torch.dtype = torch.float32):
        V.positive_int(ways, "ways", 2)
        V.choice(split, "split", {"train", "test"})
        train_digits = tuple(int(d) for d in train_digits)
        if not train_digits or not set(train_digits) <= set(range(10)) or len(set(train_digits)) == 10:
            raise ValueError(f"train_digits must be a non-empty proper subset of 0..9, got {train_digits!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        digits = sorted(set(train_digits)) if split == "train" else sorted(set(range(10)) - set(train_digits))
        rots = tuple(int(r) for r in rotations)
        if not rots or not set(rots) <= {0, 1, 2, 3} or len(set(rots)) != len(rots):
            raise ValueError(f"rotations must be distinct quarter-turns from {{0, 1, 2, 3}}, got {rotations!r}")
        self.classes = [(d, r) for d in digits for r in rots]
        if ways > len(self.classes):
            raise ValueError(f"ways must be <= {len(self.classes)} (classes in the {split!r} split), got {ways}")
        self.ways, self.split, self.flatten = ways, split, flatten
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        images, target = _digits_arrays()
        base = torch.as_tensor(images)                       # [1797, 8, 8], float64 in [0, 1]
        per_digit = {d: base[torch.as_tensor(target == d)] for d in digits}
        self._max = max(len(v) for v in per_digit.values())
        self.min_examples = min(len(v) for v in per_digit.values())
        # padded table [classes, max_examples, 8, 8] and the count of real examples per class
        table = torch.zeros(len(self.classes), self._max, 8, 8, dtype=torch.float64)
        counts = torch.zeros(len(self.classes), dtype=torch.long)
        for c, (d, r) in enumerate(self.classes):
            imgs = torch.rot90(per_digit[d], r, dims=(1, 2))
            table[c, :len(imgs)] = imgs
            counts[c] = len(imgs)
        self._table, self._counts = table, counts

    @property
    def num_classes(self) -> int:
        """Number of (digit, rotation) classes in this split."""
        return len(self.classes)

    def __repr__(self) -> str:
        digits = sorted({d for d, _ in self.classes})
        return (f"DigitsEpisodes({self.ways}-way, split={self.split!r}, digits={digits}, classes={self.num_classes}, "
                f"{self.dtype}, {self.device})")

    def dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image of this split with its class index (into ``classes``) as the label: ``(x, y)``,
        ``x`` ``[n, 64]`` (or ``[n, 1, 8, 8]`` with ``flatten=False``), ``y`` ``[n]`` ``torch.long``. For
        ordinary supervised pretraining on the split's classes (notebook 06, MAML for fine-tuning).

        >>> x, y = DigitsEpisodes(5, train_digits=(0, 1, 2, 3, 4), rotations=(0,)).dataset()
        >>> x.shape, sorted(set(y.tolist()))
        (torch.Size([901, 64]), [0, 1, 2, 3, 4])
        """
        keep = torch.arange(self._max) < self._counts[:, None]                                  # [classes, max]
        x = self._table[keep].reshape(-1, 1, 8, 8)
        y = torch.arange(self.num_classes)[:, None].expand_as(keep)[keep]
        if self.flatten:
            x = x.reshape(len(x), 64)
        return x.to(self.device, self.dtype), y.to(self.device)

    def sample(self, tasks: int, shots: int, query: int | None = None, *, seed=0, return_params: bool = False):
        """Draw ``tasks`` episodes with ``shots`` support and ``query`` (default 15) query images per class.

        ``seed``: an int or a ``torch.Generator``; ``return_params`` adds ``{"classes": [tasks, ways]}``.

        >>> DigitsEpisodes(5).sample(3, 2, seed=0).x_query.shape   # 15 query images per class
        torch.Size([3, 75, 64])
        """
        V.positive_int(tasks, "tasks")
        V.positive_int(shots, "shots")
        query = 15 if query is None else V.positive_int(query, "query")
        if shots + query > self.min_examples:
            raise ValueError(f"shots + query must be <= {self.min_examples} (images in the smallest class), "
                             f"got {shots} + {query}")
        g = V.generator(seed)
        n = shots + query
        cls = torch.rand(tasks, self.num_classes, generator=g).argsort(dim=1)[:, :self.ways]   # [T, N]
        keys = torch.rand(tasks, self.ways, self._max, generator=g)
        valid = torch.arange(self._max) < self._counts[cls][..., None]                           # [T, N, max]
        keys = torch.where(valid, keys, torch.full_like(keys, 2.0))
        idx = keys.argsort(dim=2)[..., :n]                                                       # [T, N, n]
        imgs = self._table[cls[..., None], idx]                                                  # [T, N, n, 8, 8]
        labels = torch.arange(self.ways).view(1, self.ways, 1).expand(tasks, self.ways, n)

        def part(sl):
            x = imgs[:, :, sl].reshape(tasks, -1, 1, 8, 8)
            if self.flatten:
                x = x.reshape(tasks, x.shape[1], 64)
            y = labels[:, :, sl].reshape(tasks, -1)
            return x.to(self.device, self.dtype), y.to(self.device)

        xs, ys = part(slice(0, shots))
        xq, yq = part(slice(shots, n))
        batch = TaskBatch(xs, ys, xq, yq)
        return (batch, {"classes": cls}) if return_params else batch

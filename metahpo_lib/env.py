"""Environment helpers: pick a device, report versions (notebook 00), measure peak memory."""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import sys
from collections.abc import Callable

import torch

from . import _validate as V


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else CPU. Every factory in metahpo_lib takes ``device=`` (notebook 00).

    >>> import torch
    >>> from metahpo_lib import env
    >>> dev = env.default_device()
    >>> dev.type == ("cuda" if torch.cuda.is_available() else "cpu"), dev in env.available_devices()
    (True, True)
    """
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def available_devices() -> list[torch.device]:
    """Every device the tests and notebooks can use here: CPU, plus CUDA when present (notebook 00).

    >>> from metahpo_lib import env
    >>> env.available_devices()[0]
    device(type='cpu')
    """
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


_PACKAGES = ("torch", "numpy", "sklearn", "matplotlib", "optuna", "ipywidgets", "tqdm", "nbval")


def report() -> dict[str, str]:
    """Versions of Python and the course's packages (``"missing"`` when not installed), and the device
    in use, as a dict (notebook 00).

    >>> from metahpo_lib import env
    >>> info = env.report()
    >>> list(info)[:3], info["device"] == str(env.default_device())
    (['python', 'platform', 'torch'], True)
    """
    info = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in _PACKAGES:
        try:
            info[name] = getattr(importlib.import_module(name), "__version__", "installed")
        except ImportError:
            info[name] = "missing"
    dev = default_device()
    info["device"] = str(dev)
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    info["torch threads"] = str(torch.get_num_threads())
    return info


def print_report() -> None:
    """Print :func:`report` as an aligned two-column table (the first cell of notebook 00).

    >>> from metahpo_lib import env
    >>> env.print_report()
    python ...
    platform ...
    torch ...
    device ...
    torch threads ...
    """
    info = report()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")


@contextlib.contextmanager
def _silent_stderr():
    """Silence file descriptor 2 (the C++ profiler prints start/stop lines there), then restore it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory(fn: Callable[[], object], device=None, *, repeat: int = 3) -> int:
    """Peak number of bytes allocated by torch while running ``fn()``, above what was allocated before.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the profiler's allocation records
    (``profile_memory=True``), summed in time order (the profiler's console messages are
    silenced while it runs). ``fn`` runs ``repeat`` times and the largest peak is returned:
    under heavy load the profiler occasionally drops records, which can only lower a
    measurement. Used in notebook 06 to show that iMAML's memory does not grow with the
    number of inner steps, and in notebook 03 to show that forward mode's memory does not grow
    with the number of unrolled steps.

    >>> import torch
    >>> from metahpo_lib.env import peak_memory
    >>> peak_memory(lambda: torch.zeros(1000, dtype=torch.float64)) >= 8000
    True
    """
    V.positive_int(repeat, "repeat")
    device = torch.device(device) if device is not None else torch.device("cpu")
    return max(_peak_memory_once(fn, device) for _ in range(repeat))


def _peak_memory_once(fn, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with _silent_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                      if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                     key=lambda r: r[0])   # stable: records with equal time stamps keep their order
    peak = cur = 0
    for _, nbytes in records:
        cur += nbytes
        peak = max(peak, cur)
    return int(peak)

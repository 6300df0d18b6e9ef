"""Environment helpers: pick a device, report versions (notebook 00)."""

from __future__ import annotations

import importlib
import platform

import torch


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else CPU. Every factory in metahpo_lib takes ``device=``."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def available_devices() -> list[torch.device]:
    """Every device the tests and notebooks can use here: CPU, plus CUDA when present."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


_PACKAGES = ("torch", "numpy", "sklearn", "matplotlib", "optuna", "ipywidgets", "tqdm", "nbval")


def report() -> dict[str, str]:
    """Versions of Python and the course's packages, and the device in use, as a dict."""
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
    """Print :func:`report` as an aligned two-column table."""
    info = report()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")

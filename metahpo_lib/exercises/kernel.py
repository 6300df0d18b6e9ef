"""A Jupyter kernel manager whose kernels start under resource limits (through ``sandbox.py``), and
the environment of a grading kernel. It is not a container: see README.md, "Exercises, for learners
and teachers"."""

from __future__ import annotations

import os
import sys

from jupyter_client.manager import AsyncKernelManager

from . import sandbox
from .sandbox import Limits


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels start under :class:`Limits` (through this module's command line).

    >>> from metahpo_lib import exercises
    >>> km = exercises.SandboxKernelManager(kernel_name="python3", limits=exercises.Limits(memory_mb=1024))
    >>> km.limits.memory_mb
    1024
    """

    def __init__(self, *args, limits: Limits | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits or Limits()

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        """The kernel's command, behind the limits wrapper.

        >>> from metahpo_lib import exercises
        >>> km = exercises.SandboxKernelManager(kernel_name="python3")
        >>> km.format_kernel_cmd()[1].endswith("sandbox.py")
        True
        """
        if self.kernel_spec is None:
            _ = self.kernel_spec  # loads it
        cmd = super().format_kernel_cmd(extra_arguments)
        return [sys.executable, sandbox.__file__, *self.limits.args(), "--", *cmd]


def kernel_env(threads: int | None = None) -> dict:
    """The environment of a grading kernel: this one's, with ``threads`` BLAS/torch threads when given and
    matplotlib's non-interactive backend.

    >>> from metahpo_lib import exercises
    >>> exercises.kernel_env(threads=1)["OMP_NUM_THREADS"]
    '1'
    """
    env = dict(os.environ, MPLBACKEND="Agg", PYDEVD_DISABLE_FILE_VALIDATION="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env

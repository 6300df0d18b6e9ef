"""Start a command under resource limits: ``python PATH/sandbox.py [limits] -- CMD ...`` sets them and
then replaces itself with CMD (``exec``), so a grading kernel runs limited. Run by path, it imports
nothing but the standard library (starting it costs no torch import)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Resource limits of a grading kernel: address space (MiB), CPU time (s, for the kernel's whole life;
    past it the kernel is killed and counts as dead), size of any file it writes (MiB).

    >>> from metahpo_lib import exercises
    >>> exercises.Limits().args()
    ['--memory-mb', '4096', '--cpu-seconds', '900', '--file-mb', '256']
    """

    memory_mb: int = 4096
    cpu_seconds: int = 900
    file_mb: int = 256

    def args(self) -> list[str]:
        """The wrapper's command-line flags for these limits.

        >>> from metahpo_lib import exercises
        >>> exercises.Limits(memory_mb=512).args()[:2]
        ['--memory-mb', '512']
        """
        return ["--memory-mb", str(self.memory_mb), "--cpu-seconds", str(self.cpu_seconds),
                "--file-mb", str(self.file_mb)]


def apply_limits(limits: Limits) -> None:
    """Set this process's resource limits (inherited by what it ``exec``s): ``RLIMIT_AS``, ``RLIMIT_CPU``,
    ``RLIMIT_FSIZE``, and no core dumps.

    >>> import subprocess, sys
    >>> code = ("from metahpo_lib.exercises import sandbox; sandbox.apply_limits(sandbox.Limits(memory_mb=2048)); "
    ...         "bytearray(3 * 2 ** 30)")
    >>> "MemoryError" in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    True
    """
    import resource

    mib = 2 ** 20
    for what, value in [(resource.RLIMIT_AS, limits.memory_mb * mib), (resource.RLIMIT_CPU, limits.cpu_seconds),
                        (resource.RLIMIT_FSIZE, limits.file_mb * mib), (resource.RLIMIT_CORE, 0)]:
        resource.setrlimit(what, (value, value))


def main(argv=None) -> None:
    r"""``python sandbox.py [limits] -- CMD...``: apply the limits, then become CMD.

    >>> import subprocess, sys
    >>> from metahpo_lib.exercises import sandbox
    >>> subprocess.run([sys.executable, sandbox.__file__, "--memory-mb", "1024", "--",
    ...                 sys.executable, "-c", "print('limited')"], capture_output=True, text=True).stdout
    'limited\n'
    """
    parser = argparse.ArgumentParser(prog="sandbox.py")
    defaults = Limits()
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb)
    parser.add_argument("--cpu-seconds", type=int, default=defaults.cpu_seconds)
    parser.add_argument("--file-mb", type=int, default=defaults.file_mb)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("cmd: give the command to run after --")
    apply_limits(Limits(args.memory_mb, args.cpu_seconds, args.file_mb))
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()

"""``python -m metahpo_lib.exercises``: the ``metahpo-exercises`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

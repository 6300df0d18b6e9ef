r"""Optuna studies: the samplers, the storages and one search (notebook 07).

The one module that talks to Optuna's study machinery; :mod:`~metahpo_lib.hpo.workers` and
:mod:`~metahpo_lib.hpo.methods` import from here.

- :data:`SAMPLERS`, :func:`make_sampler`: Optuna's random, TPE and GP samplers by name;
- :func:`open_storage`, :func:`create_study`: a study kept in a journal file, SQLite or an RDB;
- :func:`suggest`: ask a trial for one configuration of a ``space``;
- :func:`optuna_search`: minimise an objective with a sampler, a budget and an optional warm
  start (configurations enqueued with ``study.enqueue_trial``); returns a
  :class:`~metahpo_lib.hpo.History`.

Storage URLs: ``journal:PATH`` (or a path ending in ``.log``/``.journal``): an append-only
journal file, for processes on one machine; ``sqlite:///PATH.db``: SQLite, one machine;
``postgresql://user:pass@host/db``, ``mysql+pymysql://...``: an RDB server, many machines.
``postgresql://`` (and ``postgres://``) use the psycopg 3 driver (``pip install
'metahpo-lib[distributed]'``); name another one explicitly, e.g. ``postgresql+psycopg2://``.
Messages show URLs through :func:`redact_url`, which hides the password.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import _validate as V
from .search import Categorical, Float, History, Int, check_objective, check_space, int_seed

__all__ = ["SAMPLERS", "require_optuna", "make_sampler", "suggest", "redact_url", "open_storage", "create_study",
           "optuna_search"]

#: the Optuna samplers :func:`make_sampler` builds, by name
SAMPLERS = ("random", "tpe", "gp")
_RDB_PREFIXES = ("sqlite://", "postgresql", "postgres://", "mysql", "oracle", "mssql")


def require_optuna():
    """The ``optuna`` module (warnings only), or an ImportError that says how to install it.

    >>> from metahpo_lib.hpo.studies import require_optuna
    >>> require_optuna().__name__
    'optuna'
    """
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("this needs optuna: pip install optuna (or pip install -e '.[course]')") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_sampler(name: str, seed=0, *, parallel: bool = False):
    """An Optuna sampler by name: ``"random"``, ``"tpe"`` (multivariate TPE; with ``parallel``,
    the constant liar for several workers) or ``"gp"`` (Optuna's GPSampler).

    ``seed``: an int or a ``torch.Generator`` (see :func:`~metahpo_lib.hpo.int_seed`).

    >>> from metahpo_lib.hpo import make_sampler
    >>> type(make_sampler("tpe", seed=0)).__name__
    'TPESampler'
    """
    V.choice(name, "sampler", set(SAMPLERS))
    seed = int_seed(seed)
    optuna = require_optuna()
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=parallel)
    return optuna.samplers.GPSampler(seed=seed)


def suggest(trial, space: dict) -> dict:
    """Ask an Optuna ``trial`` for one configuration of ``space`` (Float, Int, Categorical).

    >>> from metahpo_lib.hpo import Int, suggest
    >>> from metahpo_lib.hpo.studies import require_optuna
    >>> study = require_optuna().create_study()
    >>> study.enqueue_trial({"n": 3})
    >>> suggest(study.ask(), {"n": Int(1, 5)})
    {'n': 3}
    """
    out = {}
    for name, dim in space.items():
        if isinstance(dim, Categorical):
            out[name] = trial.suggest_categorical(name, list(dim.choices))
        elif isinstance(dim, Int):
            out[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Float):
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    return out


def _journal(url: str):
    optuna = require_optuna()
    path = Path(url[len("journal:"):] if url.startswith("journal:") else url).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not path.is_file()):
        raise ValueError(f"storage {url!r} cannot be opened: {parent} is not a writable directory "
                         f"or {path} is not a file")
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    except Exception as e:
        raise ValueError(f"storage {url!r} cannot be opened: {type(e).__name__}: {e}") from e


def redact_url(url) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs); other values as ``str``.

    >>> from metahpo_lib.hpo.studies import redact_url
    >>> redact_url("postgresql://hpo:s3cret@db.example.org:5432/hpo")
    'postgresql://hpo:***@db.example.org:5432/hpo'
    """
    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url) if isinstance(url, str) else str(url)


def _postgres_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` -> ``postgresql+psycopg://`` (psycopg 3), or an
    ImportError that names the driver; a URL that names its driver is kept."""
    scheme, _, rest = url.partition("://")
    if "+" in scheme:
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise ImportError(f"storage {redact_url(url)!r} needs the PostgreSQL driver psycopg 3: "
                          f"pip install 'metahpo-lib[distributed]' (or pip install 'psycopg[binary]'); "
                          f"to use psycopg2 instead, write postgresql+psycopg2://...") from e
    return f"postgresql+psycopg://{rest}"


def _rdb(url: str, heartbeat_interval: int, grace_period: int):
    optuna = require_optuna()
    if url.startswith(("postgresql", "postgres://")):
        url = _postgres_url(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                              engine_kwargs=engine)
    except Exception as e:
        msg = str(e).replace(url, redact_url(url)).strip().splitlines()
        raise ValueError(f"storage {redact_url(url)!r} cannot be opened: {type(e).__name__}: "
                         f"{msg[0] if msg else ''}") from e


def open_storage(url, *, heartbeat_interval: int = 2, grace_period: int = 6):
    """Open an Optuna storage from a URL or path (module docstring); an Optuna storage is
    returned as it is. Raises ``ValueError`` naming ``storage`` when it cannot be opened.

    >>> import tempfile
    >>> from metahpo_lib.hpo import open_storage
    >>> with tempfile.TemporaryDirectory() as d:
    ...     type(open_storage(f"journal:{d}/hpo.log")).__name__
    'JournalStorage'
    """
    optuna = require_optuna()
    if isinstance(url, optuna.storages.BaseStorage):
        return url
    if isinstance(url, Path):
        url = f"journal:{url}"
    if not isinstance(url, str) or not url:
        raise TypeError(f"storage must be a URL string (journal:PATH, sqlite:///PATH, postgresql://...) "
                        f"or an optuna storage, got {url!r}")
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return _journal(url)
    if url.startswith(_RDB_PREFIXES):
        return _rdb(url, heartbeat_interval, grace_period)
    raise ValueError(f"storage must start with journal:, sqlite:///, postgresql://, mysql... (or be a path "
                     f"ending in .log or .journal), got {redact_url(url)!r}")


def create_study(storage, study_name: str, *, seed=0, sampler: str = "tpe"):
    """Create (or load) a minimising study named ``study_name`` in ``storage``, with the
    sampler set up for several workers (``parallel=True`` in :func:`make_sampler`).

    >>> import tempfile
    >>> from metahpo_lib.hpo import create_study
    >>> with tempfile.TemporaryDirectory() as d:
    ...     create_study(f"journal:{d}/hpo.log", "demo", sampler="random").direction.name
    'MINIMIZE'
    """
    optuna = require_optuna()
    return optuna.create_study(study_name=study_name, storage=open_storage(storage), direction="minimize",
                               sampler=make_sampler(sampler, seed, parallel=True), load_if_exists=True)


def _enqueue(study, warm_start, space: dict, budget: int) -> None:
    for cfg in list(warm_start)[:budget]:
        if not isinstance(cfg, dict) or set(cfg) != set(space):
            raise ValueError(f"warm_start configurations must be dicts with keys {sorted(space)}, got {cfg!r}")
        study.enqueue_trial(dict(cfg), skip_if_exists=False)


def optuna_search(objective: Callable, space, budget: int, *, sampler: str = "tpe", seed=0,
                  warm_start: Sequence[dict] = (), storage=None, study_name: str | None = None) -> History:
    """Minimise ``objective(config)`` over ``space`` with ``budget`` trials of an Optuna sampler.

    ``warm_start`` configurations are evaluated first (``study.enqueue_trial``), then the
    sampler takes over, conditioned on them. ``storage`` (see :func:`open_storage`) keeps every
    trial in a database. Introduced in notebook 07.

    >>> from metahpo_lib.hpo import Float, optuna_search
    >>> h = optuna_search(lambda c: (c["x"] - 2.0) ** 2, {"x": Float(0.0, 5.0)}, 8, seed=0, warm_start=[{"x": 2.0}])
    >>> h.configs[0], h.best_value
    ({'x': 2.0}, 0.0)
    """
    check_objective(objective)
    space = check_space(space)
    V.positive_int(budget, "budget")
    smp = make_sampler(sampler, seed)
    optuna = require_optuna()
    storage = None if storage is None else open_storage(storage)
    study = optuna.create_study(direction="minimize", sampler=smp, storage=storage, study_name=study_name,
                                load_if_exists=storage is not None)
    _enqueue(study, warm_start, space, budget)
    hist = History()

    def f(trial):
        cfg = suggest(trial, space)
        value = float(objective(cfg))
        hist.add(cfg, value)
        return value

    study.optimize(f, n_trials=budget)
    return hist

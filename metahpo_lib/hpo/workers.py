r"""Many worker processes (and machines) on one Optuna study (notebook 06, "scaling out").

Every worker opens the same *storage* and loops ask -> evaluate -> tell until the study holds
``budget`` finished trials:

- ``journal:PATH`` (or a path ending in ``.log``/``.journal``): an append-only journal file,
  for processes on one machine (or a shared file system with working locks);
- ``sqlite:///PATH.db``: SQLite, one machine;
- ``postgresql://user:pass@host/db``, ``mysql+pymysql://...``: an RDB server, many machines
  (the driver package must be installed; nothing else changes).

Exactly ``budget`` trials finish: a worker only evaluates trial number ``k`` when fewer than
``budget`` trials numbered below ``k`` are finished or running; a surplus trial is told
``FAIL`` with the user attribute ``skipped`` and never evaluated. A worker that dies
mid-trial leaves a ``RUNNING`` trial behind; the others mark it ``FAIL`` (same machine: its
process id is gone; RDB: its heartbeat stopped) and evaluate a replacement, so finished
trials are never lost and the budget is still met.

Command line (runs a tabular benchmark with N worker processes)::

    python -m metahpo_lib.hpo.workers --storage journal:/tmp/hpo.log --benchmark hpobench \
        --dataset car --budget 50 --workers 4 --sampler tpe --seed 0
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import warnings
import time
from pathlib import Path

from .. import _validate as V
from .optuna_tools import _optuna, make_sampler, suggest

_RDB_PREFIXES = ("sqlite://", "postgresql", "postgres://", "mysql", "oracle", "mssql")


def open_storage(url, *, heartbeat_interval: int = 2, grace_period: int = 6):
    """Open an Optuna storage from a URL or path (see the module docstring).

    Raises ``ValueError`` naming ``storage`` when the URL is unknown or cannot be opened.
    """
    optuna = _optuna()
    if isinstance(url, optuna.storages.BaseStorage):
        return url
    if isinstance(url, Path):
        url = f"journal:{url}"
    if not isinstance(url, str) or not url:
        raise TypeError(f"storage must be a URL string (journal:PATH, sqlite:///PATH, postgresql://...) "
                        f"or an optuna storage, got {url!r}")
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        path = Path(url[len("journal:"):] if url.startswith("journal:") else url).expanduser()
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not path.is_file()):
            raise ValueError(f"storage {url!r} cannot be opened: {parent} is not a writable directory "
                             f"or {path} is not a file")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        try:
            backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
            return optuna.storages.JournalStorage(backend)
        except Exception as e:
            raise ValueError(f"storage {url!r} cannot be opened: {type(e).__name__}: {e}") from e
    if url.startswith(_RDB_PREFIXES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                                  engine_kwargs={"connect_args": {"timeout": 60}}
                                                  if url.startswith("sqlite") else None)
        except Exception as e:
            raise ValueError(f"storage {url!r} cannot be opened: {type(e).__name__}: {e}") from e
    raise ValueError(f"storage must start with journal:, sqlite:///, postgresql://, mysql... (or be a path "
                     f"ending in .log or .journal), got {url!r}")


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell: leave it to the heartbeat (RDB) or to the user
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def fail_dead_trials(study) -> list[int]:
    """Mark ``FAIL`` every running trial whose worker is gone (a dead process on this
    machine; a stopped heartbeat with an RDB storage). Returns their numbers."""
    optuna = _optuna()
    TS = optuna.trial.TrialState
    failed = []
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,))}
        failed += sorted(before - after)
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        w = t.user_attrs.get("worker")
        if w is not None and not _alive_here(w):
            try:
                study._storage.set_trial_state_values(t._trial_id, TS.FAIL)
                failed.append(t.number)
            except Exception:  # another worker got there first
                pass
    return failed


def run_worker(objective, space, storage, study_name: str, budget: int, *, sampler: str = "tpe", seed: int = 0,
               poll: float = 0.2, progress: bool = False) -> int:
    """One worker: ask/evaluate/tell on the shared study until it has ``budget`` finished
    trials. Returns how many trials this worker evaluated."""
    optuna = _optuna()
    TS = optuna.trial.TrialState
    V.positive_int(budget, "budget")
    store = open_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=store,
                              sampler=make_sampler(sampler, seed, parallel=True))
    me, done = _worker_id(), 0
    beat = None
    from optuna.storages._heartbeat import is_heartbeat_enabled

    while True:
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state == TS.COMPLETE for t in trials)
        active = sum(t.state in (TS.COMPLETE, TS.RUNNING, TS.WAITING) for t in trials)
        if finished >= budget:
            return done
        if active >= budget:  # the rest is running elsewhere; wait in case a worker dies
            time.sleep(poll)
            continue
        with warnings.catch_warnings():  # we beat the heart ourselves (below), not via Study.optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, "worker", me)
        ahead = sum(t.state in (TS.COMPLETE, TS.RUNNING, TS.WAITING) and t.number < trial.number
                    for t in study.get_trials(deepcopy=False))
        if ahead >= budget:
            study._storage.set_trial_user_attr(trial._trial_id, "skipped", "budget reached")
            study.tell(trial, state=TS.FAIL)
            continue
        if is_heartbeat_enabled(store):
            stop = threading.Event()

            def _beat(tid=trial._trial_id, ev=stop):
                while not ev.wait(store.get_heartbeat_interval()):
                    store.record_heartbeat(tid)

            store.record_heartbeat(trial._trial_id)
            beat = threading.Thread(target=_beat, daemon=True)
            beat.start()
        try:
            value = float(objective(suggest(trial, space)))
        except Exception:
            study.tell(trial, state=TS.FAIL)
            raise
        finally:
            if beat is not None:
                stop.set()
                beat.join()
                beat = None
        study.tell(trial, value)
        done += 1
        if progress:
            print(f"[{me}] trial {trial.number}: {value:.6g}", flush=True)


def create_study(storage, study_name: str, *, seed: int = 0, sampler: str = "tpe"):
    """Create (or load) a minimising study in ``storage``."""
    optuna = _optuna()
    return optuna.create_study(study_name=study_name, storage=open_storage(storage), direction="minimize",
                               sampler=make_sampler(sampler, seed, parallel=True), load_if_exists=True)


def _table_objective(benchmark: str, dataset: str, metric: str | None, delay: float):
    from .tables import TableBenchmark

    bench = TableBenchmark(benchmark, dataset, metric)
    f = bench.objective(seed=None)

    def objective(cfg):
        if delay > 0:
            time.sleep(delay)  # stands in for the minutes a real training run takes
        return f(cfg)

    return bench, objective


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m metahpo_lib.hpo.workers",
                                description="Run a tabular HPO benchmark with N worker processes on one Optuna study.")
    p.add_argument("--storage", required=True, help="journal:PATH | sqlite:///PATH.db | postgresql://... (RDB URL)")
    p.add_argument("--study", default=None, help="study name (default: BENCHMARK-DATASET-SAMPLER-SEED)")
    p.add_argument("--benchmark", default="hpobench")
    p.add_argument("--dataset", default="car")
    p.add_argument("--metric", default=None)
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="worker processes to start here (0: this process is one)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS_CLI)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds of sleep per evaluation (simulated training)")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    V.positive_int(a.budget, "budget")
    if a.workers < 0:
        raise ValueError(f"workers must be >= 0, got {a.workers}")
    name = a.study or f"{a.benchmark}-{a.dataset}-{a.sampler}-{a.seed}"
    bench, objective = _table_objective(a.benchmark, a.dataset, a.metric, a.delay)
    create_study(a.storage, name, seed=a.seed, sampler=a.sampler)
    if a.workers == 0:  # be one worker (this is what the spawned processes run)
        run_worker(objective, bench.space, a.storage, name, a.budget, sampler=a.sampler,
                   seed=a.seed * 1000 + a.worker_index, progress=not a.quiet)
        return 0
    base = [sys.executable, "-m", "metahpo_lib.hpo.workers", "--storage", a.storage, "--study", name,
            "--benchmark", a.benchmark, "--dataset", a.dataset, "--budget", str(a.budget), "--workers", "0",
            "--sampler", a.sampler, "--seed", str(a.seed), "--delay", str(a.delay)]
    base += ["--metric", a.metric] if a.metric else []
    base += ["--quiet"] if a.quiet else []
    t0 = time.perf_counter()
    procs = [subprocess.Popen(base + ["--worker-index", str(i)]) for i in range(a.workers)]
    codes = [pr.wait() for pr in procs]
    optuna = _optuna()
    study = optuna.load_study(study_name=name, storage=open_storage(a.storage))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value)
    print(f"study {name!r}: {len(done)} finished trials by {a.workers} workers in {time.perf_counter() - t0:.1f} s; "
          f"best loss {best.value:.4g} (normalised regret {float(bench.normalized_regret(best.value)):.4g}) "
          f"at {bench.decode(best.params)}")
    return max(codes)


SAMPLERS_CLI = ("random", "tpe", "gp")

if __name__ == "__main__":
    sys.exit(main())

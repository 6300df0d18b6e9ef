r"""Many worker processes (and machines) on one Optuna study (notebook 07, "scaling out").

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
import contextlib
import os
import socket
import subprocess
import sys
import threading
import warnings
import time

from .. import _validate as V
from .studies import SAMPLERS, create_study, make_sampler, open_storage, require_optuna, suggest

__all__ = ["run_worker", "fail_dead_trials", "main"]


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
    machine; a stopped heartbeat with an RDB storage). Returns their numbers.

    >>> from metahpo_lib.hpo import workers
    >>> from metahpo_lib.hpo.studies import require_optuna
    >>> workers.fail_dead_trials(require_optuna().create_study())   # nothing running
    []
    """
    optuna = require_optuna()
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


@contextlib.contextmanager
def _heartbeat(store, trial_id: int):
    """Record the heartbeat of a running trial in a thread while the block runs (RDB storages)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not is_heartbeat_enabled(store):
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(store.get_heartbeat_interval()):
            store.record_heartbeat(trial_id)

    store.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _next_trial(study, budget: int, me: str, TS):
    """Ask for a trial to evaluate: ``"done"`` when the study is full, ``"wait"`` while the rest
    runs elsewhere, ``"skip"`` after a surplus trial (told FAIL with the user attribute
    ``skipped``, never evaluated), else the trial."""
    trials = study.get_trials(deepcopy=False)
    if sum(t.state == TS.COMPLETE for t in trials) >= budget:
        return "done"
    if sum(t.state in (TS.COMPLETE, TS.RUNNING, TS.WAITING) for t in trials) >= budget:
        return "wait"  # the rest is running elsewhere; wait in case a worker dies
    with warnings.catch_warnings():  # we beat the heart ourselves (_heartbeat), not via Study.optimize
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "worker", me)
    ahead = sum(t.state in (TS.COMPLETE, TS.RUNNING, TS.WAITING) and t.number < trial.number
                for t in study.get_trials(deepcopy=False))
    if ahead >= budget:
        study._storage.set_trial_user_attr(trial._trial_id, "skipped", "budget reached")
        study.tell(trial, state=TS.FAIL)
        return "skip"
    return trial


def run_worker(objective, space, storage, study_name: str, budget: int, *, sampler: str = "tpe", seed=0,
               poll: float = 0.2, progress: bool = False) -> int:
    """One worker: ask / evaluate / tell on the shared study until it has ``budget`` finished
    trials (module docstring). Returns how many trials this worker evaluated.

    >>> import tempfile
    >>> from metahpo_lib.hpo import Float, create_study, workers
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = create_study(f"sqlite:///{d}/hpo.db", "demo", sampler="random")
    ...     workers.run_worker(lambda c: c["x"] ** 2, {"x": Float(-1.0, 1.0)}, f"sqlite:///{d}/hpo.db", "demo", 3,
    ...                        sampler="random")
    3
    """
    V.positive_int(budget, "budget")
    optuna = require_optuna()
    TS = optuna.trial.TrialState
    store = open_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=store, sampler=make_sampler(sampler, seed, parallel=True))
    me, done = f"{socket.gethostname()}:{os.getpid()}", 0
    while True:
        fail_dead_trials(study)
        trial = _next_trial(study, budget, me, TS)
        if trial == "done":
            return done
        if trial in ("wait", "skip"):
            time.sleep(poll if trial == "wait" else 0)
            continue
        try:
            with _heartbeat(store, trial._trial_id):
                value = float(objective(suggest(trial, space)))
        except Exception:
            study.tell(trial, state=TS.FAIL)
            raise
        study.tell(trial, value)
        done += 1
        if progress:
            print(f"[{me}] trial {trial.number}: {value:.6g}", flush=True)


def _table_objective(benchmark: str, dataset: str, metric: str | None, delay: float):
    from .tables import TableBenchmark

    bench = TableBenchmark(benchmark, dataset, metric)
    f = bench.objective(seed=None)

    def objective(cfg):
        if delay > 0:
            time.sleep(delay)  # stands in for the minutes a real training run takes
        return f(cfg)

    return bench, objective


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m metahpo_lib.hpo.workers",
                                description="Run a tabular HPO benchmark with N worker processes on one Optuna study.")
    p.add_argument("--storage", required=True, help="journal:PATH | sqlite:///PATH.db | postgresql://... (RDB URL)")
    p.add_argument("--study", default=None, help="study name (default: BENCHMARK-DATASET-SAMPLER-SEED)")
    p.add_argument("--benchmark", default="hpobench")
    p.add_argument("--dataset", default="car")
    p.add_argument("--metric", default=None)
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="worker processes to start here (0: this process is one)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds of sleep per evaluation (simulated training)")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true")
    return p


def _spawn(a, name: str) -> list[int]:
    """Start ``a.workers`` worker processes on study ``name``; return their exit codes."""
    base = [sys.executable, "-m", "metahpo_lib.hpo.workers", "--storage", a.storage, "--study", name,
            "--benchmark", a.benchmark, "--dataset", a.dataset, "--budget", str(a.budget), "--workers", "0",
            "--sampler", a.sampler, "--seed", str(a.seed), "--delay", str(a.delay)]
    base += ["--metric", a.metric] if a.metric else []
    base += ["--quiet"] if a.quiet else []
    procs = [subprocess.Popen(base + ["--worker-index", str(i)]) for i in range(a.workers)]
    return [pr.wait() for pr in procs]


def main(argv=None) -> int:
    """The command line (module docstring): run a tabular benchmark with ``--workers`` worker
    processes on one study, or (``--workers 0``) be one worker. Returns the exit code.

    >>> import tempfile
    >>> from metahpo_lib.hpo import workers
    >>> with tempfile.TemporaryDirectory() as d:
    ...     workers.main(["--storage", f"journal:{d}/hpo.log", "--benchmark", "nasbench201", "--dataset", "cifar10",
    ...                   "--budget", "2", "--workers", "0", "--sampler", "random", "--quiet"])
    0
    """
    a = _parser().parse_args(argv)
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
    t0 = time.perf_counter()
    codes = _spawn(a, name)
    optuna = require_optuna()
    study = optuna.load_study(study_name=name, storage=open_storage(a.storage))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value)
    print(f"study {name!r}: {len(done)} finished trials by {a.workers} workers in {time.perf_counter() - t0:.1f} s; "
          f"best loss {best.value:.4g} (normalised regret {float(bench.normalized_regret(best.value)):.4g}) "
          f"at {bench.decode(best.params)}")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())

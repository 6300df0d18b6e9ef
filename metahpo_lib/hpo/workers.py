r"""Many worker processes (and machines) on one Optuna study (notebook 07, "scaling out").

Every worker opens the same *storage* and loops ask -> evaluate -> tell until the study holds
``budget`` finished trials:

- ``journal:PATH`` (or a path ending in ``.log``/``.journal``): an append-only journal file,
  for processes on one machine (or a shared file system with working locks);
- ``sqlite:///PATH.db``: SQLite, one machine;
- ``postgresql://user@host/db`` (psycopg 3: ``pip install 'metahpo-lib[distributed]'``),
  ``mysql+pymysql://...``: an RDB server, many machines.

Exactly ``budget`` trials finish: a worker only evaluates trial number ``k`` when fewer than
``budget`` trials numbered below ``k`` are finished, running or queued; a surplus trial is told
``FAIL`` with the user attribute ``skipped`` and never evaluated.

A worker creates its trial already tagged with its owner (:func:`~metahpo_lib.hpo.resilience.worker_tag`,
in the same journal record or transaction), so a worker killed at any moment leaves no running
trial without an owner. The others mark a dead worker's trial ``FAIL`` (same machine: its
process is gone or a zombie; RDB: its heartbeat stopped), and the one that failed it queues its
configuration again (user attribute ``rerun_of``; once): finished trials are never lost and the
budget is still met. Each trial's sampler is seeded from ``(seed, trial number)``, so the same
command on many machines draws distinct configurations. A lost database connection is retried
with back-off for ``retry_for`` seconds, then the worker gives up and says why.

Command line (runs a tabular benchmark with N worker processes; the storage URL may instead come
from the environment variable ``METAHPO_STORAGE``, so that no password shows in ``ps``)::

    python -m metahpo_lib.hpo.workers --storage journal:/tmp/hpo.log --benchmark hpobench \
        --dataset car --budget 50 --workers 4 --sampler tpe --seed 0

Exit code 0 when every worker finished; 1 when a worker died, failed or gave up, or the budget
was not met; a summary line counts completed, failed and re-run trials.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np

from .. import _validate as V
from .search import int_seed
from .resilience import StorageUnavailableError, retrying, tag_alive, worker_tag
from .studies import SAMPLERS, create_study, make_sampler, open_storage, redact_url, require_optuna, suggest

__all__ = ["STORAGE_ENV", "trial_seed", "fail_dead_trials", "run_worker", "summarize", "main"]

#: the environment variable the command line reads the storage URL from when ``--storage`` is absent
STORAGE_ENV = "METAHPO_STORAGE"
#: exit code of a worker that gave up on an unreachable storage
GAVE_UP = 3


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a study run with ``seed``: distinct trial numbers
    (unique within a study, whichever machine creates them) give independent streams.

    >>> from metahpo_lib.hpo.workers import trial_seed
    >>> trial_seed(0, 1) != trial_seed(0, 2), trial_seed(0, 1) == trial_seed(0, 1)
    (True, True)
    """
    return int(np.random.SeedSequence([int(seed) % 2**63, int(number)]).generate_state(1)[0])


def _heartbeat_enabled(store) -> bool:
    optuna = require_optuna()
    return isinstance(store, optuna.storages.RDBStorage) and bool(store.get_heartbeat_interval())


def _requeue(study, trial, orphan: bool = False) -> None:
    """Queue a failed trial's configuration again, once (not a re-run of a re-run); an
    ``orphan`` (created, never evaluated) passes its queued configuration on as it is."""
    if orphan and trial.system_attrs.get("fixed_params"):
        study.enqueue_trial(dict(trial.system_attrs["fixed_params"]), skip_if_exists=False,
                            user_attrs={k: v for k, v in trial.user_attrs.items() if k == "rerun_of"})
    elif trial.params and "rerun_of" not in trial.user_attrs and not orphan:
        study.enqueue_trial(dict(trial.params), user_attrs={"rerun_of": trial.number}, skip_if_exists=False)


def _fail(study, store, trial, reason: str) -> bool:
    """Mark a running trial FAIL; True for the one process whose update won (it re-queues it)."""
    optuna = require_optuna()
    tid = store.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    try:
        store.set_trial_user_attr(tid, "failed", reason)
        store.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker got there first
    _requeue(study, trial, orphan=reason == "creation reply lost")
    return True


def _fail_stale(study, store) -> list[int]:
    """Optuna's heartbeat check (RDB): FAIL trials whose heartbeat stopped; re-queue those we failed."""
    optuna = require_optuna()
    ours = []
    for name in ("heartbeat_stale_trial_callback", "failed_trial_callback"):  # optuna >= 4.9 / older
        setattr(store, name, lambda s, t: (ours.append(t.number), _requeue(s, t)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    return ours


def fail_dead_trials(study, *, me: str | None = None, seen: set | None = None) -> list[int]:
    """Mark ``FAIL`` every running trial whose worker is gone: a dead or zombie process on this
    machine, a stopped heartbeat with an RDB storage, or a trial tagged ``me`` (the caller runs
    none at this point: it is a trial whose creation reply was lost). The configuration of each
    trial this call failed is queued again (once). Returns the numbers this call failed.

    ``seen``: trial numbers this worker has looked at before; with an RDB, a remote trial seen
    for the first time gets one heartbeat, so a worker killed before its first beat still goes stale.

    >>> from metahpo_lib.hpo import workers
    >>> from metahpo_lib.hpo.studies import require_optuna
    >>> workers.fail_dead_trials(require_optuna().create_study())   # nothing running
    []
    """
    optuna = require_optuna()
    store, running = study._storage, (optuna.trial.TrialState.RUNNING,)
    heartbeat = _heartbeat_enabled(store)
    failed = _fail_stale(study, store) if heartbeat else []
    for t in study.get_trials(deepcopy=False, states=running):
        owner = t.user_attrs.get("worker")
        alive = None if owner is None else (False if owner == me else tag_alive(owner))
        if alive is False:
            if _fail(study, store, t, "worker died" if owner != me else "creation reply lost"):
                failed.append(t.number)
        elif heartbeat and seen is not None and t.number not in seen:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                store.record_heartbeat(store.get_trial_id_from_study_id_trial_number(study._study_id, t.number))
        if seen is not None:
            seen.add(t.number)
    return sorted(failed)


@contextlib.contextmanager
def _heartbeat(store, trial_id: int):
    """Record the heartbeat of a running trial in a thread while the block runs (RDB storages);
    a beat that fails (connection lost) is simply tried again at the next interval."""
    if not _heartbeat_enabled(store):
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):
                store.record_heartbeat(trial_id)
            if stop.wait(store.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _take_waiting(study, store, TS):
    """Take a queued (WAITING) trial: fail it (exactly one worker's update wins) and return its
    fixed parameters and user attributes for a copy; ``({}, {})`` when none is queued."""
    optuna = require_optuna()
    for t in store.get_all_trials(study._study_id, deepcopy=False, states=(TS.WAITING,)):
        tid = store.get_trial_id_from_study_id_trial_number(study._study_id, t.number)
        try:
            store.set_trial_user_attr(tid, "skipped", "queued configuration taken by a worker")
            store.set_trial_state_values(tid, TS.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        return dict(t.system_attrs.get("fixed_params", {})), dict(t.user_attrs)
    return {}, {}


def _create_trial(study, me: str, sampler: str, seed: int, TS):
    """A new RUNNING trial tagged ``me`` in one write, its sampler seeded by :func:`trial_seed`."""
    optuna = require_optuna()
    store = study._storage
    fixed, attrs = _take_waiting(study, store, TS)
    attrs = {k: v for k, v in attrs.items() if k != "skipped"} | {"worker": me}
    template = optuna.trial.create_trial(state=TS.RUNNING, user_attrs=attrs,
                                         system_attrs={"fixed_params": fixed} if fixed else None)
    trial_id = store.create_new_trial(study._study_id, template_trial=template)
    study.sampler = make_sampler(sampler, trial_seed(seed, store.get_trial(trial_id).number), parallel=True)
    return optuna.trial.Trial(study, trial_id)


def _next_trial(study, budget: int, me: str, sampler: str, seed: int, TS):
    """A trial to evaluate: ``"done"`` when the study is full, ``"wait"`` while the rest runs
    elsewhere, ``"skip"`` after a surplus trial (told FAIL with the user attribute ``skipped``,
    never evaluated), else the trial."""
    trials = study.get_trials(deepcopy=False)
    if sum(t.state == TS.COMPLETE for t in trials) >= budget:
        return "done"
    if sum(t.state in (TS.COMPLETE, TS.RUNNING, TS.WAITING) for t in trials) >= budget and \
            not any(t.state == TS.WAITING for t in trials):
        return "wait"  # the rest is running elsewhere; wait in case a worker dies
    trial = _create_trial(study, me, sampler, seed, TS)
    ahead = sum(t.state in (TS.COMPLETE, TS.RUNNING, TS.WAITING) and t.number < trial.number
                for t in study.get_trials(deepcopy=False))
    if ahead >= budget:
        study._storage.set_trial_user_attr(trial._trial_id, "skipped", "budget reached")
        study.tell(trial, state=TS.FAIL)
        return "skip"
    return trial


def _evaluate(study, trial, objective, space, r, TS):
    """Suggest, evaluate (heartbeat running) and tell; the value, or None when another worker
    failed the trial meanwhile (its heartbeat was lost)."""
    with _heartbeat(study._storage, trial._trial_id):
        cfg = r(suggest, trial, space)
        try:
            value = float(objective(cfg))
        except Exception:
            r(study.tell, trial, state=TS.FAIL, skip_if_finished=True)
            raise
    r(study.tell, trial, value, skip_if_finished=True)
    return value if r(study._storage.get_trial, trial._trial_id).state == TS.COMPLETE else None


def run_worker(objective, space, storage, study_name: str, budget: int, *, sampler: str = "tpe", seed=0,
               poll: float = 0.2, progress: bool = False, retry_for: float = 60.0) -> int:
    """One worker: ask / evaluate / tell on the shared study until it has ``budget`` finished
    trials (module docstring). Returns how many trials this worker evaluated. Storage calls are
    retried for ``retry_for`` seconds while the connection is lost, then
    :class:`~metahpo_lib.hpo.resilience.StorageUnavailableError`.

    >>> import tempfile
    >>> from metahpo_lib.hpo import Float, create_study, workers
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = create_study(f"sqlite:///{d}/hpo.db", "demo", sampler="random")
    ...     workers.run_worker(lambda c: c["x"] ** 2, {"x": Float(-1.0, 1.0)}, f"sqlite:///{d}/hpo.db", "demo", 3,
    ...                        sampler="random")
    3
    """
    V.positive_int(budget, "budget")
    V.positive_float(retry_for, "retry_for")
    V.choice(sampler, "sampler", set(SAMPLERS))
    optuna = require_optuna()
    TS = optuna.trial.TrialState
    r = functools.partial(retrying, retry_for=retry_for, what=f"storage {redact_url(storage)}")
    store = r(open_storage, storage)
    study = r(optuna.load_study, study_name=study_name, storage=store, sampler=make_sampler(sampler, seed))
    me, done, seen, seed = worker_tag(), 0, set(), int_seed(seed)
    while True:
        r(fail_dead_trials, study, me=me, seen=seen)
        trial = r(_next_trial, study, budget, me, sampler, seed, TS)
        if trial in ("done", "wait", "skip"):
            if trial == "done":
                return done
            time.sleep(poll if trial == "wait" else 0)
            continue
        value = _evaluate(study, trial, objective, space, r, TS)
        if value is None:
            print(f"[{me}] trial {trial.number} was failed by another worker while it ran (heartbeat lost); "
                  f"its configuration is queued again", file=sys.stderr, flush=True)
            continue
        done += 1
        if progress:
            print(f"[{me}] trial {trial.number}: {value:.6g}", flush=True)


def summarize(study) -> dict:
    """Counts of a study's trials: ``completed``, ``failed`` (evaluations lost or raised; not the
    skipped surplus), ``rerun`` (completed re-runs of a failed trial's configuration), ``skipped``,
    ``running``.

    >>> from metahpo_lib.hpo import workers
    >>> from metahpo_lib.hpo.studies import require_optuna
    >>> workers.summarize(require_optuna().create_study())
    {'completed': 0, 'failed': 0, 'rerun': 0, 'skipped': 0, 'running': 0}
    """
    TS = require_optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TS.FAIL]
    return {"completed": sum(t.state == TS.COMPLETE for t in trials),
            "failed": sum("skipped" not in t.user_attrs for t in failed),
            "rerun": sum(t.state == TS.COMPLETE and "rerun_of" in t.user_attrs for t in trials),
            "skipped": sum("skipped" in t.user_attrs for t in failed),
            "running": sum(t.state == TS.RUNNING for t in trials)}


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
    p.add_argument("--storage", default=None, help=f"journal:PATH | sqlite:///PATH.db | postgresql://user@host/db "
                                                   f"(default: the environment variable {STORAGE_ENV})")
    p.add_argument("--study", default=None, help="study name (default: BENCHMARK-DATASET-SAMPLER-SEED, the same on "
                                                 "every machine)")
    p.add_argument("--benchmark", default="hpobench")
    p.add_argument("--dataset", default="car")
    p.add_argument("--metric", default=None)
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="worker processes to start here (0: this process is one)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds of sleep per evaluation (simulated training)")
    p.add_argument("--retry-for", type=float, default=60.0, help="seconds to retry a lost database connection")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true")
    return p


def _died(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return "gave up (storage unreachable)" if code == GAVE_UP else f"exited with code {code}"


def _spawn(a, name: str, storage: str) -> list[int]:
    """Start ``a.workers`` worker processes on study ``name`` (the storage URL passed in the
    environment, not on the command line) and reap each the moment it ends; their exit codes."""
    base = [sys.executable, "-m", "metahpo_lib.hpo.workers", "--study", name, "--benchmark", a.benchmark,
            "--dataset", a.dataset, "--budget", str(a.budget), "--workers", "0", "--sampler", a.sampler,
            "--seed", str(a.seed), "--delay", str(a.delay), "--retry-for", str(a.retry_for)]
    base += (["--metric", a.metric] if a.metric else []) + (["--quiet"] if a.quiet else [])
    env = dict(os.environ, **{STORAGE_ENV: storage})
    procs = [subprocess.Popen(base + ["--worker-index", str(i)], env=env) for i in range(a.workers)]
    codes: list[int | None] = [None] * len(procs)
    try:
        while None in codes:
            for i, pr in enumerate(procs):
                if codes[i] is None and pr.poll() is not None:  # poll() reaps: no zombie stays behind
                    codes[i] = pr.returncode
                    if pr.returncode != 0:
                        print(f"worker {i} (pid {pr.pid}) {_died(pr.returncode)}; the others fail its trial "
                              f"and run it again", file=sys.stderr, flush=True)
            time.sleep(0.05)
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.terminate()
                pr.wait()
    return [int(c) for c in codes]


def _report(a, name: str, storage: str, codes: list[int], seconds: float, bench) -> int:
    """Print the summary line; return the exit code."""
    optuna = require_optuna()
    study = retrying(optuna.load_study, study_name=name, storage=open_storage(storage), retry_for=a.retry_for)
    n = summarize(study)
    bad = sum(c != 0 for c in codes)
    line = (f"study {name!r} in {redact_url(storage)}: {n['completed']} completed, {n['failed']} failed, "
            f"{n['rerun']} re-run ({n['skipped']} surplus skipped) by {len(codes)} workers in {seconds:.1f} s; "
            f"{bad} worker(s) died or gave up")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        best = min(done, key=lambda t: t.value)
        line += (f"; best loss {best.value:.4g} (normalised regret {float(bench.normalized_regret(best.value)):.4g}) "
                 f"at {bench.decode(best.params)}")
    print(line, flush=True)
    return 0 if bad == 0 and n["completed"] >= a.budget else 1


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
    storage = a.storage or os.environ.get(STORAGE_ENV)
    if not storage:
        raise ValueError(f"storage must be given: --storage URL or the environment variable {STORAGE_ENV}")
    V.positive_int(a.budget, "budget")
    V.positive_float(a.retry_for, "retry_for")
    if a.workers < 0:
        raise ValueError(f"workers must be >= 0, got {a.workers}")
    name = a.study or f"{a.benchmark}-{a.dataset}-{a.sampler}-{a.seed}"
    bench, objective = _table_objective(a.benchmark, a.dataset, a.metric, a.delay)
    retrying(create_study, storage, name, seed=a.seed, sampler=a.sampler, retry_for=a.retry_for)
    if a.workers == 0:  # be one worker (this is what the spawned processes run)
        try:
            run_worker(objective, bench.space, storage, name, a.budget, sampler=a.sampler, seed=a.seed,
                       progress=not a.quiet, retry_for=a.retry_for)
        except StorageUnavailableError as e:
            print(f"worker {worker_tag()} gives up: {e}", file=sys.stderr, flush=True)
            return GAVE_UP
        return 0
    t0 = time.perf_counter()
    codes = _spawn(a, name, storage)
    return _report(a, name, storage, codes, time.perf_counter() - t0, bench)


if __name__ == "__main__":
    sys.exit(main())

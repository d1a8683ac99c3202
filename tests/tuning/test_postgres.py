"""A study on PostgreSQL shared by worker processes: concurrent workers, a worker killed with
SIGKILL mid-trial, and a password that stays out of every log line, error and result.

The server is the throw-away one of `postgres.py`; the workers are `tuning_worker.py` processes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from postgres import postgres_url  # noqa: F401 - the fixture: a throw-away server for the session
from sqlalchemy.engine import make_url

from recforge.tuning.storage import TuningStorageError, open_storage

WORKER = Path(__file__).with_name("tuning_worker.py")
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """`tuning_worker.py` as a child process; its output goes to files (no pipe to fill up).

    `wait=True` starts it with `--wait`: `go()` lets it start tuning once it is ready."""

    def __init__(self, tmp: Path, url: str, study: str, worker: str, *, wait: bool = False, **options: int | str) -> None:
        self.name = worker
        self.out, self.err = tmp / f"worker-{worker}.out", tmp / f"worker-{worker}.err"
        args = [sys.executable, str(WORKER), url, study, "--worker", worker, *(["--wait"] if wait else [])]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.PIPE if wait else subprocess.DEVNULL, text=True
            )  # fmt: skip

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def go(self, timeout: float = 90) -> None:
        """Wait until the worker is ready, then let it tune."""
        deadline = time.monotonic() + timeout
        while "ready\n" not in self.err.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"worker {self.name} did not get ready\n{self.output()[-4000:]}")
            time.sleep(0.1)
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def finish(self, timeout: float = 120) -> dict:
        """Wait for the worker; its JSON report (fails with the worker's output otherwise)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"worker {self.name} ran past {timeout} s\n{self.output()[-4000:]}")
        assert rc == 0, f"worker {self.name} exited with {rc}\n{self.output()[-4000:]}"
        return json.loads(self.out.read_text().strip().splitlines()[-1])


@functools.cache
def _reader(url: str) -> optuna.storages.RDBStorage:
    # one engine for the test's many reads, not a connection pool per poll
    return optuna.storages.RDBStorage(url)


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_reader(url))


def _wait_for_running(url: str, name: str, worker: Worker, timeout: float = 60) -> optuna.trial.FrozenTrial:
    """The first RUNNING trial of study `name`, polled from the storage while `worker` lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, f"worker {worker.name} ended before its trial ran\n{worker.output()[-4000:]}"
        try:
            running = _load(url, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # the worker has not created the study yet
            running = []
        if running:
            return running[0]
        time.sleep(0.2)
    pytest.fail(f"no trial of study {name!r} was running after {timeout} s\n{worker.output()[-4000:]}")


def test_a_password_url_opens_and_is_never_logged(postgres_url, caplog):  # noqa: F811
    password = make_url(postgres_url).password
    with caplog.at_level(logging.INFO, logger="recforge.tuning.storage"):
        storage = open_storage(postgres_url, heartbeat_seconds=1)
    assert isinstance(storage.get_all_studies(), list)  # connected, with the password
    assert "127.0.0.1" in caplog.text and password not in caplog.text

    wrong = make_url(postgres_url).set(password="not-" + password).render_as_string(hide_password=False)
    with pytest.raises(TuningStorageError) as info:
        open_storage(wrong, heartbeat_seconds=1)
    text = "".join(traceback.format_exception(info.value))
    assert "database studies" in str(info.value)
    assert password not in text and "not-" + password not in text


def test_an_unreachable_server_names_host_and_database_not_the_password(caplog):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        url = f"postgresql+psycopg2://tuner:s3cret-xyz@127.0.0.1:{port}/studies"
        start = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(TuningStorageError) as info:
            open_storage(url, heartbeat_seconds=1)
    message = str(info.value)
    assert "127.0.0.1" in message and "studies" in message and str(port) in message
    assert "s3cret-xyz" not in "".join(traceback.format_exception(info.value))
    assert "s3cret-xyz" not in caplog.text
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_two_worker_processes_share_one_study(postgres_url, tmp_path):  # noqa: F811
    password = make_url(postgres_url).password
    study = "item_knn.two_workers"
    _reader(postgres_url)  # Optuna's tables exist before the workers start: see the test below
    # one seed, as when every worker reads the same parameters: the draws differ by trial number;
    # item_knn fits without an optimizer, so the workers cost little more than their imports
    one = Worker(tmp_path, postgres_url, study, "1", wait=True, family="item_knn", n_trials=3, seed=0)
    two = Worker(tmp_path, postgres_url, study, "2", wait=True, family="item_knn", n_trials=2, seed=0)
    try:
        one.go()
        two.go()  # both create-or-load the new study at the same moment
        reports = {"1": one.finish(), "2": two.finish()}
    finally:
        one.stop()
        two.stop()

    trials = _load(postgres_url, study).trials
    numbers = [t.number for t in trials]
    assert len(trials) == 3 + 2
    assert sorted(numbers) == list(range(5)), numbers
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state) for t in trials]
    # workers that open a new study together may each queue the defaults as their first trial
    # (`try_defaults`); every sampled trial is a different configuration
    sampled = [t for t in trials if not t.user_attrs.get("baseline")]
    assert 1 <= len(trials) - len(sampled) <= 2
    assert len({tuple(sorted(t.params.items())) for t in sampled}) == len(sampled), "two trials drew the same configuration"
    by_worker = {w: sorted(t.number for t in trials if t.user_attrs.get("worker") == w) for w in ("1", "2")}
    assert len(by_worker["1"]) == 3 and len(by_worker["2"]) == 2, by_worker
    for w, report in reports.items():
        assert sorted(report["trials"]) == sorted(report["run_trials"]) == by_worker[w]
        assert report["best_params"]["run_trials"] == len(by_worker[w])
        assert password not in report["storage"] and password not in report["best_params"]["storage"]
        assert "***" in report["storage"]
    for worker in (one, two):
        assert password not in worker.output()


_OPEN_TOGETHER = """
import sys
import optuna
from recforge.tuning.storage import open_storage
print("ready", flush=True)
sys.stdin.readline()
optuna.create_study(storage=open_storage(sys.argv[1], heartbeat_seconds=1), study_name="s", load_if_exists=True)
"""


@pytest.mark.slow
def test_two_workers_can_open_a_new_database_together(postgres_url):  # noqa: F811
    import psycopg2

    url = make_url(postgres_url)
    new = "fresh_tables"
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {new}")
    conn.close()
    target = url.set(database=new).render_as_string(hide_password=False)
    workers = [
        subprocess.Popen([sys.executable, "-c", _OPEN_TOGETHER, target], cwd=ROOT, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    try:
        for worker in workers:
            assert worker.stdout.readline() == "ready\n", worker.communicate()[1]
        for worker in workers:  # both create the tables at the same moment
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [(worker.wait(timeout=60), worker.communicate()[1]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    for rc, err in results:
        assert rc == 0, err.strip().splitlines()[-1]
        assert url.password not in err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
def test_a_worker_killed_mid_trial_leaves_the_study_usable(postgres_url, tmp_path):  # noqa: F811
    study = "bpr.killed_worker"
    doomed = Worker(tmp_path, postgres_url, study, "killed", n_trials=1, heartbeat=1, epochs=100_000)
    # the next worker gets ready (imports) meanwhile, and starts once the grace period is over
    after = Worker(tmp_path, postgres_url, study, "2", wait=True, n_trials=2, heartbeat=1, epochs=2)
    try:
        running = _wait_for_running(postgres_url, study, doomed)
        time.sleep(1.5)  # the trial's first heartbeat is written just after it starts running
        [still] = [t for t in _load(postgres_url, study).trials if t.number == running.number]
        assert still.state == TrialState.RUNNING, "the slow trial finished before it could be killed"
        os.kill(doomed.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        doomed.proc.wait()
        assert doomed.proc.returncode == -signal.SIGKILL
        assert _load(postgres_url, study).trials[running.number].state == TrialState.RUNNING
        time.sleep(max(0.0, 2.5 - (time.monotonic() - killed_at)))  # past the grace period (2 heartbeats)
        after.go()
        report = after.finish()
    finally:
        doomed.stop()
        after.stop()

    trials = _load(postgres_url, study).trials
    states = {t.number: t.state for t in trials}
    assert states[running.number] == TrialState.FAIL
    assert TrialState.RUNNING not in states.values(), states
    mine = [t for t in trials if t.user_attrs.get("worker") == "2"]
    assert sorted(t.number for t in mine) == sorted(report["trials"])
    assert len(mine) == 2 and all(t.state == TrialState.COMPLETE for t in mine), [(t.number, t.state) for t in mine]
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == running.number]
    assert len(retries) == 1, "the killed trial was not enqueued again"
    assert retries[0].params == still.params and retries[0] in mine

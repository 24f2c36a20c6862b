"""`gpupool scheduler run` as a real process: clean stop on SIGTERM, one round at a time.

The crash-test hook (GPUPOOL_TEST_PAUSE_IN_ROUND) makes a daemon announce, by
creating a file, that it is inside its round's write transaction, and hold
there until the test deletes the file: the tests act at exactly that moment
instead of sleeping and hoping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from gpupool.scheduler import service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, SchedulerRoundRow
from gpupool.scheduler.service import JobRequest


def _gpupool(db, *args, pause_file=None, stderr=subprocess.PIPE):
    env = dict(os.environ, GPUPOOL_USER="admin", GPUPOOL_DATABASE_URL=db)
    env.pop("GPUPOOL_TEST_PAUSE_IN_ROUND", None)
    if pause_file is not None:
        env.update(GPUPOOL_TEST_PAUSE_IN_ROUND=str(pause_file), GPUPOOL_TEST_PAUSE_SECONDS="60")
    command = [sys.executable, "-m", "gpupool.cli.main", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _wait_for(ready, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the process never got there"
        time.sleep(0.05)


def _submit(db, count):
    with unit_of_work(db) as session:
        requests = [JobRequest(org="lab", gpus=4, hours=10) for _ in range(count)]
        service.submit_jobs(session, "admin", requests)


def _states(db):
    with unit_of_work(db) as session:
        return sorted(session.scalars(select(JobRow.state)).all())


def test_sigterm_mid_round_finishes_the_round_then_exits_cleanly(platform, tmp_path):
    _submit(platform, 2)
    pause_file = tmp_path / "in-round"
    daemon = _gpupool(platform, "scheduler", "run", "--interval", "0.2", pause_file=pause_file)
    _wait_for(pause_file.exists, daemon)
    daemon.send_signal(signal.SIGTERM)  # while the round's rows are written but not committed
    time.sleep(0.5)  # let the handler run while the round still holds (not a timing assertion)
    pause_file.unlink()
    out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert "SIGTERM received: finishing the round in progress, then exiting" in err
    assert (
        "scheduler stopped by SIGTERM: 1 round(s) run, 0 skipped, 0 failed, 2 job(s) started" in err
    )
    assert _states(platform) == ["running", "running"]  # the interrupted round committed


def test_two_daemons_never_run_rounds_at_the_same_time(platform, tmp_path):
    _submit(platform, 8)  # 24 GPUs of capacity: six 4-GPU jobs fit
    pause_file = tmp_path / "in-round"
    first = _gpupool(platform, "scheduler", "run", "--max-rounds", "1", pause_file=pause_file)
    _wait_for(pause_file.exists, first)
    second = _gpupool(platform, "scheduler", "run", "--max-rounds", "1")
    _, second_err = second.communicate(timeout=60)
    assert second.returncode == 0, second_err
    assert "another scheduler holds the round lock: round skipped" in second_err
    assert "0 round(s) run, 1 skipped" in second_err
    waiter_log = tmp_path / "waiter.log"
    with waiter_log.open("w") as log:
        waiter = _gpupool(platform, "schedule", "--json", stderr=log)
        _wait_for(lambda: "waiting for it" in waiter_log.read_text(), waiter)
    pause_file.unlink()  # the first round commits; only then may the waiter's round run
    _, first_err = first.communicate(timeout=60)
    waiter_out, _ = waiter.communicate(timeout=60)
    assert first.returncode == 0 and waiter.returncode == 0, (first_err, waiter_log.read_text())
    assert '"started": []' in waiter_out  # it saw the first round's six jobs holding every GPU
    with unit_of_work(platform) as session:
        rounds = session.scalars(select(SchedulerRoundRow).order_by(SchedulerRoundRow.id)).all()
        assert [r.started_jobs for r in rounds] == [6, 0]
        assert rounds[0].finished_at <= rounds[1].started_at  # strictly one after the other
    assert _states(platform).count("running") == 6


def test_bad_daemon_options_are_one_line(platform):
    bad = _gpupool(platform, "scheduler", "run", "--interval", "often")
    _, err = bad.communicate(timeout=60)
    assert (bad.returncode, err) == (2, "error: --interval: must be a number, got 'often'\n")
    bad = _gpupool(platform, "scheduler", "run", "--grace", "lots", "--max-rounds", "1")
    _, err = bad.communicate(timeout=60)
    assert bad.returncode == 2 and err.startswith("error: --grace: must look like 10%+5m")

"""SQLite's write lock is real: a command reads under it, so concurrent commands
act one after another (gpupool.scheduler.database, docs/storage.md).

pysqlite used to begin a transaction only at the first write, so a finish read
its job outside any lock: two finishes of one job, interleaved, both saw it
running, and the second turned the first's completed job into a failed one
ending after its placement had ended.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from gpupool.model import IllegalTransition
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import lifecycle, repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest

T0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
PAUSE_S = 1.0  # how long the first finish waits, after reading its job, for the second


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gpupool.db'}"  # one file, one connection per thread


def _started_job(db) -> int:
    with unit_of_work(db) as session:
        job, _ = service.submit_job(session, "admin", JobRequest(org="lab", gpus=1, hours=4), T0)
        assert [s.job_id for s in run_round(session, FifoPolicy(), T0).started] == [job]
    return job


def test_a_finish_waits_for_a_concurrent_one_instead_of_acting_on_what_it_read(
    platform, monkeypatch
):
    job = _started_job(platform)
    first_read, second_done = threading.Event(), threading.Event()
    real_check = lifecycle.check_transition

    def check_after_a_pause(state, new_state):
        if threading.current_thread().name == "first":  # it has read the job: running
            first_read.set()
            second_done.wait(PAUSE_S)
        return real_check(state, new_state)

    monkeypatch.setattr(lifecycle, "check_transition", check_after_a_pause)
    outcomes = {}

    def finish(name, failed, at):
        try:
            with unit_of_work(platform) as session:
                lifecycle.finish_job(session, "admin", job, failed=failed, at=at, now=T0 + HOUR)
            outcomes[name] = "finished"
        except IllegalTransition:
            outcomes[name] = "refused"
        finally:
            if name == "second":
                second_done.set()

    first = threading.Thread(target=finish, args=("first", True, T0 + HOUR), name="first")
    second = threading.Thread(target=finish, args=("second", False, T0 + HOUR / 2))
    first.start()
    assert first_read.wait(10)
    second.name = "second"
    second.start()
    first.join(30)
    second.join(30)

    # the first held the write lock: the second waited, then found the job ended
    assert outcomes == {"first": "finished", "second": "refused"}
    with unit_of_work(platform) as session:
        row = repository.get_job(session, job)
        (placement,) = repository.placements_of(session, job)
        assert (row.state, row.ended_at, placement.ended_at) == ("failed", T0 + HOUR, T0 + HOUR)


def test_a_round_reads_and_solves_without_the_write_lock(platform):
    """A round's unit of work takes the lock only to write, so a command may commit
    while a round is between its snapshot and its write phase."""
    with unit_of_work(platform, write_lock="when_writing") as reading:
        assert repository.list_pools(reading)  # a round's snapshot read
        with unit_of_work(platform) as session:  # would wait out the busy timeout if held
            service.submit_job(session, "admin", JobRequest(org="lab", gpus=1, hours=1), T0)
        result = run_round(reading, FifoPolicy(), T0)  # its write phase takes the lock
        assert len(result.started) == 1

"""The scheduler daemon: rounds back to back, one at a time per database.

``run_daemon`` repeats ``one_round`` every ``interval`` seconds. Each round:

- takes the round lock (gpupool.scheduler.locking). By default a daemon that
  finds it held *skips* that round and says so in its log (another scheduler is
  doing the work); ``wait=True`` (and ``gpupool schedule``) waits instead,
  logging that it waits;
- runs gpupool.scheduler.rounds.run_round with the active policy in one
  transaction: overdue jobs are reaped (timed_out), then jobs start;
- logs one line: round id, policy, jobs started / waiting / timed out /
  preempted / skipped by the re-check, and the policy's solve time.

SIGTERM and SIGINT (Ctrl-C) only set a flag: the round in progress finishes
and commits, then the daemon exits cleanly. A SIGKILL mid-round loses nothing
but that round: its transaction never commits, and the lock dies with the
process. A round that fails, for any reason (database unreachable for a
moment, a policy violation, a bug), is rolled back, logged and retried: after
``interval`` the first time, then backing off (doubling, at least
MIN_RETRY_SECONDS, at most MAX_BACKOFF_SECONDS) while failures repeat, so a
failure that lasts never makes a hot loop; the first round that succeeds
restores the interval. Only a refused permission stops the daemon, since
retrying cannot help. Rows the round cannot handle do not fail it at all
(gpupool.scheduler.quarantine).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gpupool.model import GpupoolError, PermissionDenied
from gpupool.scheduler.database import make_engine, unit_of_work
from gpupool.scheduler.locking import round_lock

log = logging.getLogger("gpupool.scheduler")

MIN_RETRY_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
WAITING = "another scheduler holds the round lock: waiting for it"
SKIPPED = "another scheduler holds the round lock: round skipped"


@contextmanager
def locked_session(url: str | None, wait: bool = True, say: Callable[[str], None] = log.info):
    """A unit of work holding the round lock; yields None when skipped (``wait=False``)."""
    engine = make_engine(url)
    try:
        with round_lock(engine, wait, on_wait=lambda: say(WAITING)) as held:
            if not held:
                say(SKIPPED)
                yield None
                return
            # a round reads and solves without holding up writers; it takes the write
            # lock for its write phase (gpupool.scheduler.database)
            with unit_of_work(engine, write_lock="when_writing") as session:
                yield session
    finally:
        engine.dispose()


@dataclass
class RoundReport:
    """What one round did, for the log and for callers."""

    result: object  # rounds.RoundResult
    policy: str
    seconds: float

    def line(self) -> str:
        r = self.result
        return (
            f"round {r.round_id} with {self.policy}: {len(r.started)} started, "
            f"{len(r.waiting)} waiting, {len(r.timed_out)} timed out, "
            f"{len(r.preempted)} preempted, {len(r.skipped)} skipped by the re-check"
            + (f", {len(r.quarantined)} quarantined" if r.quarantined else "")
            + (f", {len(r.set_aside)} row(s) set aside" if r.set_aside else "")
            + f"; solve {r.solve_seconds:.3f} s, round {self.seconds:.3f} s"
        )


def policy_label(active) -> str:
    if active.version:
        return f"policy v{active.version} ({active.kind})"
    aside = ", ".join(sorted(getattr(active, "set_aside", {})))
    return f"FIFO (default; {aside} set aside)" if aside else "FIFO (default)"


def run_locked_round(session, actor: str, grace=None, now=None) -> RoundReport:
    """One live round in ``session`` (which holds the round lock), admins only."""
    from gpupool.scheduler.permissions import require_admin
    from gpupool.scheduler.rounds import run_active_round

    began = time.perf_counter()
    require_admin(session, actor, "run scheduling rounds", "scheduler")
    result, active = run_active_round(session, now=now, grace=grace, actor=actor)
    return RoundReport(result, policy_label(active), time.perf_counter() - began)


def one_round(url: str | None, actor: str, grace=None, wait: bool = False) -> RoundReport | None:
    """Take the lock (or skip), run a round, commit; None when skipped."""
    with locked_session(url, wait) as session:
        if session is None:
            return None
        report = run_locked_round(session, actor, grace)
    log.info(report.line())
    return report


@dataclass
class DaemonSummary:
    rounds: int = 0
    skipped: int = 0
    failed: int = 0
    started: int = 0
    stopped_by: str | None = None


@contextmanager
def _stop_on_signals(stop: threading.Event, summary: DaemonSummary) -> Iterator[None]:
    """SIGTERM / SIGINT set ``stop`` (the round in progress finishes first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        log.info("%s received: finishing the round in progress, then exiting", _name(signum))
        summary.stopped_by = _name(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def run_daemon(
    url: str | None,
    actor: str,
    interval: float = 10.0,
    max_rounds: int | None = None,
    grace=None,
    wait: bool = False,
    stop: threading.Event | None = None,
) -> DaemonSummary:
    """Rounds every ``interval`` seconds until stopped or ``max_rounds`` attempts."""
    stop = stop or threading.Event()
    summary = DaemonSummary()
    log.info(
        "scheduler started: a round every %g s%s, grace %s",
        interval,
        "" if max_rounds is None else f", at most {max_rounds} round(s)",
        grace,
    )
    attempts = failures = 0
    with _stop_on_signals(stop, summary):
        while not stop.is_set() and (max_rounds is None or attempts < max_rounds):
            attempts += 1
            failures = 0 if _attempt(url, actor, grace, wait, summary) else failures + 1
            if max_rounds is not None and attempts >= max_rounds:
                break
            stop.wait(next_wait(interval, failures))
    log.info(
        "scheduler stopped%s: %d round(s) run, %d skipped, %d failed, %d job(s) started",
        f" by {summary.stopped_by}" if summary.stopped_by else "",
        summary.rounds,
        summary.skipped,
        summary.failed,
        summary.started,
    )
    return summary


def next_wait(interval: float, failures: int) -> float:
    """Seconds until the next round after ``failures`` failed rounds in a row."""
    if failures == 0:
        return interval
    backoff = max(interval, MIN_RETRY_SECONDS) * 2.0 ** min(failures - 1, 30)
    return min(backoff, max(interval, MAX_BACKOFF_SECONDS))


def _attempt(url, actor, grace, wait, summary: DaemonSummary) -> bool:
    """One round, or its failure logged; False if it failed."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        report = one_round(url, actor, grace, wait)
    except PermissionDenied:
        raise
    except Exception as exc:  # a daemon outlives any one round; Ctrl-C still stops it
        summary.failed += 1
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        expected = isinstance(exc, GpupoolError | SQLAlchemyError)
        if not expected:
            reason = f"{type(exc).__name__}: {reason}"
        log.error("round failed, retrying: %s", reason, exc_info=not expected)
        return False
    if report is None:
        summary.skipped += 1
    else:
        summary.rounds += 1
        summary.started += len(report.result.started)
    return True

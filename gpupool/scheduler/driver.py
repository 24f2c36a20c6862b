"""The one round driver: snapshot -> allocate -> validate -> apply, live and simulated.

Modelled on Blox's round loop (msr-fiddle/blox): one loop, the same policy
objects, and a small backend interface with one implementation per world:

- gpupool.scheduler.rounds.DatabaseRound: the snapshot is read from the
  database (read phase, no lock); ``apply`` is the write phase, in the
  caller's transaction;
- gpupool.simulations.engine.Simulation: the snapshot is the simulator's
  in-memory state; ``apply`` moves it (preemptions, starts, quarantines).

Everything between snapshot and apply is here and nowhere else: the policy's
``allocate``, ``validate_allocation`` (gpupool.policies.validation), pricing
the starts the policy did not price, and isolating a policy failure. The
isolation is part of the driver, not of the database side, because it only
needs the snapshot and the policy: a simulated round that meets a job the
policy fails on sets it aside exactly as a live round does (the backend fails
the blamed jobs in ``apply``), so a replay shows what the platform would do.

This module reads no database and imports no SimPy: policies <- scheduler
(this driver) <- simulations.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

from gpupool import model
from gpupool.model import Allocation, Snapshot
from gpupool.policies.validation import validate_allocation

MAX_CULPRITS = 3  # jobs one round may blame for a policy or accounting failure
ISOLATION_SECONDS = 60.0  # how long a round may spend finding them
log = logging.getLogger("gpupool.scheduler")


@dataclass
class Decision:
    """A round's checked allocation, with a charge quote per start.

    ``blamed``: pending jobs the policy failed on, set aside (job id -> reason
    text); the backend fails them in ``apply``.
    """

    snapshot: Snapshot
    allocation: Allocation
    charges: dict[int, model.Charge]
    solve_seconds: float
    blamed: dict[int, str] = field(default_factory=dict)


class RoundBackend(Protocol):
    """The world a round runs in: where its snapshot comes from and where its decision goes.

    ``now`` is whatever instant the backend keeps time in (a datetime live,
    scenario seconds in simulation); the driver only passes it through.
    """

    def snapshot(self, now) -> Snapshot: ...

    def apply(self, decision: Decision, now) -> None: ...


def run_round(backend: RoundBackend, policy: object, now) -> Decision:
    """One round: the backend's snapshot, the policy's checked decision, applied."""
    decision = decide(policy, backend.snapshot(now))
    backend.apply(decision, now)
    return decision


def decide(policy: object, snapshot: Snapshot) -> Decision:
    """The policy's allocation, checked and priced.

    Defence in depth: if the policy, the validation or the pricing raises, the
    round looks for at most MAX_CULPRITS pending jobs to blame (Isolation) and
    decides without them; if none can be found the error stands (a live round
    fails, rolled back, to be retried; a simulation stops with it).
    """
    began = time.perf_counter()
    try:
        allocation, charges = attempt(policy, snapshot)
        return Decision(snapshot, allocation, charges, time.perf_counter() - began)
    except Exception as exc:  # any failure: look for the job behind it
        failure = exc
    log.error("the policy failed on this round's snapshot: %s", describe(failure))
    isolation = Isolation(policy, snapshot)
    blamed: dict[int, str] = {}
    pending = list(snapshot.pending)
    for _ in range(MAX_CULPRITS):
        found = isolation.culprit(pending)
        if found is None:
            break
        job, error = found
        blamed[job.id] = f"scheduling it fails ({describe(error)})"
        pending.remove(job)
        outcome = isolation.attempt(pending)
        if not isinstance(outcome, BaseException):
            allocation, charges = outcome
            seconds = time.perf_counter() - began
            return Decision(snapshot, allocation, charges, seconds, blamed)
    raise failure


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def attempt(policy: object, snapshot: Snapshot):
    allocation = policy.allocate(snapshot)
    validate_allocation(snapshot, allocation)
    return allocation, price(snapshot, allocation)


class Isolation:
    """Find a pending job the round fails on, by bisection, within a time budget.

    A job is blamed only if the round fails on it alone, not on no job at all,
    and not on a plain job of its org in its place (1 GPU, 1 hour, any type,
    no priority, no name): so a broken policy or platform blames nobody.
    """

    def __init__(self, policy: object, snapshot: Snapshot) -> None:
        self.policy = policy
        self.snapshot = snapshot
        self.give_up_at = time.monotonic() + ISOLATION_SECONDS

    def attempt(self, jobs: list[model.Job]):
        """The decision without the other pending jobs, or the exception it raised."""
        if time.monotonic() > self.give_up_at:
            return TimeoutError("no time left to isolate the failure")
        try:
            return attempt(self.policy, replace(self.snapshot, pending=tuple(jobs)))
        except Exception as exc:  # the failure being isolated, or another
            return exc

    def fails(self, jobs: list[model.Job]) -> BaseException | None:
        outcome = self.attempt(jobs)
        return outcome if isinstance(outcome, BaseException) else None

    def culprit(self, pending: list[model.Job]) -> tuple[model.Job, BaseException] | None:
        error = self.fails(pending)
        if error is None or isinstance(error, TimeoutError) or self.fails([]) is not None:
            return None
        jobs = pending
        while len(jobs) > 1:
            half = len(jobs) // 2
            for part in (jobs[:half], jobs[half:]):
                part_error = self.fails(part)
                if isinstance(part_error, TimeoutError):
                    return None
                if part_error is not None:
                    jobs, error = part, part_error
                    break
            else:
                return None  # only a combination of jobs fails: no one to blame
        plain = replace(jobs[0], gpus=1, hours=1.0, priority=0, gpu_types=(), name="")
        if self.fails([plain]) is not None:
            return None
        return jobs[0], error


def price(snapshot: Snapshot, allocation: Allocation) -> dict[int, model.Charge]:
    """The policy's charge per started job; a quote from the snapshot's pricing for the rest."""
    from gpupool.accounting import BudgetTracker

    tracker = None
    jobs = {j.id: j for j in snapshot.pending}
    charges = {}
    for placement in allocation.placements:
        charge = allocation.charges.get(placement.job_id)
        if charge is None:
            tracker = tracker or BudgetTracker(snapshot)
            pool = snapshot.pool_state(placement.pool).pool
            charge = tracker.quote(jobs[placement.job_id], pool)
        charges[placement.job_id] = charge
    return charges

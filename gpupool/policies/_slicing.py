"""Time slicing for ``fair-share`` (its ``lease_minutes`` option): Gavel's lease rounds.

Every round computes each active job's *fluid share*: hierarchical weighted
max-min water-filling of the platform's effective capacity (GPUs x speed),
first among domains by weight, then equally among each domain's orgs, then
equally among each org's jobs; no one is given more than it can use (its gang
on the fastest type it allows, at its own speed: ``Job.speed_on``). Shares are
in effective GPUs, as in Gavel's max-min fairness, where a job's throughput
counts its gang size, so a 1-GPU job is not promised an 8-GPU job's share.

Which jobs run is then decided by Gavel's priority: fluid share divided by the
share the job actually received since it was submitted (effective GPU-hours
held in earlier runs, Snapshot.served, plus its current run, over its age).
A job never served comes first (infinite priority; among those, the larger
fluid share, then the earlier submission). So the jobs furthest behind their
fair share run next, and short jobs finish within their first leases.

Leases end on a global grid (every ``lease`` seconds since the epoch), as
Gavel's rounds do, so one round renews every lease at once. A running job can
lose its GPUs only

- in a *renewal round*: within the first tenth of a lease period after a grid
  point (the simulator wakes up exactly at grid points: Allocation.next_round_at;
  the live daemon's rounds fall into the window when its interval is shorter);
- if its run began at least half a lease before that grid point (every run
  keeps its GPUs for at least half a lease: a restart is not free);
- to a waiting job of strictly higher priority that cannot start in free GPUs
  (victims lowest priority first, in the pool that frees the fewest GPUs).

A running job that would be chosen again simply keeps its GPUs: no needless
migration. The one migration there is pays for itself: after the waiting jobs,
a due job whose gang fits in GPUs left free on a type at least MOVE_GAIN times
faster for it is stopped, and the next round restarts it there (without this a
long job preempted once may crawl on the slowest type to the end). Between
renewals, waiting jobs only fill free GPUs, in priority order, each on the
fastest type (for it) with room. The round asks for the next one at the next
grid point while jobs run and others wait, or a running job could move up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from gpupool.model import Job, RunningJob, Snapshot, fit_gang
from gpupool.policies._classes import PoolGroup, domain_weight
from gpupool.policies._packing import Packer, _PoolFree
from gpupool.policies.params import PolicyParams

MOVE_GAIN = 1.25  # a due job moves to a type at least this much faster for it, if one is free
RENEWAL_WINDOW = 0.1  # of a lease: how long after a grid point running jobs may be stopped
MIN_HOLD = 0.5  # of a lease: how long before a grid point a run must have begun to be stopped
_GRID_TOLERANCE = 1e-9  # a wake-up at k x lease computed in floats is still grid point k


def water_fill(caps: Sequence[float], weights: Sequence[float], capacity: float) -> list[float]:
    """Weighted max-min shares of ``capacity``: share i = min(cap i, level x weight i),
    the level as high as the capacity allows (every cap met if capacity is left)."""
    shares = [0.0] * len(caps)
    order = sorted(range(len(caps)), key=lambda i: caps[i] / weights[i])
    left, weight_left = capacity, sum(weights)
    for position, i in enumerate(order):
        level = left / weight_left if weight_left > 0 else 0.0
        if caps[i] <= level * weights[i]:
            shares[i] = caps[i]
            left -= caps[i]
            weight_left -= weights[i]
            continue
        for j in order[position:]:  # the rest are all held at the level
            shares[j] = level * weights[j]
        break
    return shares


def fluid_shares(
    snapshot: Snapshot, params: PolicyParams, jobs: Iterable[Job], cap: dict[int, float]
) -> dict[int, float]:
    """Each job's fluid share (effective GPUs): domains by weight, then orgs, then jobs."""
    tree: dict[str, dict[str, list[Job]]] = {}
    for job in jobs:
        tree.setdefault(job.domain, {}).setdefault(job.org, []).append(job)
    capacity = sum(s.pool.gpus * snapshot.gpu_types[s.pool.gpu_type].speed for s in snapshot.pools)
    domains = sorted(tree)
    domain_caps = [sum(cap[j.id] for org in tree[d].values() for j in org) for d in domains]
    weights = [max(1e-9, domain_weight(snapshot, params, d)) for d in domains]
    shares: dict[int, float] = {}
    for d, domain_share in zip(domains, water_fill(domain_caps, weights, capacity), strict=True):
        orgs = sorted(tree[d])
        org_caps = [sum(cap[j.id] for j in tree[d][o]) for o in orgs]
        for o, org_share in zip(orgs, water_fill(org_caps, [1.0] * len(orgs), domain_share),
                                strict=True):  # fmt: skip
            members = tree[d][o]
            job_shares = water_fill([cap[j.id] for j in members], [1.0] * len(members), org_share)
            shares.update(zip((j.id for j in members), job_shares, strict=True))
    return shares


def level_of(fluid: float, received: float, level_hours: float) -> int:
    """0 until a job received ``level_hours`` of its fluid share, then one more each
    time that doubles (Tiresias' discretised queues): lower levels run first."""
    service = received / max(fluid, 1e-9)
    if service < level_hours:
        return 0
    return 1 + math.floor(math.log2(service / level_hours))


def finish_time_rho(work, submitted_at, fluid, cap, received, isolated_share: float, now: float):
    """Finish-time fairness rho, per job (numpy arrays: one round's active jobs at
    once): (hours since submission + remaining effective GPU-hours at its fluid
    share) over (its effective GPU-hours, ``work``, at an isolated 1/N share of
    the cluster, no more than it can use, ``cap``). Above 1: behind."""
    shared = np.maximum(0.0, now - submitted_at) / 3600.0 + np.maximum(
        0.0, work - received
    ) / np.maximum(fluid, 1e-9)
    isolated = work / np.maximum(np.minimum(cap, isolated_share), 1e-9)
    return shared / np.maximum(isolated, 1e-9)


class Standing(NamedTuple):
    """Where one job stands against its fluid share (Gavel's priority, in levels).

    A named tuple rather than a dataclass: one is made per active job per round."""

    fluid: float  # effective GPUs
    received: float  # effective GPU-hours held so far, all runs
    level: int  # see level_of

    @classmethod
    def of(cls, fluid: float, received: float, level_hours: float) -> Standing:
        return cls(fluid, received, level_of(fluid, received, level_hours))

    @property
    def priority(self) -> float:
        """Gavel's priority: fluid share over service received (infinite before any)."""
        return math.inf if self.received <= 0 else self.fluid / self.received

    def key(self, job: Job) -> tuple:
        """Numbered criteria: 1. level, lowest first; 2. submitted earliest; 3. id."""
        return (self.level, job.submitted_at, job.id)


class LeaseRound:
    """One round of time slicing (see the module docstring)."""

    def __init__(self, snapshot: Snapshot, params: PolicyParams, lease_seconds: float) -> None:
        self.snapshot = snapshot
        self.lease = lease_seconds
        now = snapshot.now
        self.grid = math.floor(now / lease_seconds + _GRID_TOLERANCE) * lease_seconds
        self.renewal = now - self.grid < RENEWAL_WINDOW * lease_seconds
        self.next_round_at = self.grid + lease_seconds
        self.params = params

    def standings(
        self, groups: Sequence[PoolGroup], allowed, finish_time: bool = False
    ) -> dict[int, Standing]:
        snapshot = self.snapshot
        types = snapshot.gpu_types
        waiting = [job for job in snapshot.pending if allowed[job.id]]
        best = _BestSpeed(types, groups)
        cap = {}
        memo = best.memo
        for job in waiting:  # the memo looked up here: this loop runs for every waiting job
            speed = memo.get((allowed[job.id], id(job.speeds), None))
            if speed is None:
                speed = best.among(job, allowed[job.id])
            cap[job.id] = job.gpus * speed
        everywhere = tuple(g.index for g in groups)
        held: dict[int, float] = {}
        now = snapshot.now
        for run in snapshot.running:
            job = run.job
            speed = job.speed_on(types[snapshot.pool_state(run.placement.pool).pool.gpu_type])
            cap[job.id] = job.gpus * max(speed, best.among(job, everywhere, allows=True))
            held[job.id] = job.gpus * speed * max(0.0, now - run.started_at) / 3600.0
        jobs = waiting + [run.job for run in snapshot.running]
        fluid = fluid_shares(snapshot, self.params, jobs, cap)
        served = snapshot.served
        if finish_time:
            return self._finish_time(jobs, fluid, cap, held)
        level_hours = self.lease / 3600.0
        standings = {}
        for job in jobs:  # level_of inlined: this loop runs for every active job each round
            share = fluid[job.id]
            received = served.get(job.id, 0.0) + held.get(job.id, 0.0)
            service = received / max(share, 1e-9)
            level = 0 if service < level_hours else 1 + math.floor(math.log2(service / level_hours))
            standings[job.id] = Standing(share, received, level)
        return standings

    def _finish_time(self, jobs, fluid, cap, held) -> dict[int, Standing]:
        """Standings by finish-time fairness: level = -floor(log2 rho), so the job whose
        finish is furthest behind an isolated 1/N of the cluster comes first, and a
        factor of 2 in rho is one level (jobs within it do not preempt each other)."""
        snapshot = self.snapshot
        capacity = sum(
            s.pool.gpus * snapshot.gpu_types[s.pool.gpu_type].speed for s in snapshot.pools
        )
        isolated_share = capacity / max(1, len(jobs))
        received = [snapshot.served.get(j.id, 0.0) + held.get(j.id, 0.0) for j in jobs]
        rho = finish_time_rho(
            np.array([j.gpus * j.hours for j in jobs]),
            np.array([j.submitted_at for j in jobs]),
            np.array([fluid[j.id] for j in jobs]),
            np.array([cap[j.id] for j in jobs]),
            np.array(received),
            isolated_share,
            snapshot.now,
        )
        levels = (-np.floor(np.log2(np.maximum(1e-9, rho)))).astype(int).tolist()
        return {
            j.id: Standing(fluid[j.id], got, level)
            for j, got, level in zip(jobs, received, levels, strict=True)
        }

    def due(self, run: RunningJob) -> bool:
        """Whether a running job's lease is up for renewal in this round."""
        return self.renewal and run.started_at <= self.grid - MIN_HOLD * self.lease


class _BestSpeed:
    """A job's best speed over a set of groups, memoised per round by the set and the
    job's class speeds (most jobs share both), so each distinct case is worked out once."""

    def __init__(self, types, groups: Sequence[PoolGroup]) -> None:
        self.types = types
        self.groups = groups
        self.memo: dict[tuple, float] = {}

    def among(self, job: Job, indices: tuple[int, ...], allows: bool = False) -> float:
        """Max speed over ``indices`` (with ``allows``: those whose type the job allows;
        -inf when none, which max() with a running job's own speed then ignores)."""
        # id(): the speeds mapping lives as long as the job, i.e. through this round
        key = (indices, id(job.speeds), job.gpu_types if allows else None)
        found = self.memo.get(key)
        if found is None:
            speeds = [
                job.speed_on(self.types[self.groups[g].gpu_type])
                for g in indices
                if not allows or job.allows(self.groups[g].gpu_type)
            ]
            found = self.memo[key] = max(speeds, default=-math.inf)
        return found


class Victims:
    """Running jobs whose lease is up, per pool, lowest priority first."""

    def __init__(self, lease: LeaseRound, standings: dict[int, Standing], packer: Packer):
        self.packer = packer
        self._pool_type = {s.pool.name: s.pool.gpu_type for s in lease.snapshot.pools}
        self.by_pool: dict[str, list[tuple]] = {}
        for run in lease.snapshot.running:
            if lease.due(run):
                level = standings[run.job.id].level
                row = (-level, -run.job.submitted_at, -run.job.id, level, run)
                self.by_pool.setdefault(run.placement.pool, []).append(row)
        for rows in self.by_pool.values():
            rows.sort(key=lambda row: row[:3])
        self.preempted: list[int] = []
        self._top: int | None = None  # the highest level among them (None: to be found)

    def __bool__(self) -> bool:
        return any(self.by_pool.values())

    def below(self, level: int) -> bool:
        """Whether a job of ``level`` could still stop someone (a due job of a higher level)."""
        if self._top is None:
            self._top = max((rows[0][3] for rows in self.by_pool.values() if rows), default=-1)
        return self._top > level

    def make_room(self, job: Job, level: int, groups: Sequence[int]) -> bool:
        """Stop the fewest lower-priority due jobs that let ``job`` start in one of
        ``groups`` (the earliest listed on ties), and start it there."""
        options = []
        for rank, g in enumerate(groups):
            for member in self.packer.capacity.members[g]:
                victims = self._needed(job, level, member)
                if victims is not None:
                    freed = sum(r.job.gpus for r in victims)
                    options.append((freed, rank, member.pool.name, g, member, victims))
        options.sort(key=lambda option: option[:3])
        capacity = self.packer.capacity
        for _, _, pool, g, member, victims in options:
            for run in victims:
                capacity.give(member, g, run.placement.nodes)
            if self.packer.try_start_in(job, g, member):
                self.preempted.extend(run.job.id for run in victims)
                self.by_pool[pool] = [row for row in self.by_pool[pool] if row[4] not in victims]
                self._top = None
                return True
            for run in victims:  # its cap or budget refused this pool: undo
                capacity.take(member, g, run.placement.nodes)
        return False

    def _needed(self, job: Job, level: int, member: _PoolFree) -> list[RunningJob] | None:
        free = list(member.free)
        per_node = member.pool.gpus_per_node
        victims: list[RunningJob] = []
        for _, _, _, victim_level, run in self.by_pool.get(member.pool.name, ()):
            if victim_level <= level:  # never for a job of the same level or lower
                break
            victims.append(run)
            for node, gpus in run.placement.nodes:
                free[node] += gpus
            if fit_gang(free, job.gpus, per_node) is not None:
                return victims
        return None

    def move_up(self, groups: Sequence[PoolGroup], types) -> list[int]:
        """Stop due jobs that a type at least MOVE_GAIN times faster for them has room
        for (the room stays free for their restart); best level first."""
        rows = sorted(
            (row for rows in self.by_pool.values() for row in rows),
            key=lambda row: (row[3], -row[1], -row[2]),
        )
        capacity = self.packer.capacity
        moved = []
        for *_, run in rows:
            job = run.job
            here = job.speed_on(types[self._pool_type[run.placement.pool]])
            faster = [
                g
                for g in groups
                if job.allows(g.gpu_type) and job.speed_on(types[g.gpu_type]) >= MOVE_GAIN * here
            ]
            faster.sort(key=lambda g: (-job.speed_on(types[g.gpu_type]), g.index))
            for g in faster:
                found = capacity.find(job.gpus, g.index)
                if found is not None:
                    capacity.take(found[0], g.index, found[1])
                    moved.append(job.id)
                    break
        self.preempted.extend(moved)
        return moved


def could_move_up(snapshot: Snapshot, groups: Sequence[PoolGroup]) -> bool:
    """Whether some running job has a type at least MOVE_GAIN times faster for it."""
    types = snapshot.gpu_types
    pool_type = {s.pool.name: s.pool.gpu_type for s in snapshot.pools}
    for run in snapshot.running:
        job = run.job
        here = job.speed_on(types[pool_type[run.placement.pool]])
        if any(
            job.allows(g.gpu_type) and job.speed_on(types[g.gpu_type]) >= MOVE_GAIN * here
            for g in groups
        ):
            return True
    return False

"""Step 3's fallback: stop running jobs so that a waiting gang fits (with preemption on)."""

from __future__ import annotations

from typing import NamedTuple

from gpupool.model import Job, RunningJob, Snapshot, fit_gang
from gpupool.policies._classes import running_priority
from gpupool.policies._packing import Packer
from gpupool.policies.params import PolicyParams, Preemption


class Appraisal(NamedTuple):
    """A preemption's gain (priority gap x the preemptor's GPUs x hours it would wait)
    and cost (the victims' lost GPU-hours); it happens only when the gain is larger."""

    gain: float
    cost: float

    @property
    def worth_it(self) -> bool:
        return self.gain > self.cost

    def __str__(self) -> str:
        return f"gain {self.gain:.3g} > cost {self.cost:.3g} GPU-hours"


class Preemptor:
    """Step 3's fallback: stop lower-priority running jobs so that a waiting gang fits.

    A job may stop running jobs whose priority is at least ``min_gap`` (and
    always strictly) below its own, in the pool where that frees the fewest
    GPUs (victims lowest priority, most recently started first); if its cap
    or budget refuses that pool, the next pool, and nothing is stopped if none
    takes it. GPUs are handed back; the victims' domain cap headroom is not,
    this round (so caps stay a check that only gets harder as the round goes
    on). At most ``tries_left`` jobs (those that found victims to stop) try,
    highest priority first.

    Hysteresis (no thrashing by construction): a running job is never a victim
    before it has run ``min_run_minutes`` since its (re)start, nor once it was
    preempted ``max_per_job`` times; this holds for guarantee reclaim too. So
    a job is preempted at most ``max_per_job`` times, at least
    ``min_run_minutes`` apart. Which jobs are protected depends only on the
    running jobs, not on who asks: raising a job's priority still never stops
    it starting (policies-design.md).

    Gain over cost (docs/policy-documents.md, "Preemption"): a job preempts
    lower-priority victims only when its gain, (its priority - the highest
    victim's) x its GPUs x the hours until the last victim is expected to end
    (what it would otherwise wait), exceeds the victims' lost GPU-hours (work
    since their last checkpoint plus a restart each, ``Preemption.lost_gpu_hours``).
    Reclaiming a guarantee is owed, not weighed: hysteresis alone limits it.
    ``victim_why`` says, per victim, who stopped it and why.
    """

    def __init__(
        self, snapshot: Snapshot, params: PolicyParams, packer: Packer, prio, allowed, limits
    ):
        self.packer = packer
        self.prio = prio
        self.allowed = allowed
        self.gap = params.preemption.min_gap
        self.tries_left = 0
        self.guarantee: dict[str, float] = limits.guarantee
        self.gpu_type = {s.pool.name: snapshot.gpu_types[s.pool.gpu_type] for s in snapshot.pools}
        self.left_running = dict(limits.running)  # effective GPUs, less this round's victims
        self.victims: dict[str, list] = {}
        for r in snapshot.running:
            if _protected(r, snapshot.now, params.preemption):
                continue
            self.victims.setdefault(r.placement.pool, []).append(
                (running_priority(snapshot, params, r.job), -r.started_at, r.job.id, r)
            )
        for rows in self.victims.values():
            rows.sort(key=lambda row: row[:3])  # lowest priority, most recently started first
        self.rule = params.preemption
        self.now = snapshot.now
        self.running_prio = {
            r.job.id: running_priority(snapshot, params, r.job) for r in snapshot.running
        }
        self.preempted: list[int] = []
        self.victim_why: dict[int, str] = {}  # victim id -> who preempted it, and why
        self.last_pool, self.last_count = "", 0  # the latest start's pool and victim count
        self.last_appraisal: Appraisal | None = None  # the latest start's gain and cost

    def try_start(self, job: Job) -> bool:
        if self.tries_left <= 0:
            return False
        options = []
        for g in self.allowed[job.id]:
            for member in self.packer.capacity.members[g]:
                found = self._victims_for(job, member)
                if found is not None:
                    options.append((found[0], g, member.pool.name, member, found[1], found[2]))
        if not options:
            return False
        self.tries_left -= 1
        options.sort(key=lambda option: option[:3])
        capacity = self.packer.capacity
        for _, g, pool, member, victims, appraisal in options:
            for r in victims:
                capacity.give(member, g, r.placement.nodes)
            if self.packer.try_start_in(job, g, member):
                self.preempted.extend(r.job.id for r in victims)
                for r in victims:
                    self.left_running[r.job.domain] -= self._effective(r)
                self.last_pool, self.last_count = pool, len(victims)
                self.last_appraisal = appraisal
                self.victims[pool] = [row for row in self.victims[pool] if row[3] not in victims]
                self._explain_victims(job, victims, pool, appraisal)
                return True
            for r in victims:  # its cap or budget said no: put the victims back
                capacity.take(member, g, r.placement.nodes)
        return False

    def why(self, job: Job) -> str:
        """After a start by preemption: whom it stopped, and where."""
        victims = self.preempted[-self.last_count :]
        shown = ", ".join(map(str, victims))
        appraisal = self.last_appraisal
        worth = f" ({appraisal})" if appraisal is not None else " (reclaiming its guarantee)"
        return (
            f"no room elsewhere: preempted lower-priority job(s) {shown} on {self.last_pool}"
            + worth
        )

    def _explain_victims(self, job: Job, victims, pool: str, appraisal) -> None:
        mine = self.prio[job.id]
        worth = str(appraisal) if appraisal is not None else f"reclaiming {job.domain}'s guarantee"
        for r in victims:
            theirs = self.running_prio[r.job.id]
            self.victim_why[r.job.id] = (
                f"preempted by job {job.id} (priority {mine:g} over {theirs:g}) "
                f"to start on {pool}: {worth}"
            )

    def _victims_for(self, job: Job, member):
        """Fewest running jobs to stop in this pool so that the gang fits, or None.

        Victims: lowest priority first, those ``min_gap`` below the job; and,
        when the job reclaims its domain's guarantee, borrowers of any priority.
        """
        free = list(member.free)
        chosen, freed = [], 0
        reclaim = self._reclaims(job, member)
        left = dict(self.left_running) if reclaim else {}
        for rp, _, _, r in self.victims.get(member.pool.name, ()):
            if rp > self.prio[job.id] - self.gap or rp >= self.prio[job.id]:
                if not reclaim:
                    break
                if r.job.domain == job.domain or not self._borrows(r, left):
                    continue
                left[r.job.domain] -= self._effective(r)
            for index, taken in r.placement.nodes:
                free[index] += taken
            chosen.append(r)
            freed += r.placement.gpus
            if fit_gang(free, job.gpus, member.pool.gpus_per_node) is not None:
                if reclaim:
                    return freed, chosen, None
                appraisal = self._appraise(job, chosen)
                return (freed, chosen, appraisal) if appraisal.worth_it else None
        return None

    def _appraise(self, job: Job, victims) -> Appraisal:
        """The preemption's gain and cost, in priority-weighted and plain GPU-hours."""
        gap = self.prio[job.id] - max(self.running_prio[r.job.id] for r in victims)
        wait_hours = max(0.0, max(r.expected_end for r in victims) - self.now) / 3600.0
        cost = sum(
            self.rule.lost_gpu_hours(r.placement.gpus, self.now - r.started_at, r.preemptions > 0)
            for r in victims
        )
        return Appraisal(gap * job.gpus * wait_hours, cost)

    def _effective(self, r) -> float:
        return r.placement.gpus * r.job.speed_on(self.gpu_type[r.placement.pool])

    def _reclaims(self, job: Job, member) -> bool:
        """Whether ``job`` starting here stays within its domain's guarantee (Kueue's reclaim)."""
        guarantee = self.guarantee.get(job.domain)
        if guarantee is None:
            return False
        used = self.packer.borrowing.used.get(job.domain, 0.0)
        speed = job.speed_on(self.gpu_type[member.pool.name])
        return used + job.gpus * speed <= guarantee + 1e-9

    def _borrows(self, r, left: dict[str, float]) -> bool:
        """Whether running job ``r`` runs wholly beyond its domain's guarantee (a borrower)."""
        after = left.get(r.job.domain, 0.0) - self._effective(r)
        return after >= self.guarantee.get(r.job.domain, 0.0) - 1e-9


def _protected(r: RunningJob, now: float, rule: Preemption) -> bool:
    """Whether hysteresis keeps running job ``r`` from being a victim this round."""
    too_soon = now - r.started_at < rule.min_run_minutes * 60.0
    return too_soon or r.preemptions >= rule.max_per_job

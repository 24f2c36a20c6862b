"""Step 2 of a round: the plan LP's counts, turned into each job's order of groups to try."""

from __future__ import annotations

import dataclasses

import numpy as np

from gpupool.model import Job
from gpupool.policies._classes import JobClass
from gpupool.policies._packing import Packer
from gpupool.policies.priority.class_lp import ClassLp
from gpupool.policies.priority.money import Money


def promising(
    classes: list[JobClass], free: list[int], depth: float, money: Money
) -> list[JobClass]:
    """Classes among the top demand of ``depth`` x free GPUs of some group they allow.

    Classes far down a long queue cannot be in an optimal plan unless their
    groups are empty of better work, which this keeps them for. A budgeted
    org's classes count only the jobs its budget could pay for (at the lowest
    price), or a queue of unaffordable work would hide the work that can run.
    Re-indexed 0..n-1.
    """
    room = {g: depth * f for g, f in enumerate(free)}
    budget = dict(money.budget)
    kept = []
    for c in sorted(classes, key=lambda c: (-c.priority, c.index)):
        if not any(room[g] > 0 for g in c.groups):
            continue
        kept.append(c)
        count = len(c.jobs)
        if c.org:
            hours = np.array([sum(j.hours for j in c.jobs) / count])
            pay = money.cost_and_pay(c.org, c.domain, c.gpus, hours, np.array(c.groups), c.jobs[0])
            pay = pay[1]
            pay = float(pay.min())
            if pay > 0:
                count = min(count, budget[c.org] / pay)
                budget[c.org] -= count * pay
        for g in c.groups:
            room[g] -= c.gpus * count
    kept.sort(key=lambda c: c.index)
    return [dataclasses.replace(c, index=i) for i, c in enumerate(kept)]


class Plan:
    """The plan LP's counts, turned into each job's order of groups to try.

    Jobs prefer the fastest group (then the cheapest per effective GPU-hour)
    that has *room*: free GPUs not promised by the plan to classes that can
    only run on one GPU type. So a flexible job leaves the fast GPUs to work
    that can only use them, and otherwise high-priority work gets the fastest
    GPUs. (Measured: following every class's planned groups did worse, because
    the plan is valued at domain-level priorities only.) A job tries every
    allowed group in the end, so the order only decides where, never whether.

    Everything here changes only as jobs start, never with a job's own
    priority: the plan was made on domain-level values, and what is left of it
    depends only on the jobs started before.
    """

    @staticmethod
    def of(classes, groups, limits, packer: Packer, tiebreak, money: Money, glop="") -> Plan:
        """Solve the plan LP, unless no class is held to one GPU type.

        Only one-type classes' planned counts are read (the reservation); with
        none, the LP could not change where any job goes.
        """
        planned: list[dict[int, float]] = [{} for _ in classes]
        if any(len({groups[g].gpu_type for g in c.groups}) == 1 for c in classes):
            counts = [packer.capacity.node_counts(g.index) for g in groups]
            class_lp = ClassLp(classes, groups, limits, counts, tiebreak, money)
            class_lp.glop = glop  # the document's seed and time limit
            planned = class_lp.solve()
        return Plan(classes, groups, planned, packer)

    def __init__(self, classes, groups, planned: list[dict[int, float]], packer: Packer) -> None:
        self.packer = packer
        self.class_of = {job.id: c for c in classes for job in c.jobs}
        self.left = planned
        self.single = [len({groups[g].gpu_type for g in c.groups}) == 1 for c in classes]
        self.reserved = np.zeros(len(groups))  # GPUs planned for one-type classes, left
        for c in classes:
            if self.single[c.index]:
                for g, count in planned[c.index].items():
                    self.reserved[g] += count * c.gpus
        self.preference = {g.index: (-g.speed, g.price_per_effective_gpu_hour, g.index)
                           for g in groups}  # fmt: skip
        self.gpu_types = packer.gpu_types

    def _preference(self, job: Job, g: int) -> tuple:
        """1. fastest for ``job`` (its class's speed: Job.speed_on); 2. cheapest per
        effective GPU-hour of it; 3. index. Jobs without a class: the groups' own."""
        if not job.speeds:
            return self.preference[g]
        group = self.packer.groups[g]
        speed = job.speed_on(self.gpu_types[group.gpu_type])
        return (-speed, group.price_per_effective_gpu_hour * group.speed / speed, g)

    def candidates(self, job: Job, allowed: tuple[int, ...]) -> list[int]:
        """Groups with room first, fastest first; then the other groups that fit; then the rest."""
        capacity = self.packer.capacity
        fitting = [g for g in allowed if capacity.could_fit(job.gpus, g)]
        if not fitting:
            return list(allowed)  # the packer rejects it and says why
        c = self.class_of.get(job.id)
        own = self.left[c.index] if c is not None and self.single[c.index] else {}

        def rank(g: int) -> tuple:
            room = capacity.free_gpus(g) - self.reserved[g] + own.get(g, 0.0) * job.gpus
            return (0 if room >= job.gpus else 1, self._preference(job, g))

        ordered = sorted(fitting, key=rank)
        return ordered + [g for g in allowed if g not in ordered]

    def why(self, job: Job, g: int, allowed: tuple[int, ...], tried: list[int]) -> str:
        """Why ``job`` went to group ``g``, told from the groups it prefers but did not take.

        Called right after the start, before ``took``: only ``g`` changed, so for
        every preferred group (faster, or as fast and cheaper) what ``candidates``
        saw still holds. A preferred group tried before ``g`` refused it (domain
        cap or org budget); one that could fit but came after ``g`` had no room
        beyond the plan's reservation for one-type jobs (the LP's doing); else it
        was full. Groups of the chosen type (other node sizes) are not told.
        """
        capacity, groups = self.packer.capacity, self.packer.groups
        chosen = groups[g]
        if len(allowed) == 1:
            return f"the only GPU type it can use here: {chosen.gpu_type}"
        before = set(tried[: tried.index(g)])
        causes: dict[str, str] = {}
        rank = self._preference(job, g)
        for other in allowed:
            if self._preference(job, other) >= rank or groups[other].gpu_type == chosen.gpu_type:
                continue  # not preferred to g (or the same type): nothing to explain
            if other in before:
                cause = "refused by its domain cap or org budget"
            elif capacity.could_fit(job.gpus, other):
                cause = "kept by the LP plan for jobs that can only run there"
            else:
                cause = "full"
            causes.setdefault(groups[other].gpu_type, cause)
        if not causes:
            return f"fastest GPU type it allows: {chosen.gpu_type}"
        lead = "fastest GPU type that took it"
        if any(cause.startswith("kept") for cause in causes.values()):
            lead = "LP-guided placement"
        passed = ", ".join(f"{name} {cause}" for name, cause in causes.items())
        return f"{lead}: {chosen.gpu_type} ({passed})"

    def took(self, job: Job, g: int) -> None:
        c = self.class_of.get(job.id)
        if c is None:
            return
        left = self.left[c.index].get(g, 0.0)
        if left > 0:
            used = min(1.0, left)
            self.left[c.index][g] = left - used
            if self.single[c.index]:
                self.reserved[g] -= used * c.gpus

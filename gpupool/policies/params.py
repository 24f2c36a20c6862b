"""Settings every policy kind shares, as written by admins in a policy document.

A policy document (gpupool.policies.document) parses into a PolicyParams plus
the kind-specific options of one policy class; ``build()`` there returns the
Policy object. Policies receive these already validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpupool.accounting import SubsidyRules
from gpupool.model import GpupoolError


@dataclass(frozen=True, slots=True)
class DomainShare:
    """A domain's guaranteed share and how far it may borrow beyond it.

    Exactly one of ``gpus`` (GPUs per GPU type) or ``fraction`` (of all the
    platform's GPUs, counted in effective terms) is set. ``borrow_limit`` is
    the most a domain may use beyond its guarantee from others' idle
    guarantees, as a fraction of the platform (None = unlimited, 0 = none).
    """

    gpus: Mapping[str, int] | None = None
    fraction: float | None = None
    borrow_limit: float | None = None


@dataclass(frozen=True, slots=True)
class Aging:
    """Priority added per hour a job has waited, up to ``max_boost``."""

    per_hour: float = 0.0
    max_boost: float = 0.0


@dataclass(frozen=True, slots=True)
class Preemption:
    """Pending jobs may preempt running ones whose priority is ``min_gap`` or more lower.

    Hysteresis, so that preemption cannot thrash: a job that has run less than
    ``min_run_minutes`` since it (re)started, or that was already preempted
    ``max_per_job`` times, is never a victim; and a victim's priority is always
    strictly below the job's, whatever ``min_gap`` says.

    What a preemption costs (docs/policy-documents.md, "Preemption"): a
    preempted job restarts from its last checkpoint, taken every
    ``checkpoint_minutes`` of progress (0: it loses nothing), and its restart
    takes ``restart_minutes`` on its GPUs before progress resumes. Its lost
    GPU-hours are its GPUs x (work since its last checkpoint + the restart).
    A preemption happens only when its gain (priority gap x the preemptor's
    GPUs x the hours it would otherwise wait) exceeds that cost; a free one
    (both 0) needs only a gain above 0. The simulator runs the site the same way.
    """

    enabled: bool = False
    min_gap: float = 1.0
    min_run_minutes: float = 60.0
    max_per_job: int = 1
    restart_minutes: float = 0.0
    checkpoint_minutes: float = 0.0

    @property
    def restart_seconds(self) -> float:
        return self.restart_minutes * 60.0

    def progress_seconds(self, run_seconds: float, restarted: bool) -> float:
        """Seconds of progress in a run of ``run_seconds``: a restart's restore comes first."""
        return max(0.0, run_seconds - (self.restart_seconds if restarted else 0.0))

    def unsaved_seconds(self, progress_seconds: float) -> float:
        """Seconds of a run's progress since its last checkpoint (what a preemption loses)."""
        every = self.checkpoint_minutes * 60.0
        if every <= 0:
            return 0.0
        return progress_seconds % every

    def lost_gpu_hours(self, gpus: int, run_seconds: float, restarted: bool) -> float:
        """GPU-hours a preemption after ``run_seconds`` of this run costs: the work since
        the last checkpoint now, plus the restart the job will need."""
        unsaved = self.unsaved_seconds(self.progress_seconds(run_seconds, restarted))
        return gpus * (unsaved + self.restart_seconds) / 3600.0


POOL_ORDERS = ("value", "name", "cheapest")


@dataclass(frozen=True, slots=True)
class PoolPlacement:
    """The order in which the baselines (fifo, multifactor) try a job's allowed pools.

    ``value`` (the default): most effective GPU-hours per unit of price for the
    job's org first, i.e. least paid per effective GPU-hour (price / speed,
    after the subsidy it can get as the round starts), ties by name; pools the
    org gets free (no prices, or wholly subsidised) fastest first.
    ``name``: by pool name. ``cheapest``: by what the job's org pays per
    effective GPU-hour on the pool after subsidies (vouchers and programmes
    included), ties by name; so a subsidy scheme can steer work, not only
    decide whether an org can pay.
    """

    pool_order: str = "value"  # one of POOL_ORDERS

    def __post_init__(self) -> None:
        if self.pool_order not in POOL_ORDERS:  # else a typo would silently mean "name"
            raise GpupoolError(
                f"pool_order must be one of {', '.join(POOL_ORDERS)}, not {self.pool_order!r}",
                location="placement.pool_order",
            )


@dataclass(frozen=True, slots=True)
class PolicyParams:
    domain_weights: Mapping[str, float] = field(default_factory=dict)  # missing domain: 1.0
    shares: Mapping[str, DomainShare] = field(default_factory=dict)
    aging: Aging = Aging()
    preemption: Preemption = Preemption()
    subsidy: SubsidyRules = SubsidyRules()
    seed: int = 0  # the LP solver's random seed (GLOP random_seed = seed + 1)
    time_limit_s: float = 5.0  # bound on LP solver time per round
    placement: PoolPlacement = PoolPlacement()  # read by fifo and multifactor only

    def weight(self, domain: str) -> float:
        return self.domain_weights.get(domain, 1.0)

    def glop_parameters(self, seconds_left: float | None = None) -> str:
        """GLOP's parameters (protobuf text) for one solve, read by the optimising kinds
        (fair-share, priority) through ``SetSolverSpecificParametersAsString`` /
        ``set_solver_specific_parameters``: ``seed`` fixes the solver's randomised
        choices, and the solve stops after ``seconds_left`` (default ``time_limit_s``);
        a stopped solve has no solution, and the policy goes on without its plan."""
        seconds = self.time_limit_s if seconds_left is None else max(seconds_left, 1e-9)
        # seed + 1 (wrapping within GLOP's int32): the default seed 0 keeps GLOP's own
        # default of 1, so documents written before the seed was read decide as before
        glop_seed = (self.seed + 1) % 2**31
        return f"random_seed: {glop_seed} max_time_in_seconds: {seconds!r}"

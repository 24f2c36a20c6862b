"""The contract between a site agent and the workload manager that runs its jobs.

An executor launches one run of a job (a start placed on the site's pools), tells
what became of every run it launched, and stops runs on preemption or cancellation.
It keeps no state the agent must remember: ``states()`` reads what is running and
what ended from the workload manager itself (a local state directory, Slurm's
``squeue``/``sacct``), so an agent restarted mid-flight reconciles by asking it.
Every run carries its ``RunKey`` into the workload manager (a file name, a Slurm
job name), which is how a restarted agent launches nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from gpupool.model import GpupoolError


@dataclass(frozen=True, slots=True, order=True)
class RunKey:
    """One run of one job: a preempted job that starts again is a new run."""

    job_id: int
    run_id: int  # the placement's id on the server

    @property
    def tag(self) -> str:
        """The name a workload manager knows this run by."""
        return f"gpupool-{self.job_id}-{self.run_id}"


@dataclass(frozen=True, slots=True)
class Payload:
    """What to run: an argv, or a script's text run by ``/bin/sh``."""

    argv: tuple[str, ...] = ()
    script: str | None = None
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    stdout: str | None = None
    stderr: str | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """A start the server placed on this site, as the executor needs it."""

    key: RunKey
    pool: str
    gpu_type: str
    vendor: str  # picks the visible-devices variable (CUDA_ / ASCEND_RT_)
    nodes: tuple[tuple[int, tuple[int, ...]], ...]  # (node index, GPU indices on it)
    time_limit_s: float  # estimate on this type plus the grace; enforced by the executor
    payload: Payload


class RunPhase(StrEnum):
    QUEUED = "queued"  # the workload manager holds it but has not started it: not reported
    RUNNING = "running"
    ENDED = "ended"  # exit code 0
    FAILED = "failed"  # non-zero exit, killed at its time limit, or the launch failed


@dataclass(frozen=True, slots=True)
class RunState:
    key: RunKey
    phase: RunPhase
    started_at: float  # epoch seconds, as the workload manager saw them
    ended_at: float | None = None
    exit_code: int | None = None
    detail: str = ""  # one line: "killed at its time limit", "sbatch: invalid partition"


class ExecutorUnavailable(GpupoolError):
    """The workload manager did not answer (a command missing or timed out): nothing is
    known to have changed, and the agent tries again at its next step."""


class Executor(Protocol):
    """One-method-per-verb interface (Blox style); implementations: local, slurm."""

    name: str

    def launch(self, launch: Launch) -> None:
        """Start the run; a second call for a key already known does nothing."""

    def states(self, keys: Sequence[RunKey] | None = None) -> list[RunState]:
        """What became of the runs launched here (all of them when ``keys`` is None)."""

    def stop(self, key: RunKey, reason: str) -> None:
        """Stop a run (preemption, cancellation); stopping an ended run does nothing."""

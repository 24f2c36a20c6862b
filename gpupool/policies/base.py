"""The one interface every policy implements, live and in simulation."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gpupool.model import Allocation, Snapshot


@runtime_checkable
class Policy(Protocol):
    """Decide which pending jobs start on which pools this round.

    ``allocate`` must be deterministic for a given snapshot (and the seed the
    policy was built with), must not mutate the snapshot, and must return a
    WaitReason for every pending job it does not start.
    """

    def allocate(self, snapshot: Snapshot) -> Allocation: ...

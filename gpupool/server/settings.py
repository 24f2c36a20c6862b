"""What one server process is configured with (from `gpupool serve`'s options)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """``database_url`` None means the default SQLite file (gpupool.db)."""

    database_url: str | None = None
    max_body_bytes: int = 1 * MIB  # a batch of ~20,000 CSV rows; more is refused with 413
    # Failed authentications allowed per window before 429, per client address and per
    # token prefix (in this process; each worker counts its own).
    failures_per_address: int = 20
    failures_per_prefix: int = 5
    failure_window_seconds: float = 60.0
    limiter_max_keys: int = 10_000  # addresses (and prefixes) remembered at once
    # Route handlers run in a thread pool of this many threads per worker process, and
    # the worker keeps as many database connections open (plus 4 for spikes): a
    # PostgreSQL server must allow (threads + 4) x workers connections for `serve`.
    threads: int = 16
    # Who may read /metrics: it shows every domain's queue and every programme's spend.
    metrics_roles: tuple[str, ...] = ("admin", "auditor")

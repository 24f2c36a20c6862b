"""Prometheus metrics at /metrics.

Kept by each process:
- ``gpupool_http_request_duration_seconds{method,route,status}``: a histogram of
  request latency, labelled by route template (a bounded set).

Read from the database on each scrape (a few aggregate queries, no row loads
beyond pools), so every worker reports the same platform-wide values:
- ``gpupool_rounds_total``: scheduling rounds run (dry runs excluded);
- ``gpupool_pending_jobs{domain}``: jobs waiting, per domain;
- ``gpupool_free_gpus{pool,site,gpu_type}``: GPUs not held by a running job;
- ``gpupool_subsidy_spent{programme}``: subsidy paid from the ledger, per programme;
- ``gpupool_database_up``: 1 when those queries succeeded.

With several workers (``gpupool serve --workers N``) prometheus_client's
multiprocess mode sums the histogram over the workers (PROMETHEUS_MULTIPROC_DIR,
set by `gpupool serve`).
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Engine, func, select

log = logging.getLogger("gpupool.server")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The registry and the request histogram of one app."""

    def __init__(self, engine: Engine) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry()
        multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if multiprocess:
            from prometheus_client import multiprocess as mp

            mp.MultiProcessCollector(self.registry)
        self.latency = Histogram(
            "gpupool_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=None if multiprocess else self.registry,
        )
        self.registry.register(PlatformCollector(engine))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class PlatformCollector:
    """Gauges computed from the database at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self):
        return []  # values come from the database; nothing to check at registration

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("gpupool_database_up", "1 if the platform gauges could be read.")
        try:
            figures = platform_figures(self.engine)
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: database unavailable: %s", str(exc).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        rounds = CounterMetricFamily("gpupool_rounds", "Scheduling rounds run (not dry runs).")
        rounds.add_metric([], figures["rounds"])
        yield rounds
        pending = GaugeMetricFamily(
            "gpupool_pending_jobs", "Jobs waiting to start, per domain.", labels=["domain"]
        )
        for domain, count in figures["pending"].items():
            pending.add_metric([domain], count)
        yield pending
        free = GaugeMetricFamily(
            "gpupool_free_gpus",
            "GPUs not held by a running job.",
            labels=["pool", "site", "gpu_type"],
        )
        for pool in figures["pools"]:
            free.add_metric([pool["name"], pool["site"], pool["gpu_type"]], pool["free_gpus"])
        yield free
        spent = GaugeMetricFamily(
            "gpupool_subsidy_spent", "Subsidy paid so far, per programme.", labels=["programme"]
        )
        for programme, amount in figures["subsidy"].items():
            spent.add_metric([programme], amount)
        yield spent


def platform_figures(engine: Engine) -> dict:
    """Rounds run, pending jobs per domain, pools with free GPUs, subsidy per programme."""
    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.orm import (
        DomainRow,
        JobRow,
        LedgerEntryRow,
        OrgRow,
        ProgrammeRow,
        SchedulerRoundRow,
    )
    from gpupool.scheduler.service import pool_views

    with unit_of_work(engine) as session:
        rounds = session.scalar(
            select(func.count())
            .select_from(SchedulerRoundRow)
            .where(SchedulerRoundRow.dry_run.is_(False))
        )
        pending = dict(
            session.execute(
                select(DomainRow.name, func.count(JobRow.id))
                .join(OrgRow, OrgRow.domain_id == DomainRow.id)
                .join(JobRow, JobRow.org_id == OrgRow.id)
                .where(JobRow.state == "pending")
                .group_by(DomainRow.name)
            ).all()
        )
        for (name,) in session.execute(select(DomainRow.name)):
            pending.setdefault(name, 0)
        subsidy = dict(
            session.execute(
                select(ProgrammeRow.name, func.coalesce(func.sum(LedgerEntryRow.subsidy), 0))
                .outerjoin(LedgerEntryRow, LedgerEntryRow.programme_id == ProgrammeRow.id)
                .group_by(ProgrammeRow.name)
            ).all()
        )
        pools = pool_views(session)
    return {
        "rounds": int(rounds or 0),
        "pending": pending,
        "pools": pools,
        "subsidy": {name: float(amount) for name, amount in subsidy.items()},
    }

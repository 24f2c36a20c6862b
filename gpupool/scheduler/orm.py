"""The whole platform's relational schema (SQLAlchemy 2.0 declarative).

One table per concept of gpupool.model plus the operational history the
scheduler keeps: placements (never deleted), scheduling rounds, the
append-only ledger, policy versions, the audit log, subsidy programmes and
vouchers. Columns later issues fill in are nullable or defaulted.

Conventions, the same in every table:
- instants are ``UtcDateTime``: stored as naive UTC, always returned as
  timezone-aware UTC datetimes (SQLite has no time zones; this keeps SQLite and
  PostgreSQL identical). gpupool.scheduler.clock converts to/from epoch floats.
- money is ``Money`` = NUMERIC(14, 2) read back as float: the model computes in
  floats, the service rounds to cents (clock.cents) before writing, so SQLite
  (which does not enforce the scale) and PostgreSQL store the same figures.
- effective GPU-hours and voucher amounts are plain floats.
- constraint names follow NAMING_CONVENTION so migrations can name them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(14, 2, asdecimal=False)


class UtcDateTime(TypeDecorator):
    """Naive UTC in the database, aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class GpuTypeRow(Base):
    __tablename__ = "gpu_types"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vendor: Mapped[str] = mapped_column(String(64))
    memory_gb: Mapped[int] = mapped_column(Integer)
    speed: Mapped[float] = mapped_column(Float, default=1.0)
    domestic: Mapped[bool] = mapped_column(Boolean, default=False)


class JobClassRow(Base):
    """A job class (gpupool.model.JobClass): its speed on each GPU type, by type name."""

    __tablename__ = "job_classes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    speeds: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)


class PoolRow(Base):
    __tablename__ = "pools"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site: Mapped[str] = mapped_column(String(64))
    gpu_type_id: Mapped[int] = mapped_column(ForeignKey("gpu_types.id"))
    gpus: Mapped[int] = mapped_column(Integer)
    gpus_per_node: Mapped[int] = mapped_column(Integer)
    price_per_gpu_hour: Mapped[float] = mapped_column(Money)
    gpu_type: Mapped[GpuTypeRow] = relationship(lazy="joined")


class DomainRow(Base):
    __tablename__ = "domains"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)


class OrgRow(Base):
    __tablename__ = "orgs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"))
    budget: Mapped[float | None] = mapped_column(Money, nullable=True)  # per period; None = no cap
    domain: Mapped[DomainRow] = relationship(lazy="joined")


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # 'admin' | 'submitter' | 'agent' | 'auditor' (gpupool.scheduler.permissions)
    role: Mapped[str] = mapped_column(String(16), default="submitter")
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"), nullable=True)
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)  # an agent's site
    org: Mapped[OrgRow | None] = relationship(lazy="joined")


class ApiTokenRow(Base):
    """An API token (gpupool.scheduler.tokens): never the secret, only its slow hash.

    ``token_id`` is the public part of ``gpt_<token_id>_<secret>``: safe to log,
    to show in `token list` and to rate-limit on.
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(256))  # scrypt$n=..,r=..,p=..$salt$hash
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: all the role allows
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    user: Mapped[UserRow] = relationship(lazy="joined")


class JobRow(Base):
    __tablename__ = "jobs"
    # an idempotency key is an organisation's own: another org may use the same one
    __table_args__ = (UniqueConstraint("org_id", "submit_key", name="uq_jobs_org_id_submit_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    gpus: Mapped[int] = mapped_column(Integer)
    hours: Mapped[float] = mapped_column(Float)
    gpu_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: any type
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), index=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id"), nullable=True)
    wait_reason: Mapped[str | None] = mapped_column(String(128), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(256), nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(128), default="")
    # Client-chosen (or generated) idempotency key, unique per organisation: a
    # retried submission with the same key finds the existing job instead of
    # writing a second one.
    submit_key: Mapped[str] = mapped_column(String(128))
    # what to run (gpupool.scheduler.payloads): argv or script, workdir, env, image,
    # stdout/stderr; None for a job that only books GPUs (sites run it by hand)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the job's class by name (job_classes.name); None: no class, each type's own speed
    job_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    org: Mapped[OrgRow] = relationship(lazy="joined")
    pool: Mapped[PoolRow | None] = relationship(lazy="joined")


class SchedulerRoundRow(Base):
    __tablename__ = "scheduler_rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: FIFO default
    started_jobs: Mapped[int] = mapped_column(Integer, default=0)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)


class PlacementRow(Base):
    """Where a job ran; one row per start, never deleted (ended_at closes it)."""

    __tablename__ = "placements"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"))
    nodes: Mapped[list[list[int]]] = mapped_column(JSON)  # [[node index, gpus], ...]
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("scheduler_rounds.id"), nullable=True)
    # why the policy chose this pool (Allocation.why); None for placements made
    # before migration 0002 or by a policy that gives no reason
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # why the run stopped early: who preempted it and why (Allocation.preempt_why);
    # None for a run that ended otherwise, or before migration 0005
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the site's agent reported (gpupool.scheduler.sites): the GPU indices
    # given to the run, [[node index, [GPU index, ...]], ...], chosen when the agent
    # first pulls the start; the real start; its exit code and a one-line detail.
    devices: Mapped[list | None] = mapped_column(JSON, nullable=True)
    run_started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    run_detail: Mapped[str | None] = mapped_column(String(256), nullable=True)
    pool: Mapped[PoolRow] = relationship(lazy="joined")


class SiteRow(Base):
    """A site whose agent has called in: when it was last heard from.

    Sites without a row (no agent yet; their ends are reported by `job finish`)
    are never marked unreachable.
    """

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    agent: Mapped[str] = mapped_column(String(128))


class ProgrammeRow(Base):
    __tablename__ = "programmes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    period_start: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    period_end: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    budget: Mapped[float | None] = mapped_column(Money, nullable=True)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class VoucherRow(Base):
    """Effective GPU-hours awarded to an org under a programme."""

    __tablename__ = "vouchers"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    programme_id: Mapped[int | None] = mapped_column(ForeignKey("programmes.id"), nullable=True)
    amount: Mapped[float] = mapped_column(Float)
    balance: Mapped[float] = mapped_column(Float)
    awarded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class LedgerEntryRow(Base):
    """Append-only money and usage record; corrections are new rows, never updates."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    domain: Mapped[str] = mapped_column(String(64))  # denormalised: history survives org moves
    gpu_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    period: Mapped[str] = mapped_column(String(16), index=True)  # '2026-Q4'
    kind: Mapped[str] = mapped_column(String(16))  # charge|correction|award|expiry|carry_over
    cost: Mapped[float] = mapped_column(Money, default=0.0)
    subsidy: Mapped[float] = mapped_column(Money, default=0.0)
    org_pays: Mapped[float] = mapped_column(Money, default=0.0)
    effective_gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    programme_id: Mapped[int | None] = mapped_column(ForeignKey("programmes.id"), nullable=True)
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("vouchers.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    note: Mapped[str] = mapped_column(Text, default="")
    # the pool a charge was for (where the usage happened); None for voucher
    # entries and for charges written before migration 0003
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id"), nullable=True)


class PolicyVersionRow(Base):
    __tablename__ = "policy_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    applied_by: Mapped[str] = mapped_column(String(128))
    applied_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")


class AuditLogRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))  # e.g. 'pool.add', 'job.cancel'
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")  # 'ok' | 'denied'

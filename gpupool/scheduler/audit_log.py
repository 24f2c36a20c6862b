"""Reading the audit log: `gpupool audit list` and GET /api/v1/audit (admins, auditors).

Rows are only ever added (gpupool.scheduler.permissions.audit); this module
reads them, newest last, filtered by actor, time and outcome.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool.model import GpupoolError
from gpupool.scheduler import clock, permissions
from gpupool.scheduler.orm import AuditLogRow

READERS = ("admin", "auditor")
MAX_ROWS = 10_000


def list_entries(
    session: Session,
    actor: str,
    who: str | None = None,
    since: dt.datetime | None = None,
    outcome: str | None = None,
    limit: int = 1000,
) -> list[dict]:
    """The newest ``limit`` entries matching the filters, oldest first."""
    _require_reader(session, actor)
    if outcome is not None and outcome not in ("ok", "denied"):
        raise GpupoolError(f"must be ok or denied, got {outcome!r}", location="--outcome")
    if not 1 <= limit <= MAX_ROWS:
        raise GpupoolError(f"must be between 1 and {MAX_ROWS}, got {limit}", location="--limit")
    query = select(AuditLogRow).order_by(AuditLogRow.id.desc()).limit(limit)
    if who is not None:
        query = query.where(AuditLogRow.actor == who)
    if since is not None:
        query = query.where(AuditLogRow.at >= since)
    if outcome is not None:
        query = query.where(AuditLogRow.outcome == outcome)
    rows = list(session.scalars(query))
    return [entry_view(r) for r in reversed(rows)]


def _require_reader(session: Session, actor: str) -> None:
    role = permissions.role_of(session, actor)
    if role not in READERS:
        raise permissions.Denied(
            f"{actor} may not read the audit log: {' and '.join(READERS)}s only",
            actor,
            "read the audit log",
            "audit log",
        )


def entry_view(row: AuditLogRow) -> dict:
    return {
        "id": row.id,
        "at": clock.iso(row.at),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "before": row.before,
        "after": row.after,
    }

"""Policy versions in the database: apply, show, history, diff, rollback.

Design:
- Every applied document is a new ``policy_versions`` row numbered 1, 2, 3...
  Exactly one row is active; the scheduler's rounds build their policy from it
  (gpupool.scheduler.rounds.active_policy) and FIFO runs when none exists.
- History is append-only: a rollback does not reactivate the old row, it
  writes a NEW version whose text is copied from the old one, so "which
  policy was active when" is always answered by the rows in version order.
- The stored text is the document exactly as the admin wrote it (comments
  included); diffs compare the normalised form (PolicyDocument.to_dict, every
  default filled in) so reformatting a file is not reported as a change.
- A document naming a GPU type or domain the platform lacks is refused
  (check_platform_names), so a guarantee or a rate never silently misses.
- Every change is admin-only (service.require_admin, the single permission
  check; a refusal is audited by the unit of work in its own transaction) and
  writes an audit_log row whose ``before`` is the previously active
  version and ``after`` the new one, in the caller's one transaction: an
  invalid document or a refused actor leaves nothing written.
- Applying serialises on a lock (PostgreSQL advisory lock; SQLite's write lock
  taken before the version number is read) so two admins applying at the same
  moment get versions n and n+1, never a duplicate.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass

import yaml
from sqlalchemy import false, select, text, update
from sqlalchemy.orm import Session

from gpupool import limits
from gpupool.model import GpupoolError, NotFound
from gpupool.scheduler import clock, repository, service
from gpupool.scheduler.locking import KEYS
from gpupool.scheduler.orm import PolicyVersionRow

POLICY_LOCK_KEY = 0x6770_706F  # "gppo": serialises policy changes on PostgreSQL


# ---------------------------------------------------------------------------
# Changes (admin-only, audited)
# ---------------------------------------------------------------------------


def apply_policy(
    session: Session,
    actor: str,
    document,
    comment: str = "",
    now: dt.datetime | None = None,
) -> PolicyVersionRow:
    """Store a parsed PolicyDocument as a new version and make it active."""
    service.require_admin(session, actor, "apply policies", "policy")
    comment = _comment(comment)
    check_platform_names(session, document)
    return _activate(session, actor, document.kind, document.text, comment, now, "policy.apply")


def apply_policy_text(
    session: Session, actor: str, text_: str, source: str, comment: str = "", now=None
) -> PolicyVersionRow:
    """Parse ``text_`` (errors name ``source``:line) and apply it."""
    from gpupool.policies.document import parse_policy_text

    return apply_policy(session, actor, parse_policy_text(text_, source=source), comment, now)


def rollback_policy(
    session: Session,
    actor: str,
    version: int,
    comment: str = "",
    now: dt.datetime | None = None,
) -> PolicyVersionRow:
    """Make ``version``'s document active again, as a new version copying its text."""
    service.require_admin(session, actor, "roll back policies", f"policy v{version}")
    comment = _comment(comment)
    old = get_version(session, version)
    active = repository.active_policy_row(session)
    if active is not None and active.version == old.version:
        raise GpupoolError(f"v{old.version} is already the active policy", location="VERSION")
    document = parse_stored(old)  # a version the current code can no longer read stays dead
    check_platform_names(session, document)  # the platform may have changed since
    note = f"rollback to v{old.version}" + (f": {comment}" if comment else "")
    return _activate(session, actor, document.kind, old.document, note, now, "policy.rollback")


def check_platform_names(session: Session, document) -> None:
    """Refuse a document naming a GPU type or domain this platform lacks (every such
    name at its file:line, as a PolicyDocumentError)."""
    from gpupool.policies.document import check_names

    gpu_types = [row.name for row in repository.list_gpu_types(session)]
    domains = [row.name for row in repository.list_domains(session)]
    check_names(document, gpu_types, domains)


def _comment(comment: str | None) -> str:
    """Printable one-line text of bounded length (gpupool.limits), possibly empty."""
    return limits.check_text(comment or "", "--comment", limits.COMMENT, allow_empty=True)


def _activate(session, actor, kind, document_text, comment, now, action) -> PolicyVersionRow:
    _lock(session)
    previous = repository.active_policy_row(session)
    session.execute(
        update(PolicyVersionRow).where(PolicyVersionRow.active.is_(True)).values(active=False)
    )
    number = (
        session.scalar(
            select(PolicyVersionRow.version).order_by(PolicyVersionRow.version.desc()).limit(1)
        )
        or 0
    ) + 1
    row = PolicyVersionRow(
        version=number,
        kind=kind,
        document=document_text,
        applied_by=actor,
        applied_at=now or clock.utcnow(),
        active=True,
        comment=(comment or "").strip(),
    )
    session.add(row)
    session.flush()
    service.audit(
        session,
        actor,
        action,
        f"policy v{number}",
        before=None if previous is None else _audit_view(previous),
        after=_audit_view(row),
    )
    session.flush()
    return row


def _lock(session: Session) -> None:
    """Hold the policy-change lock until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT pg_advisory_xact_lock{KEYS}"), {"key": POLICY_LOCK_KEY})
    else:
        # A write statement (matching nothing) begins SQLite's write transaction
        # now, so the version number read next cannot be read by a rival too.
        session.execute(update(PolicyVersionRow).where(false()).values(active=False))


def _audit_view(row: PolicyVersionRow) -> dict:
    return {"version": row.version, "kind": row.kind, "comment": row.comment}


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def parse_version(value: str | int, location: str = "VERSION") -> int:
    """``3`` or ``v3`` -> 3; anything else is a one-line error."""
    raw = str(value).strip()
    digits = raw[1:] if raw[:1] in ("v", "V") else raw
    number = limits.to_number(digits) if digits.isascii() and digits.isdigit() else None
    if number is None or number <= 0:
        raise GpupoolError(
            f"not a policy version: {raw!r} (expected e.g. 3 or v3)", location=location
        )
    return int(limits.ID.check(number, location, raw))


def get_version(session: Session, version: int | None, location: str = "VERSION"):
    """The row of ``version``; the active one when ``version`` is None."""
    if version is None:
        row = repository.active_policy_row(session)
        if row is None:
            raise NotFound(
                "no policy has been applied; rounds use the FIFO default", location=location
            )
        return row
    row = session.scalars(
        select(PolicyVersionRow).where(PolicyVersionRow.version == version)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no policy version {version}{_known(session)}", location=location)
    return row


def _known(session: Session) -> str:
    latest = session.scalar(
        select(PolicyVersionRow.version).order_by(PolicyVersionRow.version.desc()).limit(1)
    )
    return " (no policy has been applied yet)" if latest is None else f" (versions 1..{latest})"


def list_versions(session: Session) -> list[PolicyVersionRow]:
    return list(session.scalars(select(PolicyVersionRow).order_by(PolicyVersionRow.version)))


def version_view(row: PolicyVersionRow) -> dict:
    """The ``--json`` shape of one version (without its text)."""
    return {
        "version": row.version,
        "kind": row.kind,
        "applied_by": row.applied_by,
        "applied_at": clock.iso(row.applied_at),
        "active": row.active,
        "comment": row.comment,
    }


def parse_stored(row: PolicyVersionRow):
    from gpupool.policies.document import parse_policy_text

    return parse_policy_text(row.document, source=f"policy v{row.version}")


# ---------------------------------------------------------------------------
# Diff
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyDiff:
    old: int
    new: int
    unified: str  # unified diff of the normalised documents ("" when they are equal)
    changes: tuple[str, ...]  # short semantic summary lines


def diff_versions(session: Session, old: int, new: int) -> PolicyDiff:
    old_row = get_version(session, old, location="V1")
    new_row = get_version(session, new, location="V2")
    before, after = parse_stored(old_row).to_dict(), parse_stored(new_row).to_dict()
    unified = "".join(
        difflib.unified_diff(
            normalised_text(before).splitlines(keepends=True),
            normalised_text(after).splitlines(keepends=True),
            fromfile=f"v{old}",
            tofile=f"v{new}",
        )
    )
    return PolicyDiff(old, new, unified, tuple(semantic_changes(before, after)))


def normalised_text(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)


_NO_DOMAIN = {"weight": 1.0, "guarantee": None, "borrow_limit": None}


def semantic_changes(before: dict, after: dict) -> list[str]:
    """What an admin cares about: kind, domain weights and shares, subsidy rules."""
    changes = []
    if before["kind"] != after["kind"]:
        changes.append(f"kind: {before['kind']} -> {after['kind']}")
    for name in sorted(set(before["domains"]) | set(after["domains"])):
        old = before["domains"].get(name, _NO_DOMAIN)
        new = after["domains"].get(name, _NO_DOMAIN)
        for key, label in (
            ("weight", "weight"),
            ("guarantee", "guarantee"),
            ("borrow_limit", "borrow limit"),
        ):
            if old[key] != new[key]:
                changes.append(f"domain {name} {label}: {_show(old[key])} -> {_show(new[key])}")
    old_sub, new_sub = before["subsidy"], after["subsidy"]
    for key, label in (
        ("domain_rates", "subsidy rate for domain"),
        ("gpu_type_rates", "subsidy rate on GPU type"),
    ):
        for name in sorted(set(old_sub[key]) | set(new_sub[key])):
            old_rate, new_rate = old_sub[key].get(name, 0.0), new_sub[key].get(name, 0.0)
            if old_rate != new_rate:
                changes.append(f"{label} {name}: {_show(old_rate)} -> {_show(new_rate)}")
    for key in ("org_cap", "period_budget"):
        if old_sub[key] != new_sub[key]:
            changes.append(f"subsidy {key}: {_show(old_sub[key])} -> {_show(new_sub[key])}")
    for key in ("aging", "preemption", "options"):
        if before[key] != after[key]:
            changes.append(f"{key}: {_show(before[key])} -> {_show(after[key])}")
    return changes


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)

"""Who may do what: a minimal role model, enforced in the service layer.

Roles (``users`` table):
- ``admin``: manages GPU types, pools, domains, organisations, users and
  policies; runs scheduling rounds; reports jobs finished; sees every job.
- ``submitter``: acts for exactly one organisation: submits jobs for it, and
  sees and cancels only its jobs.

Bootstrap: while the ``users`` table is empty every actor is an admin (a fresh
single-user install just works). The first ``gpupool user add`` records the
acting user as an admin before adding anyone else, so nobody locks themselves
out. From then on, an actor without a ``users`` row may do nothing.

Audit: admin actions write an ``audit_log`` row (who, what, when, before,
after) in the command's own transaction. A refusal raises ``Denied``, whose
``audit_entry`` the unit of work (gpupool.scheduler.database) writes with
outcome ``denied`` in a separate transaction *after* rolling the command back,
so the refusal is the only trace it leaves.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from gpupool import limits, model
from gpupool.model import GpupoolError
from gpupool.scheduler import clock, repository
from gpupool.scheduler.orm import AuditLogRow, JobRow, UserRow

ADMIN, SUBMITTER = "admin", "submitter"
ROLES = (ADMIN, SUBMITTER)


class Denied(model.PermissionDenied):
    """A refused action; ``audit_entry`` is what the audit log records about it."""

    def __init__(self, message: str, actor: str, action: str, target: str) -> None:
        super().__init__(message, location="--as")
        self.audit_entry = {"actor": actor, "action": action, "target": target}


def audit(
    session: Session,
    actor: str,
    action: str,
    target: str,
    before: dict | None = None,
    after: dict | None = None,
    outcome: str = "ok",
) -> None:
    session.add(
        AuditLogRow(
            at=clock.utcnow(),
            actor=actor,
            action=action,
            target=target,
            before=before,
            after=after,
            outcome=outcome,
        )
    )


def record_denial(engine: Engine, entry: dict) -> None:
    """Write a refusal to the audit log in its own transaction (best effort:
    a database that cannot take the row must not hide the refusal itself)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.begin() as connection, Session(bind=connection) as session:
            audit(session, outcome="denied", **entry)
            session.flush()
    except SQLAlchemyError:
        pass


def _bootstrapping(session: Session) -> bool:
    return not session.scalar(select(func.count()).select_from(UserRow))


def role_of(session: Session, actor: str) -> str | None:
    """The actor's role; admin while no users exist; None for an unknown actor."""
    if _bootstrapping(session):
        return ADMIN
    user = repository.find_user(session, actor)
    return None if user is None else user.role


def _unknown(actor: str, action: str, target: str) -> Denied:
    return Denied(
        f"{actor} is not a gpupool user and may not {action}: an admin can add them with "
        f"`gpupool user add {actor} --role submitter --org ORG`",
        actor,
        action,
        target,
    )


def require_admin(session: Session, actor: str, action: str, target: str = "") -> None:
    role = role_of(session, actor)
    if role is None:
        raise _unknown(actor, action, target)
    if role != ADMIN:
        raise Denied(f"{actor} may not {action}: admins only", actor, action, target)


def org_scope(session: Session, actor: str, action: str = "see jobs") -> int | None:
    """None for an admin (every org); a submitter's org id; refuses anyone else."""
    if role_of(session, actor) == ADMIN:
        return None
    user = repository.find_user(session, actor)
    if user is None:
        raise _unknown(actor, action, "")
    if user.org_id is None:
        raise Denied(f"{actor} acts for no organisation", actor, action, "")
    return user.org_id


def require_org(session: Session, actor: str, org_id: int, action: str, target: str) -> None:
    """Admins act for any org; a submitter only for their own."""
    scope = org_scope(session, actor, action)
    if scope is not None and scope != org_id:
        raise Denied(
            f"{actor} may not {action}: it belongs to another organisation", actor, action, target
        )


def job_for(session: Session, actor: str, job_id: int, action: str = "see", lock: bool = False):
    """The job, if the actor may act on it (a submitter: its own org's jobs only)."""
    job = repository.get_job(session, job_id, lock=lock)
    require_org(session, actor, job.org_id, f"{action} job {job_id}", f"job {job_id}")
    return job


def visible_jobs(
    session: Session, actor: str, state: list[str] | None = None, org: str | None = None
) -> list[JobRow]:
    scope = org_scope(session, actor)
    rows = repository.list_jobs(session, state or None, org)
    return [r for r in rows if scope is None or r.org_id == scope]


def add_user(session: Session, actor: str, name: str, role: str, org: str | None = None) -> UserRow:
    name = limits.check_text(name or "", "name", limits.NAME)
    if role not in ROLES:
        raise GpupoolError(f"must be one of {', '.join(ROLES)}, got {role!r}", location="--role")
    bootstrapping = _bootstrapping(session)
    require_admin(session, actor, "add users", f"user {name}")
    if bootstrapping and name == actor and role != ADMIN:
        raise GpupoolError(f"the first user must be an admin, and {name} is you", location="--role")
    limits.check_unique(name, session.scalars(select(UserRow.name)), "user", "name")
    org_row = _org_for(session, role, org)
    if bootstrapping and name != actor:
        _insert_user(session, actor, actor, ADMIN, None)  # whoever bootstraps stays admin
    return _insert_user(session, actor, name, role, org_row)


def _org_for(session: Session, role: str, org: str | None):
    if role == SUBMITTER and not org:
        raise GpupoolError("a submitter acts for one organisation: give --org", location="--org")
    if role == ADMIN and org:
        raise GpupoolError("admins act for every organisation: leave out --org", location="--org")
    return repository.get_org(session, org.strip(), location="--org") if org else None


def _insert_user(session: Session, actor: str, name: str, role: str, org_row) -> UserRow:
    row = UserRow(name=name, role=role, org_id=None if org_row is None else org_row.id)
    session.add(row)
    session.flush()
    audit(session, actor, "user.add", f"user {name}", after=user_view(row, org_row))
    return row


def user_view(row: UserRow, org_row=None) -> dict:
    org_row = org_row if org_row is not None else row.org
    return {"name": row.name, "role": row.role, "org": None if org_row is None else org_row.name}


def list_users(session: Session, actor: str) -> list[dict]:
    require_admin(session, actor, "list users")
    rows = session.scalars(select(UserRow).order_by(UserRow.name)).all()
    return [user_view(r) for r in rows]

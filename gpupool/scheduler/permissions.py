"""Who may do what: roles, one table of operations, audited refusals.

Roles (``users`` table):
- ``admin``: everything: the platform description, users, tokens, policies,
  programmes and vouchers, live rounds, every organisation's jobs and money.
- ``submitter``: acts for exactly one organisation: submits (without a
  priority boost), sees and cancels its jobs; reads its own reports, vouchers
  and the programmes open to it; reads the policy in force.
- ``agent``: acts for one site: sees the jobs placed on that site's pools,
  pulls their starts, reports them running and finished (completed or failed)
  and sends the site's heartbeats (gpupool.scheduler.sites).
- ``auditor``: reads everything an admin can read, writes nothing.

``OPERATIONS`` is the single table of which role may do each operation and
over what scope (every organisation, its own organisation, its own site, its
own belongings); docs/security.md prints it. Every read and write calls
:func:`authorize` (or one of the helpers built on it) with an operation's
name, so the CLI and the HTTP API enforce the same rules.

Identity: an actor is a user name from the ``users`` table (the HTTP API's
authenticated user, or the local CLI's ``--as NAME``). The local CLI without
``--as`` acts as ``OWNER``: whoever holds the database URL owns the platform
and is an admin without a users row. There is no other way to be an admin:
an empty users table grants nothing, and the OS user name grants nothing.

Audit: writes record an ``audit_log`` row (who, what, when, before, after) in
the command's own transaction. A refusal raises ``Denied``, whose
``audit_entry`` the unit of work (gpupool.scheduler.database) writes with
outcome ``denied`` in a separate transaction *after* rolling the command back,
so the refusal is the only trace it leaves. The audit log is append-only: no
code path updates or deletes it, and database triggers (migration 0004)
refuse UPDATE and DELETE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from gpupool import limits, model
from gpupool.model import GpupoolError
from gpupool.scheduler import clock, repository
from gpupool.scheduler.grants import (  # noqa: F401  (re-exported: permissions.Grant etc.)
    ADMIN,
    AGENT,
    ALL,
    AUDITOR,
    OWN,
    OWN_ORG,
    OWN_SITE,
    OWNER,
    OWNER_GRANT,
    ROLES,
    SUBMITTER,
    Denied,
    Grant,
    check_priority,
)
from gpupool.scheduler.orm import AuditLogRow, JobRow, OrgRow, PoolRow, UserRow


@dataclass(frozen=True)
class Operation:
    name: str  # stable id: 'job.list'
    action: str  # for messages: "alice may not <action>"
    grants: dict[str, str]  # role -> scope
    write: bool = False
    commands: str = ""  # the CLI commands it covers (docs/security.md)


def _admin(name: str, action: str, commands: str) -> Operation:
    return Operation(name, action, {ADMIN: ALL}, write=True, commands=commands)


_READERS = {ADMIN: ALL, AUDITOR: ALL}
_EVERYONE = {ADMIN: ALL, AUDITOR: ALL, SUBMITTER: ALL, AGENT: ALL}

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation(
            "platform.read",
            "see the platform",
            _EVERYONE,
            commands="gpu-type list, pool list, domain list",
        ),
        _admin(
            "platform.add", "change the platform", "gpu-type add, pool add, domain add, org add"
        ),
        Operation(
            "org.list", "list organisations", {**_READERS, SUBMITTER: OWN_ORG}, False, "org list"
        ),
        Operation(
            "job.submit",
            "submit jobs",
            {ADMIN: ALL, SUBMITTER: OWN_ORG},
            write=True,
            commands="job submit, job submit-batch (a priority boost: admins only)",
        ),
        Operation(
            "job.list",
            "list jobs",
            {**_READERS, SUBMITTER: OWN_ORG, AGENT: OWN_SITE},
            commands="job list",
        ),
        Operation(
            "job.show",
            "see jobs",
            {**_READERS, SUBMITTER: OWN_ORG, AGENT: OWN_SITE},
            commands="job show",
        ),
        Operation(
            "job.cancel", "cancel jobs", {ADMIN: ALL, SUBMITTER: OWN_ORG}, True, "job cancel"
        ),
        Operation(
            "job.finish", "report jobs finished", {ADMIN: ALL, AGENT: OWN_SITE}, True, "job finish"
        ),
        _admin("job.reap", "reap overdue jobs", "job reap"),
        Operation(
            "agent.run",
            "run a site's jobs",
            {AGENT: OWN_SITE},
            write=True,
            commands="agent run, agent starts (pull starts, report runs, heartbeats)",
        ),
        Operation("site.list", "list sites", _READERS, commands="site list"),
        _admin("schedule.run", "run scheduling rounds", "schedule, scheduler run"),
        Operation(
            "schedule.dry_run", "see a dry-run round", _READERS, commands="schedule --dry-run"
        ),
        Operation(
            "report.read",
            "read accounting reports",
            {**_READERS, SUBMITTER: OWN_ORG},
            commands="report usage, report subsidies",
        ),
        Operation(
            "programme.list",
            "list subsidy programmes",
            {**_READERS, SUBMITTER: OWN_ORG},
            commands="programme list (a submitter: the programmes open to it, without spending)",
        ),
        _admin("programme.add", "add subsidy programmes", "programme add"),
        Operation(
            "voucher.list",
            "list vouchers",
            {**_READERS, SUBMITTER: OWN_ORG},
            commands="voucher list",
        ),
        _admin("voucher.award", "award vouchers", "voucher award"),
        Operation(
            "policy.read",
            "read policies",
            {**_READERS, SUBMITTER: ALL},
            commands="policy show, policy history, policy diff",
        ),
        Operation(
            "policy.whatif",
            "replay jobs under a proposed policy",
            _READERS,
            commands="policy whatif",
        ),
        _admin("policy.change", "apply policies", "policy apply, policy rollback"),
        Operation("user.list", "list users", _READERS, commands="user list"),
        _admin("user.add", "add users", "user add"),
        _admin("user.change", "change users", "user remove, user set-role"),
        _admin("token.create", "create API tokens", "token create"),
        Operation(
            "token.list",
            "list API tokens",
            {**_READERS, SUBMITTER: OWN, AGENT: OWN},
            commands="token list",
        ),
        Operation(
            "token.revoke",
            "revoke API tokens",
            {ADMIN: ALL, AUDITOR: OWN, SUBMITTER: OWN, AGENT: OWN},
            write=True,
            commands="token revoke",
        ),
        Operation("audit.list", "read the audit log", _READERS, commands="audit list"),
        Operation(
            "platform.export",
            "export the platform",
            {**_READERS, AGENT: OWN_SITE},
            commands="export kueue, export slurm",
        ),
        _admin("platform.reset", "erase the platform", "init --force"),
    ]
}


# ---------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def role_of(session: Session, actor: str) -> str | None:
    """The actor's role: admin for the local owner; None for an unknown actor."""
    if actor == OWNER:
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


def _who(grants: dict[str, str]) -> str:
    names = [f"{role}s" for role in ROLES if role in grants]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def authorize(
    session: Session, actor: str, operation: str, target: str = "", action: str | None = None
) -> Grant:
    """The actor's Grant for ``operation`` (a key of OPERATIONS), or Denied (audited).

    ``action`` overrides the operation's wording in messages and audit rows.
    """
    op = OPERATIONS[operation]
    action = action or op.action
    if actor == OWNER:
        return OWNER_GRANT
    user = session.execute(_ACTOR_QUERY, {"name": actor}).one_or_none()
    if user is None:
        raise _unknown(actor, action, target)
    scope = op.grants.get(user.role)
    if scope is None:
        raise Denied(f"{actor} may not {action}: {_who(op.grants)} only", actor, action, target)
    if scope == OWN_ORG and user.org_id is None:
        raise Denied(f"{actor} acts for no organisation", actor, action, target)
    if scope == OWN_SITE and not user.site:
        raise Denied(f"{actor} acts for no site", actor, action, target)
    return Grant(actor, user.role, scope, user.org_id, user.org_name, user.site)


# What authorize needs of the actor, in one statement and without loading ORM objects
# (every request of the API asks it).
_ACTOR_QUERY = (
    select(UserRow.role, UserRow.org_id, OrgRow.name.label("org_name"), UserRow.site)
    .outerjoin(OrgRow, UserRow.org_id == OrgRow.id)
    .where(UserRow.name == bindparam("name"))
)


def require_admin(session: Session, actor: str, action: str, target: str = "") -> None:
    """The gate of every admin-only write; ``action`` words the refusal."""
    authorize(session, actor, "platform.add", target, action=action)


def require_org(
    grant: Grant, org_name: str | None, action: str, target: str = "", location: str = "--as"
) -> None:
    """Refuse a submitter asking about another organisation (by name: whether it
    exists is not revealed)."""
    if org_name is not None and not grant.sees_org(org_name.strip()):
        raise Denied(
            f"{grant.actor} may not {action} of another organisation",
            grant.actor,
            action,
            f"org {org_name}",
            location,
        )


def org_scope(session: Session, actor: str, action: str = "submit jobs") -> int | None:
    """None for an admin (every org); a submitter's org id; refuses anyone else."""
    grant = authorize(session, actor, "job.submit", action=action)
    return None if grant.everything else grant.org_id


_JOB_OPERATIONS = {"see": "job.show", "cancel": "job.cancel", "finish": "job.finish"}


def job_for(session: Session, actor: str, job_id: int, action: str = "see", lock: bool = False):
    """The job, if the actor may ``action`` it (see, cancel, finish): a submitter
    its own organisation's jobs, an agent the jobs placed at its site."""
    grant = authorize_job(session, actor, job_id, action)
    job = repository.get_job(session, job_id, lock=lock)
    require_job(grant, job, action)
    return job


def authorize_job(session: Session, actor: str, job_id: int, action: str) -> Grant:
    """The Grant to ``action`` (see, cancel, finish) jobs; which job is :func:`require_job`'s."""
    words = f"{action} job {job_id}"
    return authorize(session, actor, _JOB_OPERATIONS[action], f"job {job_id}", action=words)


def require_job(grant: Grant, job: JobRow, action: str) -> None:
    if grant.sees_job(job):
        return
    words = f"{action} job {job.id}"
    where = "another organisation" if grant.scope == OWN_ORG else f"a site other than {grant.site}"
    raise Denied(
        f"{grant.actor} may not {words}: it belongs to {where}", grant.actor, words, f"job {job.id}"
    )


def sees_all_tokens(session: Session, actor: str, action: str = "list API tokens") -> bool:
    """True for admins and auditors (every user's tokens), False for another
    registered user (its own); refuses an unknown actor."""
    return authorize(session, actor, "token.list", action=action).everything


def require_self_or_admin(
    session: Session, actor: str, owner: str, action: str, target: str
) -> None:
    """Admins act on anyone's tokens; any other registered user on its own only."""
    grant = authorize(session, actor, "token.revoke", target, action=action)
    if not grant.everything and actor != owner:
        raise Denied(f"{actor} may not {action} of another user", actor, action, target)


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------


def add_user(
    session: Session,
    actor: str,
    name: str,
    role: str,
    org: str | None = None,
    site: str | None = None,
) -> UserRow:
    name = limits.check_text(name or "", "name", limits.NAME)
    if name.startswith("@"):
        raise GpupoolError("must not start with '@' (reserved)", location="name")
    _check_role(role, "--role")
    require_admin(session, actor, "add users", f"user {name}")
    limits.check_unique(name, session.scalars(select(UserRow.name)), "user", "name")
    org_row = _org_for(session, role, org)
    return _insert_user(session, actor, name, role, org_row, _site_for(session, role, site))


def _check_role(role: str, location: str) -> None:
    if role not in ROLES:
        raise GpupoolError(f"must be one of {', '.join(ROLES)}, got {role!r}", location=location)


def _org_for(session: Session, role: str, org: str | None) -> OrgRow | None:
    if role == SUBMITTER and not org:
        raise GpupoolError("a submitter acts for one organisation: give --org", location="--org")
    if role != SUBMITTER and org:
        raise GpupoolError(
            f"only submitters act for an organisation, not {role}s", location="--org"
        )
    return repository.get_org(session, org.strip(), location="--org") if org else None


def _site_for(session: Session, role: str, site: str | None) -> str | None:
    site = limits.normalise(site or "") or None
    if role == AGENT and site is None:
        raise GpupoolError("an agent acts for one site: give --site", location="--site")
    if role != AGENT and site is not None:
        raise GpupoolError(f"only agents act for a site, not {role}s", location="--site")
    if site is not None:
        sites = sorted(set(session.scalars(select(PoolRow.site))))
        if site not in sites:
            known = ", ".join(sites) or "none yet: add its pools first"
            raise GpupoolError(f"no pool at site {site!r} (sites: {known})", location="--site")
    return site


def _insert_user(session: Session, actor: str, name: str, role: str, org_row, site=None):
    row = UserRow(name=name, role=role, org_id=None if org_row is None else org_row.id, site=site)
    session.add(row)
    session.flush()
    audit(session, actor, "user.add", f"user {name}", after=user_view(row, org_row))
    return row


def user_view(row: UserRow, org_row=None) -> dict:
    org_row = org_row if org_row is not None else row.org
    return {
        "name": row.name,
        "role": row.role,
        "org": None if org_row is None else org_row.name,
        "site": row.site,
    }


def remove_user(session: Session, actor: str, name: str) -> dict:
    """Remove a user and its API tokens (admins; audited): a request with one of
    them is refused from the next one on, as every request reads its token's row.
    The last admin is not removable. Returns the removed user's view with
    ``tokens_removed``."""
    from gpupool.scheduler.orm import ApiTokenRow

    name = (name or "").strip()
    authorize(session, actor, "user.change", f"user {name}", action="remove users")
    row = _existing_user(session, name)
    if row.role == ADMIN:
        _keep_an_admin(session, row, "remove")
    tokens = session.scalars(select(ApiTokenRow).where(ApiTokenRow.user_id == row.id)).all()
    before = {**user_view(row), "tokens": sorted(t.token_id for t in tokens)}
    for token in tokens:
        session.delete(token)
    session.flush()  # the tokens go before the row they point at
    session.delete(row)
    session.flush()
    audit(session, actor, "user.remove", f"user {name}", before=before)
    return {**user_view_of(before), "tokens_removed": len(tokens)}


def set_role(
    session: Session,
    actor: str,
    name: str,
    role: str,
    org: str | None = None,
    site: str | None = None,
) -> UserRow:
    """Give a user another role (and the org or site it needs), admins only, audited.
    The last admin is not demotable."""
    name, role = (name or "").strip(), (role or "").strip()
    _check_role(role, "ROLE")
    authorize(session, actor, "user.change", f"user {name}", action="change users' roles")
    row = _existing_user(session, name)
    org_row = _org_for(session, role, org)
    new_site = _site_for(session, role, site)
    if row.role == ADMIN and role != ADMIN:
        _keep_an_admin(session, row, "demote")
    before = user_view(row)
    row.role, row.org_id, row.site = role, None if org_row is None else org_row.id, new_site
    row.org = org_row
    session.flush()
    audit(session, actor, "user.set_role", f"user {name}", before, user_view(row, org_row))
    return row


def _existing_user(session: Session, name: str) -> UserRow:
    row = repository.find_user(session, name)
    if row is None:
        raise model.NotFound(f"no user named {name!r}", location="NAME")
    return row


def _keep_an_admin(session: Session, row: UserRow, verb: str) -> None:
    """Refuse to leave no admin user: the admin rows are locked (PostgreSQL), so two
    admins removing each other at once cannot both succeed."""
    admins = session.scalars(
        select(UserRow.id).where(UserRow.role == ADMIN).with_for_update()
    ).all()
    if set(admins) <= {row.id}:
        raise model.Conflict(
            f"{row.name} is the last admin and cannot be {verb}d: make another user admin "
            f"first (`gpupool user set-role NAME admin`)",
            location="NAME",
        )


def user_view_of(before: dict) -> dict:
    return {key: before[key] for key in ("name", "role", "org", "site")}


def list_users(session: Session, actor: str) -> list[dict]:
    authorize(session, actor, "user.list")
    rows = session.scalars(select(UserRow).order_by(UserRow.name)).all()
    return [user_view(r) for r in rows]


# ---------------------------------------------------------------------------
# The audit log, read
# ---------------------------------------------------------------------------

OUTCOMES = ("ok", "denied")


def list_audit(
    session: Session,
    actor: str,
    who: str | None = None,
    since: dt.datetime | None = None,
    outcome: str | None = None,
    action: str | None = None,
    limit: int = 200,
) -> list[dict]:
    """The newest ``limit`` audit rows matching every filter given, oldest first
    (admins and auditors). ``action`` matches a prefix: ``job`` finds job.cancel
    and job.finish."""
    authorize(session, actor, "audit.list")
    if outcome is not None and outcome not in OUTCOMES:
        raise GpupoolError(
            f"must be one of {', '.join(OUTCOMES)}, got {outcome!r}", location="--outcome"
        )
    query = select(AuditLogRow).order_by(AuditLogRow.id.desc()).limit(limit)
    if who is not None:
        query = query.where(AuditLogRow.actor == who)
    if since is not None:
        query = query.where(AuditLogRow.at >= since)
    if outcome is not None:
        query = query.where(AuditLogRow.outcome == outcome)
    if action is not None:
        query = query.where(AuditLogRow.action.startswith(action, autoescape=True))
    return [audit_view(r) for r in reversed(session.scalars(query).all())]


def audit_view(row: AuditLogRow) -> dict:
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


def operations_table(operations: Sequence[Operation] | None = None) -> str:
    """The Markdown table docs/security.md shows: operation x role."""
    rows = ["| operation | commands | " + " | ".join(ROLES) + " |"]
    rows.append("|" + " --- |" * (len(ROLES) + 2))
    for op in operations or OPERATIONS.values():
        cells = [op.grants.get(role, "-") for role in ROLES]
        rows.append(f"| `{op.name}` | {op.commands} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def audit_since(text: str):
    """`audit list --since`: a duration back from now (7d) or an instant (2026-11-02,
    2026-11-02T10:00Z), for every front end."""
    from gpupool.accounting.periods import parse_instant

    try:
        back = clock.parse_duration(text, "--since")
    except GpupoolError:
        return clock.from_epoch(parse_instant(text, "--since"))
    if back is None:
        raise GpupoolError("must be a duration or a date, not never", location="--since")
    return clock.utcnow() - back

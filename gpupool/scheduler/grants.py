"""Roles, scopes, a Grant and a refusal: what gpupool.scheduler.permissions decides with.

Kept apart from permissions (which reads users from the database through
SQLAlchemy) so that a path without SQLAlchemy, the local `job submit` on SQLite
(gpupool.scheduler.sqlite_submit), checks a submission with the same rules.
permissions re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool import model

ADMIN, SUBMITTER, AGENT, AUDITOR = "admin", "submitter", "agent", "auditor"
ROLES = (ADMIN, SUBMITTER, AGENT, AUDITOR)
# The local CLI's actor when no --as is given: whoever holds the database URL
# owns the platform and acts as an admin. No user can be named like this
# (names starting with "@" are refused) and no token can be made for it.
OWNER = "@owner"

# scopes a role is granted an operation over
ALL, OWN_ORG, OWN_SITE, OWN = "all", "own org", "own site", "own"


class Denied(model.PermissionDenied):
    """A refused action; ``audit_entry`` is what the audit log records about it."""

    def __init__(
        self, message: str, actor: str, action: str, target: str, location: str = "--as"
    ) -> None:
        super().__init__(message, location=location)
        self.audit_entry = {"actor": actor, "action": action, "target": target}


@dataclass(frozen=True)
class Grant:
    """What permissions.authorize allowed: the actor, its role, and over what."""

    actor: str
    role: str
    scope: str
    org_id: int | None = None
    org_name: str | None = None
    site: str | None = None

    @property
    def everything(self) -> bool:
        return self.scope == ALL

    def sees_org(self, org_name: str | None) -> bool:
        return self.everything or (self.scope == OWN_ORG and org_name == self.org_name)

    def sees_job(self, job) -> bool:
        """``job``: a JobRow (its org_id, and its pool's site)."""
        if self.everything:
            return True
        if self.scope == OWN_ORG:
            return job.org_id == self.org_id
        if self.scope == OWN_SITE:
            return job.pool is not None and job.pool.site == self.site
        return False


OWNER_GRANT = Grant(OWNER, ADMIN, ALL)


def check_priority(grant: Grant, priority: object, location: str) -> None:
    """A per-job priority boost is an admin's decision."""
    try:
        boost = int(str(priority).strip() or 0)
    except ValueError:
        return  # not a number: the request's validation names it
    if boost != 0 and grant.role != ADMIN:
        raise Denied(
            f"{grant.actor} may not set a priority boost: admins only (leave it out or 0)",
            grant.actor,
            "set a priority boost",
            f"priority {boost}",
            location,
        )

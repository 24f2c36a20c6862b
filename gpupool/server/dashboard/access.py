"""Who may see which dashboard page, and over what: the role rules of the API.

Jobs go through the service functions that already decide who sees them
(``permissions.visible_jobs``, ``queries.job_detail``). The other pages read
platform-wide figures (pools, the ledger, programmes, policies), so each asks
:func:`grant` first, naming the same operation the API and the CLI check, with
the same answer per role:

| operation | admin, auditor | submitter | agent |
|---|---|---|---|
| ``platform.read`` (pools) | everything | everything | everything |
| ``report.read`` (usage) | everything | its organisation's | refused |
| ``programme.list`` | everything | those open to its org, its own subsidy | refused |
| ``policy.read`` | everything | everything | refused |

A refusal raises ``permissions.Denied``, which the unit of work records as a
``denied`` audit row, as for any API call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

ADMIN, SUBMITTER, AGENT, AUDITOR = "admin", "submitter", "agent", "auditor"
EVERYTHING, OWN_ORG = "everything", "own organisation"

# operation -> (what a refusal says the actor may not do, role -> scope)
_READERS = {ADMIN: EVERYTHING, AUDITOR: EVERYTHING}
OPERATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "platform.read": (
        "see the platform",
        {**_READERS, SUBMITTER: EVERYTHING, AGENT: EVERYTHING},
    ),
    "report.read": ("read accounting reports", {**_READERS, SUBMITTER: OWN_ORG}),
    "programme.list": ("list subsidy programmes", {**_READERS, SUBMITTER: OWN_ORG}),
    "policy.read": ("read policies", {**_READERS, SUBMITTER: EVERYTHING}),
}


@dataclass(frozen=True)
class Viewer:
    """What :func:`grant` allowed: the actor, and every organisation or one."""

    actor: str
    role: str
    scope: str
    org: str | None = None  # the submitter's organisation
    domain: str | None = None  # and its domain

    @property
    def everything(self) -> bool:
        return self.scope == EVERYTHING

    def sees_org(self, org: str | None) -> bool:
        return self.everything or (org is not None and org == self.org)


def grant(session: Session, actor: str, operation: str) -> Viewer:
    """The actor's Viewer for ``operation``, or ``permissions.Denied`` (audited)."""
    from gpupool.scheduler import permissions, repository

    action, scopes = OPERATIONS[operation]
    role = permissions.role_of(session, actor)
    if role is None:
        raise permissions.Denied(
            f"{actor} is not a gpupool user and may not {action}", actor, action, "dashboard"
        )
    scope = scopes.get(role)
    if scope is None:
        allowed = ", ".join(f"{r}s" for r in scopes)
        raise permissions.Denied(
            f"{actor} may not {action}: {allowed} only", actor, action, "dashboard"
        )
    if scope == EVERYTHING:
        return Viewer(actor, role, scope)
    user = repository.find_user(session, actor)
    if user is None or user.org is None:
        raise permissions.Denied(f"{actor} acts for no organisation", actor, action, "dashboard")
    return Viewer(actor, role, scope, user.org.name, user.org.domain.name)

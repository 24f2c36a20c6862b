"""The active policy version, built from the database (or FIFO when none was applied).

Its own module, below rounds and accounts: rounds run it, and charging a run
that ends outside a round (a site's report, a cancel) prices with its flat
subsidy rules, without the accounts module importing the rounds module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from gpupool.model import GpupoolError
from gpupool.scheduler import quarantine, repository


@dataclass(frozen=True)
class ActivePolicy:
    policy: object
    version: int | None  # None: no policy applied (or the active one set aside), the FIFO default
    kind: str
    pricing: object | None = None  # the policy's SubsidyRules, if it has any
    set_aside: dict[str, str] = field(default_factory=dict)  # "policy v3" -> why, if it was


def active_policy(session: Session) -> ActivePolicy:
    """Build the active policy version, or FIFO when none was ever applied.

    A stored version this code cannot run (it no longer parses, or its numbers
    fail the sanity gate, gpupool.scheduler.quarantine) is set aside: rounds
    run the FIFO default, without its subsidy rules, until an admin applies a
    valid one, and say so in their log and the audit log.
    """
    from gpupool.policies.fifo import FifoPolicy

    row = repository.active_policy_row(session)
    if row is None:
        return ActivePolicy(policy=FifoPolicy(), version=None, kind="fifo")
    try:
        return _stored_policy(row)
    except Exception as exc:  # whatever the stored text does, scheduling goes on
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, _BadPolicy):
            problem = f"{type(exc).__name__}: {problem}"
    target = f"policy v{row.version}"
    return ActivePolicy(
        policy=FifoPolicy(),
        version=None,
        kind="fifo",
        set_aside={target: quarantine.invalid(problem)},
    )


def active_params(session: Session):
    """The active policy's PolicyParams: the defaults when none was applied, when its kind
    has none, or when the stored version is set aside (as rounds would run then)."""
    from gpupool.policies.params import PolicyParams

    row = repository.active_policy_row(session)
    if row is None:
        return PolicyParams()
    try:
        params = getattr(_checked_document(row.version, row.document), "params", None)
    except Exception:  # set aside: rounds run FIFO's defaults
        return PolicyParams()
    return params if isinstance(params, PolicyParams) else PolicyParams()


@functools.lru_cache(maxsize=16)
def _checked_document(version: int, text: str):
    """The parsed, sanity-checked document of a stored version.

    Cached by version and text: a server or daemon charges every reported end with
    the active policy's rules, and parsing the document each time cost more than the
    charge. Keyed by the text too, so a version rewritten in place (a restore) is
    parsed again. Documents are immutable; each caller still builds its own policy.
    """
    from gpupool.policies.document import parse_policy_text

    document = parse_policy_text(text, source=f"policy v{version}")
    problem = quarantine.policy_problem(document)
    if problem is not None:
        raise _BadPolicy(problem)
    return document


class _BadPolicy(GpupoolError):
    """A stored policy document whose numbers fail the sanity gate."""


def _stored_policy(row) -> ActivePolicy:
    document = _checked_document(row.version, row.document)
    params = getattr(document, "params", None)
    return ActivePolicy(
        policy=document.build(),
        version=row.version,
        kind=row.kind,
        pricing=getattr(params, "subsidy", None),
    )

"""The platform's operations: validate, enforce the rules, write, audit.

Every front end (the CLI today) calls these functions inside one
gpupool.scheduler.database.unit_of_work; they never commit themselves, so a
failure anywhere rolls back everything the command did. Bad input raises
GpupoolError with a ``location`` naming the field (prefixed by ``file:line``
for batch rows). Job state changes go through gpupool.model.check_transition.

Admin operations write an audit_log row. Permissions (roles, the table of
operations, audited refusals) live in gpupool.scheduler.permissions;
``require_admin`` here is the gate every admin operation calls.

The ``*_view`` functions give each object as the plain dict that ``--json``
prints; their keys are the model's field names and are a stable interface.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool import limits, model
from gpupool.model import Conflict, GpupoolError, JobState, check_transition
from gpupool.scheduler import clock, lifecycle, permissions, repository, submission
from gpupool.scheduler.fields import (  # noqa: F401  (service.positive_float etc. stay importable)
    non_negative_float,
    positive_float,
    positive_int,
    whole_number,
)
from gpupool.scheduler.orm import (
    DomainRow,
    GpuTypeRow,
    JobClassRow,
    JobRow,
    OrgRow,
    PoolRow,
)
from gpupool.scheduler.submission import (  # noqa: F401  (service.JobRequest etc.)
    SUBMIT_KEY,
    BatchError,
    JobRequest,
)

ADMIN, SUBMITTER = permissions.ADMIN, permissions.SUBMITTER


# ---------------------------------------------------------------------------
# Actors and audit
# ---------------------------------------------------------------------------


def role_of(session: Session, actor: str) -> str | None:
    return permissions.role_of(session, actor)


def require_admin(session: Session, actor: str, action: str, target: str = "") -> None:
    """The single permission gate for admin actions (gpupool.scheduler.permissions)."""
    permissions.require_admin(session, actor, action, target)


audit = permissions.audit


# ---------------------------------------------------------------------------
# Validation helpers (each names the field it checks)
# ---------------------------------------------------------------------------


def _name(value: str, location: str, limit: limits.TextLimit = limits.NAME) -> str:
    """Printable single-line text, NFKC-normalised (gpupool.limits.check_text)."""
    return limits.check_text(value or "", location, limit)


def _unique(session: Session, row_type, name: str, what: str, location: str) -> None:
    """Names are unique once NFKC-normalised and case-folded: ``PUMC-Hospital`` cannot
    join ``pumc-hospital``. The names are few (platform objects), so they are compared here."""
    limits.check_unique(name, session.scalars(select(row_type.name)), what, location)


# ---------------------------------------------------------------------------
# Platform description (admin)
# ---------------------------------------------------------------------------


def add_gpu_type(
    session: Session,
    actor: str,
    name: str,
    vendor: str,
    memory_gb: int,
    speed: float = 1.0,
    domestic: bool = False,
) -> GpuTypeRow:
    require_admin(session, actor, "add GPU types")
    name = _name(name, "name")
    _unique(session, GpuTypeRow, name, "GPU type", "name")
    row = GpuTypeRow(
        name=name,
        vendor=_name(vendor, "--vendor"),
        memory_gb=positive_int(memory_gb, "--memory", limits.MEMORY_GB),
        speed=positive_float(speed, "--speed", limit=limits.SPEED),
        domestic=bool(domestic),
    )
    session.add(row)
    session.flush()
    audit(session, actor, "gpu_type.add", name, after=gpu_type_view(row))
    return row


def add_pool(
    session: Session,
    actor: str,
    name: str,
    site: str,
    gpu_type: str,
    gpus: int,
    gpus_per_node: int,
    price_per_gpu_hour: float,
) -> PoolRow:
    require_admin(session, actor, "add pools")
    name = _name(name, "name")
    _unique(session, PoolRow, name, "pool", "name")
    type_row = repository.get_gpu_type(session, gpu_type, location="--gpu-type")
    gpus = positive_int(gpus, "--gpus", limits.POOL_GPUS)
    per_node = positive_int(gpus_per_node, "--gpus-per-node", limits.GPUS_PER_NODE)
    limits.POOL_NODES.check(-(-gpus // per_node), "--gpus", f"{gpus} GPUs at {per_node} per node")
    row = PoolRow(
        name=name,
        site=_name(site, "--site"),
        gpu_type_id=type_row.id,
        gpus=gpus,
        gpus_per_node=per_node,
        price_per_gpu_hour=clock.cents(
            non_negative_float(price_per_gpu_hour, "--price", limits.PRICE)
        ),
    )
    session.add(row)
    session.flush()
    audit(session, actor, "pool.add", name, after=pool_view(row, row.gpus))
    return row


def add_domain(session: Session, actor: str, name: str, weight: float = 1.0) -> DomainRow:
    require_admin(session, actor, "add domains")
    name = _name(name, "name")
    _unique(session, DomainRow, name, "domain", "name")
    row = DomainRow(name=name, weight=positive_float(weight, "--weight", limit=limits.WEIGHT))
    session.add(row)
    session.flush()
    audit(session, actor, "domain.add", name, after=domain_view(row))
    return row


def add_org(
    session: Session, actor: str, name: str, domain: str, budget: object | None = None
) -> OrgRow:
    require_admin(session, actor, "add organisations")
    name = _name(name, "name")
    _unique(session, OrgRow, name, "organisation", "name")
    domain_row = repository.get_domain(session, domain, location="--domain")
    if budget is not None:
        budget = clock.cents(non_negative_float(budget, "--budget", limits.MONEY))
    row = OrgRow(name=name, domain_id=domain_row.id, budget=budget)
    session.add(row)
    session.flush()
    audit(session, actor, "org.add", name, after=org_view(row))
    return row


def add_job_class(
    session: Session, actor: str, name: str, speeds: Mapping[str, object]
) -> JobClassRow:
    """A job class and its speed on each GPU type it names (Gavel's throughput matrix).

    ``speeds``: GPU type name -> speed relative to the reference GPU, within the
    GPU types' own bounds (limits.SPEED); a type left out runs the class at its
    own speed. Each bad entry is named ``--speed <type>``.
    """
    require_admin(session, actor, "add job classes")
    name = _name(name, "name")
    _unique(session, JobClassRow, name, "job class", "name")
    row = JobClassRow(name=name, speeds=_class_speeds(session, speeds))
    session.add(row)
    session.flush()
    audit(session, actor, "job_class.add", name, after=job_class_view(row))
    return row


def _class_speeds(session: Session, speeds: Mapping[str, object]) -> dict[str, float]:
    if not isinstance(speeds, Mapping) or not speeds:
        raise GpupoolError("give at least one --speed GPU_TYPE=SPEED", location="--speed")
    checked: dict[str, float] = {}
    for given, speed in speeds.items():
        where = f"--speed {given}"
        type_name = repository.get_gpu_type(session, _name(given, where), location=where).name
        if type_name in checked:
            raise GpupoolError(f"GPU type {type_name} is given twice", location=where)
        checked[type_name] = positive_float(speed, where, limit=limits.SPEED)
    return dict(sorted(checked.items()))


def remove_job_class(session: Session, actor: str, name: str) -> dict:
    """Remove a job class no unfinished job names (they would lose their speeds)."""
    require_admin(session, actor, "remove job classes")
    row = repository.get_job_class(session, name, location="name")
    unfinished = session.scalar(
        select(JobRow.id)
        .where(JobRow.job_class == row.name, JobRow.state.not_in(_FINISHED))
        .limit(1)
    )
    if unfinished is not None:
        raise Conflict(
            f"job {unfinished} (not finished) is of class {row.name}; remove it when none is",
            location="name",
        )
    view = job_class_view(row)
    session.delete(row)
    session.flush()
    audit(session, actor, "job_class.remove", row.name, before=view)
    return view


_FINISHED = tuple(state.value for state in model.TERMINAL_STATES)


# ---------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------


def max_gang(pool: model.Pool) -> int:
    """The largest gang gpupool.model.fit_gang can ever place on an empty ``pool``."""
    return pool.largest_gang()


def _pool_sizes(session: Session, types: Sequence[str]):
    """(gpus, gpus_per_node) of every pool (of one of ``types``, when given): the two
    sizes only, without loading pool objects (every submission asks)."""
    query = select(PoolRow.gpus, PoolRow.gpus_per_node)
    if types:
        query = query.join(GpuTypeRow, PoolRow.gpu_type_id == GpuTypeRow.id).where(
            GpuTypeRow.name.in_(types)
        )
    return session.execute(query).all()


def submit_jobs(
    session: Session,
    actor: str,
    requests: Sequence[JobRequest],
    now: dt.datetime | None = None,
    prior_errors: Sequence[GpupoolError] = (),
) -> list[tuple[int, bool]]:
    """Validate every request, then write them all; ``(job id, newly created)`` each.

    All or nothing: if any request is bad, BatchError lists every bad one and
    nothing is written. A request whose ``submit_key`` already names a job
    with the same content returns that job (``created`` False): a retried
    submission is never written twice.
    """
    grant = permissions.authorize(session, actor, "job.submit")
    return submission.submit_all(
        _SessionStore(session), grant, requests, now or clock.utcnow(), prior_errors
    )


def submit_each(
    session: Session,
    submissions: Sequence[tuple[str, JobRequest]],
    now: dt.datetime | None = None,
) -> list[tuple[int, bool] | GpupoolError]:
    """Independent submissions (actor, request), of several actors, in one transaction:
    the server's group commit. Each is checked exactly as :func:`submit_job` checks it
    (role, own organisation, priority boost, fields, key); a refused or invalid one gets
    its error in its place and writes nothing, and the others are written all the same.

    What the transaction read once serves every submission in it: each actor's
    grant, organisation ids, the largest gang per set of allowed GPU types.
    """
    now = now or clock.utcnow()
    store = _SessionStore(session)
    grants: dict[str, permissions.Grant] = {}
    known_orgs: dict[str, int] = {}
    gangs: dict[tuple[str, ...], int] = {}
    outcomes: list[tuple[int, bool] | GpupoolError | None] = [None] * len(submissions)
    checked: list[tuple[int, tuple[str, JobRequest, dict]]] = []
    for index, (actor, request) in enumerate(submissions):
        try:
            grant = grants.get(actor)
            if grant is None:
                grant = grants[actor] = permissions.authorize(session, actor, "job.submit")
                if grant.org_name is not None:
                    known_orgs[grant.org_name] = grant.org_id
            submission.check_own_orgs(grant, [request])
            job_fields = submission.validate(store, request, known_orgs, gangs)
            checked.append((index, (actor, request, job_fields)))
        except GpupoolError as exc:
            outcomes[index] = exc
    written = submission.write_jobs(store, [row for _, row in checked], now)
    for (index, _), result in zip(checked, written, strict=True):
        outcomes[index] = result
    return outcomes


def submit_job(
    session: Session, actor: str, request: JobRequest, now: dt.datetime | None = None
) -> tuple[int, bool]:
    return submit_jobs(session, actor, [request], now)[0]


class _SessionStore:
    """gpupool.scheduler.submission's store on a SQLAlchemy session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def org_id(self, name: str) -> int | None:
        return self.session.scalar(select(OrgRow.id).where(OrgRow.name == name))

    def gpu_type_name(self, name: str) -> str | None:
        return self.session.scalar(select(GpuTypeRow.name).where(GpuTypeRow.name == name))

    def job_class_name(self, name: str) -> str | None:
        return self.session.scalar(select(JobClassRow.name).where(JobClassRow.name == name))

    def pool_sizes(self, types: Sequence[str]):
        return _pool_sizes(self.session, types)

    def insert_jobs(self, values: list[dict]) -> dict[tuple, int]:
        return _insert_unless_keys_taken(self.session, values)

    def job_by_key(self, org_id: int, key: str) -> JobRow | None:
        return repository.find_job_by_submit_key(self.session, org_id, key)


def _insert_unless_keys_taken(session: Session, values: list[dict]) -> dict[tuple, int]:
    """INSERT ... ON CONFLICT (org_id, submit_key) DO NOTHING for every row at once:
    (org id, key) -> new id of each row inserted."""
    dialect = session.get_bind().dialect.name
    statement = _JOB_INSERTS.get(dialect)
    if statement is None:
        statement = _JOB_INSERTS[dialect] = _job_insert(dialect)
    if len(values) == 1:  # one row: the plain statement, not an executemany
        returned = session.execute(statement, values[0]).all()
    else:
        returned = session.execute(statement, values).all()
    return {(org_id, key): job_id for job_id, org_id, key in returned}


def _job_insert(dialect: str):
    """Built once per dialect, on the jobs table (Core: no ORM bulk-insert machinery)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = JobRow.__table__
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=["org_id", "submit_key"])
        .returning(table.c.id, table.c.org_id, table.c.submit_key)
    )


_JOB_INSERTS: dict[str, object] = {}


def cancel_job(
    session: Session, actor: str, job_id: int, now: dt.datetime | None = None, reason: str = ""
) -> JobRow:
    """Cancel a pending, running or preempted job; a running job frees its GPUs now."""
    lifecycle.lock_for_ending(session)  # books before job rows, the order rounds use
    job = permissions.job_for(session, actor, job_id, "cancel", lock=True)
    # The clock is read under the lock: a round that started this job while we waited
    # stamped its start after any earlier reading, and an end must not precede a start.
    now = now or clock.utcnow()
    before = {"state": job.state}
    new_state = check_transition(job.state, JobState.CANCELLED)
    after = {"state": new_state.value}
    audit(session, actor, "job.cancel", f"job {job.id}", before=before, after=after)
    lifecycle.end_job(session, job, new_state, now, reason or f"cancelled by {actor}")
    return job


# The front door for ending jobs: every front end (the CLI's local platform, the
# HTTP API) calls one of these per command and returns its dict as is.


def cancel(session: Session, actor: str, job_id: int, now: dt.datetime | None = None) -> dict:
    """`job cancel`: cancel the job; its view."""
    return job_view(cancel_job(session, actor, job_id, now))


def finish(
    session: Session,
    actor: str,
    job_id: int,
    failed: bool = False,
    at: str | None = None,
    now: dt.datetime | None = None,
    by_hand: bool = True,
) -> dict:
    """`job finish [--failed] [--at TIME]`: a site reports a running job ended; its view.

    ``at`` is ISO 8601 text (default: now). An end before what a round already
    charged the job to is charged exactly up to ``at``: the difference is
    refunded by correction entries (gpupool.scheduler.accounts.charge_ended_run).
    """
    ended = None if at is None else lifecycle.parse_time(at)
    job = lifecycle.finish_job(
        session, actor, job_id, failed=failed, at=ended, now=now, by_hand=by_hand
    )
    return job_view(job)


def reap(
    session: Session, actor: str, grace: str | None = None, now: dt.datetime | None = None
) -> dict:
    """`job reap [--grace G]`: time out every running job past its estimate + grace (admins)."""
    rule = lifecycle.parse_grace(grace)
    permissions.require_admin(session, actor, "reap overdue jobs", "scheduler")
    lifecycle.lock_for_ending(session)
    return {"timed_out": lifecycle.reap_timeouts(session, now or clock.utcnow(), rule)}


# ---------------------------------------------------------------------------
# Views: the --json shape of each object
# ---------------------------------------------------------------------------


def gpu_type_view(row: GpuTypeRow) -> dict:
    return {
        "name": row.name,
        "vendor": row.vendor,
        "memory_gb": row.memory_gb,
        "speed": row.speed,
        "domestic": row.domestic,
    }


def job_class_view(row: JobClassRow) -> dict:
    return {"name": row.name, "speeds": dict(row.speeds or {})}


def pool_view(row: PoolRow, free_gpus: int) -> dict:
    return {
        "name": row.name,
        "site": row.site,
        "gpu_type": row.gpu_type.name,
        "gpus": row.gpus,
        "gpus_per_node": row.gpus_per_node,
        "price_per_gpu_hour": float(row.price_per_gpu_hour),
        "free_gpus": free_gpus,
    }


def domain_view(row: DomainRow) -> dict:
    return {"name": row.name, "weight": row.weight}


def org_view(row: OrgRow) -> dict:
    budget = None if row.budget is None else float(row.budget)
    return {"name": row.name, "domain": row.domain.name, "budget": budget}


def job_view(row: JobRow) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "org": row.org.name,
        "domain": row.org.domain.name,
        "gpus": row.gpus,
        "gpu_types": list(row.gpu_types or []),
        "hours": row.hours,
        "priority": row.priority,
        "job_class": row.job_class,
        "state": row.state,
        "submitted_at": clock.iso(row.submitted_at),
        "started_at": clock.iso(row.started_at),
        "ended_at": clock.iso(row.ended_at),
        "pool": row.pool.name if row.pool is not None else None,
        "wait_reason": row.wait_reason,
        "end_reason": row.end_reason,
        "submitted_by": row.submitted_by,
    }


def pool_views(session: Session) -> list[dict]:
    used = repository.used_gpus(session)
    return [pool_view(p, p.gpus - used.get(p.name, 0)) for p in repository.list_pools(session)]

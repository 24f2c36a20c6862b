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
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool import limits, model
from gpupool.model import Conflict, GpupoolError, JobState, check_transition
from gpupool.scheduler import clock, lifecycle, payloads, permissions, repository
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


@dataclass(frozen=True)
class JobRequest:
    """One job as a user asked for it, before validation.

    ``where`` prefixes every error location (``jobs.csv:7`` for a batch row;
    empty for the command line, where fields are named by their option).
    """

    org: str
    gpus: object
    hours: object
    gpu_types: Sequence[str] = ()
    name: str = ""
    priority: object = 0
    submit_key: str | None = None
    where: str = ""
    payload: Mapping[str, object] | None = None  # what to run (gpupool.scheduler.payloads)
    job_class: str = ""  # a job class's name (job_classes); empty: none

    def location(self, field_name: str) -> str:
        if self.where:
            return f"{self.where} {_BATCH_FIELDS.get(field_name, field_name)}"
        return {
            "org": "--org",
            "gpus": "--gpus",
            "hours": "--hours",
            "gpu_types": "--gpu-type",
            "submit_key": "--key",
            "priority": "--priority",
            "name": "--name",
            "argv": "COMMAND",
            "script": "--script",
            "workdir": "--workdir",
            "env": "--env",
            "image": "--image",
            "stdout": "--stdout",
            "stderr": "--stderr",
            "job_class": "--class",
        }.get(field_name, field_name)


# a batch file's column for a payload field (the rest are named alike)
_BATCH_FIELDS = {"argv": "command", "payload": "command"}


# an idempotency key: printable one-line text that fits jobs.submit_key
SUBMIT_KEY = limits.TextLimit("submit key", 128, "fits the jobs.submit_key column")


def max_gang(pool: model.Pool) -> int:
    """The largest gang gpupool.model.fit_gang can ever place on an empty ``pool``."""
    return pool.largest_gang()


def _validate(
    session: Session,
    request: JobRequest,
    known_orgs: dict[str, int],
    gangs: dict[tuple[str, ...], int] | None = None,
) -> dict:
    """The request's checked fields. ``known_orgs`` (name -> id) and ``gangs`` (allowed
    types -> largest gang) hold what this transaction read already; both are filled in."""
    org_name = _name(request.org, request.location("org"))
    org_id = known_orgs.get(org_name)
    if org_id is None:
        org_id = repository.get_org_id(session, org_name, location=request.location("org"))
        known_orgs[org_name] = org_id
    gpus = positive_int(request.gpus, request.location("gpus"), limits.GPUS_PER_JOB)
    hours = positive_float(
        request.hours, request.location("hours"), "a positive number of hours", limits.JOB_HOURS
    )
    types = []
    for type_name in request.gpu_types:
        where = request.location("gpu_types")
        type_name = repository.get_gpu_type(session, _name(type_name, where), location=where).name
        if type_name not in types:
            types.append(type_name)
    gangs = {} if gangs is None else gangs
    largest = gangs.get(tuple(types))
    if largest is None:
        largest = gangs[tuple(types)] = _largest_gang(session, types)
    if gpus > largest:
        scope = "of an allowed GPU type " if types else ""
        raise GpupoolError(
            f"asks for {gpus} GPUs but the largest gang any pool {scope}can hold is {largest}",
            location=request.location("gpus"),
        )
    priority = request.priority
    if isinstance(priority, str) and not priority.strip():
        priority = 0
    priority = whole_number(priority, request.location("priority"), limits.PRIORITY)
    where = request.location("name")
    name = limits.check_text(request.name or "", where, limits.JOB_NAME, allow_empty=True)
    if request.submit_key is not None:  # checked, not rewritten: keys match as given
        where = request.location("submit_key")
        limits.check_text(request.submit_key, where, SUBMIT_KEY, allow_empty=True)
    job_class = None
    if (request.job_class or "").strip():
        where = request.location("job_class")
        job_class = repository.get_job_class(session, request.job_class, location=where).name
    return dict(
        org_id=org_id,
        gpus=gpus,
        hours=hours,
        gpu_types=types,
        name=name,
        priority=priority,
        payload=payloads.check_payload(request.payload, request.location),
        job_class=job_class,
    )


def _largest_gang(session: Session, types: Sequence[str]) -> int:
    """The largest gang any pool (of one of ``types``, when given) can hold when empty;
    read as the pools' two sizes, without loading pool objects (every submission asks)."""
    query = select(PoolRow.gpus, PoolRow.gpus_per_node)
    if types:
        query = query.join(GpuTypeRow, PoolRow.gpu_type_id == GpuTypeRow.id).where(
            GpuTypeRow.name.in_(types)
        )
    sizes = session.execute(query)
    return max((model.largest_gang(gpus, per_node) for gpus, per_node in sizes), default=0)


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
    now = now or clock.utcnow()
    grant = _require_own_orgs(session, actor, requests)
    known_orgs = {grant.org_name: grant.org_id} if grant.org_name is not None else {}
    gangs: dict[tuple[str, ...], int] = {}
    errors: list[GpupoolError] = list(prior_errors)
    fields_list: list[dict | None] = []
    for request in requests:
        try:
            fields_list.append(_validate(session, request, known_orgs, gangs))
        except GpupoolError as exc:
            errors.append(exc)
            fields_list.append(None)
    if errors:
        batch = prior_errors or len(requests) != 1 or requests[0].where
        raise BatchError(errors) if batch else errors[0]
    rows = [(actor, r, f) for r, f in zip(requests, fields_list, strict=True)]
    results = _write_jobs(session, rows, now)
    for result in results:
        if isinstance(result, GpupoolError):
            raise result  # a key reused with other content: the whole batch is refused
    return results


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
            _check_own_orgs(grant, [request])
            job_fields = _validate(session, request, known_orgs, gangs)
            checked.append((index, (actor, request, job_fields)))
        except GpupoolError as exc:
            outcomes[index] = exc
    written = _write_jobs(session, [row for _, row in checked], now)
    for (index, _), result in zip(checked, written, strict=True):
        outcomes[index] = result
    return outcomes


def _require_own_orgs(
    session: Session, actor: str, requests: Sequence[JobRequest]
) -> permissions.Grant:
    grant = permissions.authorize(session, actor, "job.submit")
    _check_own_orgs(grant, requests)
    return grant


def _check_own_orgs(grant: permissions.Grant, requests: Sequence[JobRequest]) -> None:
    """A submitter submits only for its own organisation (admins for any), and
    only admins set a priority boost."""
    for request in requests:
        permissions.check_priority(grant, request.priority, request.location("priority"))
        if not grant.sees_org(limits.normalise(request.org or "")):
            raise permissions.Denied(
                f"{grant.actor} submits for {grant.org_name} only, not {request.org!r}",
                grant.actor,
                "submit jobs",
                f"org {request.org}",
            )


def submit_job(
    session: Session, actor: str, request: JobRequest, now: dt.datetime | None = None
) -> tuple[int, bool]:
    return submit_jobs(session, actor, [request], now)[0]


def _write_jobs(
    session: Session, rows: Sequence[tuple[str, JobRequest, dict]], now: dt.datetime
) -> list[tuple[int, bool] | GpupoolError]:
    """Insert each (actor, request, checked fields) unless its organisation already has
    a job with its key: ``(job id, created)``, or the Conflict of a key reused with
    other content.

    Keys are per organisation, so another org's key neither collides nor
    shows its job. Two concurrent submissions with one key give one job: the
    insert skips a key that is taken (ON CONFLICT DO NOTHING waits for the
    other transaction on PostgreSQL; SQLite serialises writers), and the loser
    then finds and returns the winner's job. One statement inserts every row
    (a new key, the usual case, costs nothing more); a taken key is read and
    compared afterwards, as is a key given twice in ``rows`` (the first is created).
    """
    if not rows:
        return []
    values = [_job_values(actor, request, fields, now) for actor, request, fields in rows]
    inserted = _insert_unless_keys_taken(session, values)
    results: list[tuple[int, bool] | GpupoolError] = []
    for (_, request, fields), row in zip(rows, values, strict=True):
        job_id = inserted.pop((row["org_id"], row["submit_key"]), None)
        if job_id is not None:
            results.append((job_id, True))
            continue
        try:
            results.append((_existing_job(session, request, fields), False))
        except GpupoolError as exc:
            results.append(exc)
    return results


def _job_values(actor: str, request: JobRequest, job_fields: dict, now: dt.datetime) -> dict:
    key = (request.submit_key or "").strip() or None
    return dict(
        **job_fields,
        state=JobState.PENDING.value,
        submitted_at=now,
        submitted_by=actor,
        submit_key=key or uuid.uuid4().hex,
    )


def _existing_job(session: Session, request: JobRequest, job_fields: dict) -> int:
    """The job already holding the request's key, if it asks for the same (else Conflict)."""
    key = (request.submit_key or "").strip() or None
    existing = _same_job(session, request, job_fields, key) if key is not None else None
    if existing is None:  # cannot happen: the key was taken by a committed job
        raise Conflict(f"submit key {key!r} is taken", location=request.location("submit_key"))
    return existing


def _same_job(session, request: JobRequest, job_fields: dict, key: str) -> int | None:
    """The id of the org's job with ``key`` if it asks for the same; refuses a different one."""
    existing = repository.find_job_by_submit_key(session, job_fields["org_id"], key)
    if existing is None:
        return None
    if not all(getattr(existing, k) == v for k, v in job_fields.items()):
        raise Conflict(
            f"submit key {key!r} was already used by job {existing.id} with different content",
            location=request.location("submit_key"),
        )
    return existing.id


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


class BatchError(GpupoolError):
    """Several bad rows at once; ``errors`` holds each with its own location."""

    def __init__(self, errors: Sequence[GpupoolError]) -> None:
        self.errors = sorted(errors, key=_line_of)
        super().__init__(
            f"{len(self.errors)} bad row(s), nothing submitted: "
            + "; ".join(str(e) for e in self.errors)
        )


def _line_of(error: GpupoolError) -> int:
    """The line number in a ``file:LINE field`` location (0 when there is none)."""
    head = (error.location or "").split(" ")[0]
    line = head.rpartition(":")[2]
    return int(line) if line.isdigit() else 0


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
) -> dict:
    """`job finish [--failed] [--at TIME]`: a site reports a running job ended; its view.

    ``at`` is ISO 8601 text (default: now). An end before what a round already
    charged the job to is charged exactly up to ``at``: the difference is
    refunded by correction entries (gpupool.scheduler.accounts.charge_ended_run).
    """
    ended = None if at is None else lifecycle.parse_time(at)
    job = lifecycle.finish_job(session, actor, job_id, failed=failed, at=ended, now=now)
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

"""The rules of a job submission, over any store of the platform's rows.

One implementation for every path that submits: gpupool.scheduler.service
(the CLI on any database, the server's group commit, batches) reads and writes
through a SQLAlchemy session; gpupool.scheduler.sqlite_submit (the local
`job submit` on SQLite, which must start fast) through the standard library's
sqlite3. This module imports neither: a store gives it the few reads and the
one write a submission needs.

A store has:
- ``org_id(name) -> int | None``, ``gpu_type_name(name)`` and ``job_class_name(name)``
  (``str | None``; names already normalised);
- ``pool_sizes(types) -> iterable of (gpus, gpus_per_node)`` of every pool of
  one of ``types`` (every pool when empty);
- ``insert_jobs(values) -> {(org_id, submit_key): new id}``: the rows inserted,
  skipping any whose (org_id, submit_key) is taken;
- ``job_by_key(org_id, key)``: that job (attributes id, org_id, gpus, hours,
  gpu_types, name, priority, payload, job_class) or None.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpupool import limits, model
from gpupool.model import Conflict, GpupoolError, JobState
from gpupool.scheduler import payloads
from gpupool.scheduler.fields import positive_float, positive_int, whole_number
from gpupool.scheduler.grants import Denied, Grant, check_priority


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


def submit_all(
    store,
    grant: Grant,
    requests: Sequence[JobRequest],
    now: dt.datetime,
    prior_errors: Sequence[GpupoolError] = (),
) -> list[tuple[int, bool]]:
    """Check every request, then write them all; ``(job id, newly created)`` each.

    All or nothing: if any request is bad, BatchError lists every bad one and
    nothing is written (the caller rolls back). A request whose ``submit_key``
    already names a job with the same content returns that job (``created``
    False): a retried submission is never written twice.
    """
    check_own_orgs(grant, requests)
    known_orgs = {grant.org_name: grant.org_id} if grant.org_name is not None else {}
    gangs: dict[tuple[str, ...], int] = {}
    errors: list[GpupoolError] = list(prior_errors)
    fields_list: list[dict | None] = []
    for request in requests:
        try:
            fields_list.append(validate(store, request, known_orgs, gangs))
        except GpupoolError as exc:
            errors.append(exc)
            fields_list.append(None)
    if errors:
        batch = prior_errors or len(requests) != 1 or requests[0].where
        raise BatchError(errors) if batch else errors[0]
    rows = [(grant.actor, r, f) for r, f in zip(requests, fields_list, strict=True)]
    results = write_jobs(store, rows, now)
    for result in results:
        if isinstance(result, GpupoolError):
            raise result  # a key reused with other content: the whole batch is refused
    return results


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


def check_own_orgs(grant: Grant, requests: Sequence[JobRequest]) -> None:
    """A submitter submits only for its own organisation (admins for any), and
    only admins set a priority boost."""
    for request in requests:
        check_priority(grant, request.priority, request.location("priority"))
        if not grant.sees_org(limits.normalise(request.org or "")):
            raise Denied(
                f"{grant.actor} submits for {grant.org_name} only, not {request.org!r}",
                grant.actor,
                "submit jobs",
                f"org {request.org}",
            )


def validate(
    store,
    request: JobRequest,
    known_orgs: dict[str, int],
    gangs: dict[tuple[str, ...], int] | None = None,
) -> dict:
    """The request's checked fields. ``known_orgs`` (name -> id) and ``gangs`` (allowed
    types -> largest gang) hold what this transaction read already; both are filled in."""
    org_name = _name(request.org, request.location("org"))
    org_id = known_orgs.get(org_name)
    if org_id is None:
        org_id = store.org_id(org_name)
        if org_id is None:
            raise model.NotFound(
                f"no organisation named {org_name!r}", location=request.location("org")
            )
        known_orgs[org_name] = org_id
    gpus = positive_int(request.gpus, request.location("gpus"), limits.GPUS_PER_JOB)
    hours = positive_float(
        request.hours, request.location("hours"), "a positive number of hours", limits.JOB_HOURS
    )
    types = _gpu_types(store, request)
    gangs = {} if gangs is None else gangs
    largest = gangs.get(tuple(types))
    if largest is None:
        sizes = store.pool_sizes(types)
        largest = gangs[tuple(types)] = max(
            (model.largest_gang(gpus, per_node) for gpus, per_node in sizes), default=0
        )
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
    return dict(
        org_id=org_id,
        gpus=gpus,
        hours=hours,
        gpu_types=types,
        name=name,
        priority=priority,
        payload=payloads.check_payload(request.payload, request.location),
        job_class=_job_class(store, request),
    )


def _job_class(store, request: JobRequest) -> str | None:
    if not (request.job_class or "").strip():
        return None
    wanted = limits.normalise(request.job_class)
    found = store.job_class_name(wanted)
    if found is None:
        raise model.NotFound(
            f"no job class named {wanted!r}", location=request.location("job_class")
        )
    return found


def _name(value: str, location: str) -> str:
    """Printable single-line text, NFKC-normalised (gpupool.limits.check_text)."""
    return limits.check_text(value or "", location, limits.NAME)


def _gpu_types(store, request: JobRequest) -> list[str]:
    types: list[str] = []
    for type_name in request.gpu_types:
        where = request.location("gpu_types")
        wanted = _name(type_name, where)
        found = store.gpu_type_name(wanted)
        if found is None:
            raise model.NotFound(f"no GPU type named {wanted!r}", location=where)
        if found not in types:
            types.append(found)
    return types


def write_jobs(
    store, rows: Sequence[tuple[str, JobRequest, dict]], now: dt.datetime
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
    inserted = store.insert_jobs(values)
    results: list[tuple[int, bool] | GpupoolError] = []
    for (_, request, fields), row in zip(rows, values, strict=True):
        job_id = inserted.pop((row["org_id"], row["submit_key"]), None)
        if job_id is not None:
            results.append((job_id, True))
            continue
        try:
            results.append((_existing_job(store, request, fields), False))
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


def _existing_job(store, request: JobRequest, job_fields: dict) -> int:
    """The org's job already holding the request's key, if it asks for the same;
    Conflict if it asks for something else."""
    key = (request.submit_key or "").strip() or None
    existing = store.job_by_key(job_fields["org_id"], key) if key is not None else None
    if existing is None:  # cannot happen: the key was taken by a committed job
        raise Conflict(f"submit key {key!r} is taken", location=request.location("submit_key"))
    if not all(getattr(existing, k) == v for k, v in job_fields.items()):
        raise Conflict(
            f"submit key {key!r} was already used by job {existing.id} with different content",
            location=request.location("submit_key"),
        )
    return existing.id

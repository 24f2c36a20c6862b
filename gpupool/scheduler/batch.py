"""Batch job files (CSV or YAML) parsed into JobRequests with file:line locations.

CSV: a header row naming columns ``org, gpus, hours`` (required) and
optionally ``gpu_types`` (several separated by ``;`` or ``|``), ``name``,
``priority``, ``key`` (idempotency key), and what to run (gpupool.scheduler.payloads):
``command`` (split as a shell would, or in YAML a list of arguments), ``script``
(the script's text), ``workdir``, ``env`` (``K=V;K2=V2``, or in YAML a mapping),
``image``, ``stdout``, ``stderr``; ``job_class`` (the job's class). YAML: a list of
mappings with the same keys, or a mapping with such a list under ``jobs``;
``gpu_types`` may be a list.

Parsing only checks the file's shape; the values are checked by
gpupool.scheduler.service.submit_jobs, which reports every bad row at once
(each error located as ``FILE:LINE field``) and writes nothing unless all rows
are good. Files are read through gpupool.files (regular files only, a size
limit, UTF-8 with or without BOM, a column named twice refused) and YAML is
composed by gpupool.located_yaml, whose nodes give the line numbers.

The columns are those of :class:`BatchJob`, the pydantic model each YAML job is
validated with (``gpupool schema batch`` prints its JSON Schema); a CSV header
is checked against the same fields.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpupool import limits
from gpupool.files import BATCH_CSV, BATCH_YAML, check_unique_columns, csv_records, read_text
from gpupool.located_schema import UNKNOWN_KEY, Closed, custom
from gpupool.model import GpupoolError
from gpupool.scheduler.service import BatchError, JobRequest


def _as_written(value: Any) -> Any:
    return value  # a job's values are checked on submission, with every other row's


def _column(schema: dict) -> Any:
    """A column whose value passes as written: gpupool.scheduler.service checks it (the
    same check for the CLI, the API and a batch file); ``schema`` tells editors what it takes."""
    return custom(_as_written, schema)


_NAME = {"type": "string", "minLength": 1, "maxLength": limits.NAME.length}
_NAMES = {"anyOf": [_NAME, {"type": "array", "items": _NAME}]}
_COUNT = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\s*[+-]?[0-9]+\s*$"}]}
_DECIMAL = {
    "anyOf": [
        {"type": "number"},
        {"type": "string", "pattern": r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*$"},
    ]
}
_KEY = {"type": ["string", "integer"]}


class BatchJob(Closed):
    """One job (values are checked on submission, every row at once)."""

    org: _column(_NAME)
    gpus: _column(_COUNT)
    hours: _column(_DECIMAL)
    gpu_types: _column(_NAMES) = None
    gpu_type: _column(_NAMES) = None  # another spelling of gpu_types
    name: _column({"type": "string"}) = None
    priority: _column(_COUNT) = None
    key: _column(_KEY) = None
    submit_key: _column(_KEY) = None  # another spelling of key
    # what to run (gpupool.scheduler.payloads checks it)
    command: _column(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    ) = None
    script: _column({"type": "string"}) = None
    workdir: _column({"type": "string"}) = None
    env: _column(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ]
        }
    ) = None
    image: _column({"type": "string"}) = None
    stdout: _column({"type": "string"}) = None
    stderr: _column({"type": "string"}) = None
    job_class: _column(_NAME) = None  # the job's class (job_classes)


class BatchJobs(Closed):
    jobs: list[BatchJob]


_ALIASES = {"gpu_type": "gpu_types", "submit_key": "key"}
PAYLOAD = ("command", "script", "workdir", "env", "image", "stdout", "stderr")
REQUIRED = tuple(name for name, field in BatchJob.model_fields.items() if field.is_required())
OPTIONAL = tuple(n for n in BatchJob.model_fields if n not in REQUIRED and n not in _ALIASES)


def read_batch(path: str | Path) -> list[JobRequest]:
    """The file's job requests; BatchError lists every malformed row."""
    requests, errors = load_batch(path)
    if errors:
        raise BatchError(errors)
    return requests


def load_batch(path: str | Path) -> tuple[list[JobRequest], list[GpupoolError]]:
    """Well-formed rows as requests, and an error for each malformed row.

    A file that cannot be read or parsed at all raises GpupoolError instead.
    Callers validate the requests too and report both kinds together.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        requests = parse_csv(read_text(path, BATCH_CSV), path.name)
    elif suffix in (".yaml", ".yml"):
        requests = parse_yaml(read_text(path, BATCH_YAML), path.name)
    else:
        raise GpupoolError("batch files must end in .csv, .yaml or .yml", location=str(path))
    if not requests[0] and not requests[1]:
        raise GpupoolError("no jobs in batch file", location=path.name)
    return requests


def _split_types(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).replace("|", ";").replace(",", ";")
    return [part.strip() for part in text.split(";") if part.strip()]


def _request(fields: dict, where: str) -> JobRequest:
    return JobRequest(
        org=str(fields.get("org") or ""),
        gpus=fields.get("gpus"),
        hours=fields.get("hours"),
        gpu_types=_split_types(fields.get("gpu_types")),
        name=str(fields.get("name") or ""),
        priority=fields.get("priority") if fields.get("priority") not in (None, "") else 0,
        submit_key=None if fields.get("key") in (None, "") else str(fields["key"]),
        where=where,
        payload=_payload(fields, where),
        job_class=str(fields.get("job_class") or ""),
    )


def _collect(requests: list, errors: list, fields: dict, where: str) -> None:
    try:
        requests.append(_request(fields, where))
    except GpupoolError as exc:  # a command or env cell that cannot be read
        errors.append(exc)


def _payload(fields: dict, where: str) -> dict | None:
    """The row's payload fields as check_payload takes them; None when it has none."""
    given = {k: fields[k] for k in PAYLOAD if fields.get(k) not in (None, "")}
    if not given:
        return None
    payload = {k: v for k, v in given.items() if k != "command"}
    command = given.get("command")
    if isinstance(command, str):
        import shlex

        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise GpupoolError(
                f"cannot be split into arguments: {exc}", location=f"{where} command"
            ) from None
    if command is not None:
        payload["argv"] = command
    if isinstance(payload.get("env"), str):
        from gpupool.scheduler.payloads import parse_env

        items = [item for item in payload["env"].split(";") if item.strip()]
        payload["env"] = parse_env(items, f"{where} env")
    return payload


def _check_columns(columns: list[str], where: str, what: str = "column") -> list[str]:
    normal = [_ALIASES.get(c, c) for c in columns]
    check_unique_columns(normal, where.removesuffix(" header"), what)  # gpu_type + gpu_types
    unknown = [c for c in normal if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise GpupoolError(
            f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED + OPTIONAL)}",
            location=where,
        )
    missing = [c for c in REQUIRED if c not in normal]
    if missing:
        raise GpupoolError(f"missing column(s) {', '.join(missing)}", location=where)
    return normal


def parse_csv(text: str, name: str) -> tuple[list[JobRequest], list[GpupoolError]]:
    records = csv_records(io.StringIO(text), name)
    header = next(records, None)
    if header is None:
        return [], []
    columns = _check_columns([h.strip().lower() for h in header[1]], f"{name}:1 header")
    requests, errors = [], []
    for line, row in records:
        where = f"{name}:{line}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            message = f"has {len(row)} fields, the header has {len(columns)}"
            errors.append(GpupoolError(message, location=where))
            continue
        fields = {c: v.strip() for c, v in zip(columns, row, strict=True)}
        _collect(requests, errors, fields, where)
    return requests, errors


def parse_yaml(text: str, name: str) -> tuple[list[JobRequest], list[GpupoolError]]:
    import yaml

    from gpupool import located_yaml

    root = located_yaml.compose(text, name, BATCH_YAML)
    if root is None:
        return [], []
    items = _job_nodes(root, name)
    requests, errors = [], []
    for node in items:
        where = f"{name}:{node.start_mark.line + 1}"
        if not isinstance(node, yaml.MappingNode):
            errors.append(GpupoolError("each job must be a mapping of fields", location=where))
            continue
        fields = located_yaml.to_python(node)
        try:
            job = _job(fields, where)
        except GpupoolError as exc:
            errors.append(exc)
            continue
        given = {_ALIASES.get(k, k): v for k, v in job.model_dump(exclude_unset=True).items()}
        _collect(requests, errors, given, where)
    return requests, errors


def _job(fields: dict, where: str) -> BatchJob:
    """The job's fields as a BatchJob; one error for the row, naming every column at fault."""
    check_unique_columns([_ALIASES.get(str(k), str(k)) for k in fields], where, "field")
    try:
        return BatchJob.model_validate(fields)
    except ValidationError as exc:
        unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == UNKNOWN_KEY]
        missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing"]
    if unknown:
        allowed = ", ".join(REQUIRED + OPTIONAL)
        message = f"unknown column(s) {', '.join(unknown)}; allowed: {allowed}"
    else:
        message = f"missing column(s) {', '.join(missing)}"
    raise GpupoolError(message, location=where)


def _job_nodes(root, name: str) -> list:
    import yaml

    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "jobs":
                root = value
                break
        else:
            raise GpupoolError(
                "expected a list of jobs, or a mapping with a `jobs` list",
                location=f"{name}:{root.start_mark.line + 1}",
            )
    if not isinstance(root, yaml.SequenceNode):
        raise GpupoolError("expected a list of jobs", location=f"{name}:{root.start_mark.line + 1}")
    return list(root.value)

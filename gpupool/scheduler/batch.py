"""Batch job files (CSV or YAML) parsed into JobRequests with file:line locations.

CSV: a header row naming columns ``org, gpus, hours`` (required) and
optionally ``gpu_types`` (several separated by ``;`` or ``|``), ``name``,
``priority``, ``key`` (idempotency key). YAML: a list of mappings with the same
keys, or a mapping with such a list under ``jobs``; ``gpu_types`` may be a list.

Parsing only checks the file's shape; the values are checked by
gpupool.scheduler.service.submit_jobs, which reports every bad row at once
(each error located as ``FILE:LINE field``) and writes nothing unless all rows
are good. YAML line numbers come from the composed node tree (yaml marks).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gpupool.model import GpupoolError
from gpupool.scheduler.service import BatchError, JobRequest

REQUIRED = ("org", "gpus", "hours")
OPTIONAL = ("gpu_types", "name", "priority", "key")
_ALIASES = {"gpu_type": "gpu_types", "submit_key": "key"}


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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise GpupoolError(f"cannot read batch file: {reason}", location=str(path)) from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        requests = parse_csv(text, path.name)
    elif suffix in (".yaml", ".yml"):
        requests = parse_yaml(text, path.name)
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
    )


def _check_columns(columns: list[str], where: str) -> list[str]:
    normal = [_ALIASES.get(c, c) for c in columns]
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
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        columns = _check_columns([h.strip().lower() for h in header], f"{name}:1 header")
        requests, errors = [], []
        for row in reader:
            where = f"{name}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                errors.append(
                    GpupoolError(
                        f"has {len(row)} fields, the header has {len(columns)}", location=where
                    )
                )
                continue
            fields = {c: v.strip() for c, v in zip(columns, row, strict=True)}
            requests.append(_request(fields, where))
    except csv.Error as exc:
        raise GpupoolError(f"malformed CSV: {exc}", location=f"{name}:{reader.line_num}") from None
    return requests, errors


def parse_yaml(text: str, name: str) -> tuple[list[JobRequest], list[GpupoolError]]:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise GpupoolError(f"malformed YAML: {problem}", location=f"{name}{line}") from None
    if root is None:
        return [], []
    items = _job_nodes(root, name)
    constructor = yaml.SafeLoader("")
    requests, errors = [], []
    for node in items:
        where = f"{name}:{node.start_mark.line + 1}"
        if not isinstance(node, yaml.MappingNode):
            errors.append(GpupoolError("each job must be a mapping of fields", location=where))
            continue
        try:
            fields = constructor.construct_mapping(node, deep=True)
            _check_columns([str(k) for k in fields], where)
        except GpupoolError as exc:
            errors.append(exc)
            continue
        except yaml.YAMLError as exc:
            errors.append(GpupoolError(f"malformed YAML: {exc}", location=where))
            continue
        requests.append(_request({_ALIASES.get(k, k): v for k, v in fields.items()}, where))
    return requests, errors


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

"""`gpupool job submit` without Typer: the one command scripts run in bulk.

Typer builds a pydantic TypeAdapter for every parameter of the command it runs
(typer._adapters), which with its imports costs about half a second: more than
the submission itself. :func:`run` recognises a plain ``[--db URL] [--as USER]
job submit OPTIONS`` command line, exactly the options `gpupool job submit`
takes, and runs it through the same Platform (gpupool.cli.platform), printing
the same output and the same error lines; the platform owner's submission to a
local SQLite file skips SQLAlchemy too (gpupool.scheduler.sqlite_submit).
Anything else (--help, an unknown or repeated option, a missing one, a value
that looks like an option) returns None and goes to the Typer app, which then
gives its usual answer.
"""

from __future__ import annotations

import json
import os

_GLOBAL = {"--db": "db", "--as": "user"}
_VALUED = {
    "--org": "org",
    "--gpus": "gpus",
    "--hours": "hours",
    "--gpu-type": "gpu_types",
    "--name": "name",
    "--priority": "priority",
    "--key": "key",
    "--class": "job_class",
}
_REQUIRED = ("org", "gpus", "hours")


def run(argv: list[str]) -> int | None:
    """The exit code, or None when this is not a plain `job submit`."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    top, options, as_json = parsed
    from gpupool.cli.errors import error_lines, print_lines
    from gpupool.cli.platform import connect

    try:
        result = _on_local_sqlite(top, options) or connect(top).submit_job(
            options["org"],
            options["gpus"],
            options["hours"],
            options.get("gpu_types", []),
            options.get("name", ""),
            options.get("priority", "0"),
            options.get("key"),
            job_class=options.get("job_class", ""),
        )
    except Exception as exc:
        lines = error_lines(exc)
        if lines is None:
            raise
        print_lines(lines)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False) if as_json else result["id"])
    return 0


def _on_local_sqlite(top: dict, options: dict) -> dict | None:
    """The owner's submission to a local SQLite file without SQLAlchemy
    (gpupool.scheduler.sqlite_submit); None where that path does not apply."""
    import sqlite3

    from gpupool.cli.platform import server_credentials
    from gpupool.scheduler import sqlite_submit
    from gpupool.scheduler.submission import JobRequest

    if top.get("user") or (not top.get("db") and server_credentials() is not None):
        return None  # --as USER (authorize reads users) or a server: the usual path
    path = sqlite_submit.sqlite_file(top.get("db"))
    if path is None:
        return None
    request = JobRequest(
        org=options["org"],
        gpus=options["gpus"],
        hours=options["hours"],
        gpu_types=list(options.get("gpu_types", [])),
        name=options.get("name", ""),
        priority=options.get("priority", "0"),
        submit_key=options.get("key"),
    )
    try:
        outcome = sqlite_submit.submit_as_owner(path, request)
    except sqlite3.Error:
        return None  # rolled back; the usual path meets the same problem and words it
    return None if outcome is None else {"id": outcome[0], "created": outcome[1]}


def _parse(argv: list[str]):
    top = {"db": os.environ.get("GPUPOOL_DATABASE_URL") or None}
    top["user"] = os.environ.get("GPUPOOL_USER") or None
    args = list(argv)
    seen: set[str] = set()
    while args and args[0] in _GLOBAL:
        name, value = _take(args, seen)
        if value is None:
            return None
        top[_GLOBAL[name]] = value
    if args[:2] != ["job", "submit"]:
        return None
    args = args[2:]
    options: dict = {}
    as_json = False
    while args:
        if args[0] == "--json" and not as_json:
            as_json = True
            args.pop(0)
            continue
        name = args[0].split("=", 1)[0]
        if name not in _VALUED:
            return None
        name, value = _take(args, seen, repeatable=name == "--gpu-type")
        if value is None:
            return None
        if name == "--gpu-type":
            options.setdefault("gpu_types", []).append(value)
        else:
            options[_VALUED[name]] = value
    if any(key not in options for key in _REQUIRED):
        return None
    return top, options, as_json


def _take(args: list[str], seen: set[str], repeatable: bool = False):
    """(name, value) of the option at the front, consumed; value None when unusual."""
    head = args.pop(0)
    name, equals, value = head.partition("=")
    if not equals:
        if not args:
            return name, None
        value = args.pop(0)
    if (name in seen and not repeatable) or value.startswith("-"):
        return name, None  # click's own rules (last wins, dash values) decide these
    seen.add(name)
    return name, value

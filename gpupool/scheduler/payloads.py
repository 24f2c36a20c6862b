"""What a job runs: its payload, checked once for every front end.

A payload is a plain dict stored in ``jobs.payload`` (JSON) and handed to the
site's agent as is (gpupool.agents.executor.Payload has the same fields):

    argv     the command and its arguments (a list of text), or
    script   a script's text, run by /bin/sh (one of the two, not both)
    workdir  the working directory (default: the agent's state directory)
    env      {NAME: value} added to the run's environment
    image    a container image, for executors that run images
    stdout   file the run's standard output goes to (default: the state directory)
    stderr   file its standard error goes to (default: the state directory)

Arguments, scripts and values may hold any text but NUL (a C string ends
there); names and paths one line. The whole payload is bounded in bytes
(gpupool.limits.PAYLOAD_BYTES) and in items (PAYLOAD_ITEMS). Every error names
its field (``--env``, or ``jobs.yaml:4 env`` in a batch file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from gpupool import limits
from gpupool.model import GpupoolError

FIELDS = ("argv", "script", "workdir", "env", "image", "stdout", "stderr")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# the run's GPUs are the placement's: a payload may not choose others
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES")


def check_payload(raw: object, locate: Callable[[str], str]) -> dict | None:
    """The payload as stored, or None for none; ``locate(field)`` names a field in errors."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise GpupoolError("must be a mapping of payload fields", location=locate("payload"))
    unknown = [str(k) for k in raw if k not in FIELDS]
    if unknown:
        raise GpupoolError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}",
            location=locate("payload"),
        )
    payload = {
        "argv": _argv(raw.get("argv"), locate("argv")),
        "script": _free_text(raw.get("script"), locate("script")),
        "workdir": _path(raw.get("workdir"), locate("workdir")),
        "env": _env(raw.get("env"), locate("env")),
        "image": _line(raw.get("image"), locate("image"), limits.IMAGE),
        "stdout": _path(raw.get("stdout"), locate("stdout")),
        "stderr": _path(raw.get("stderr"), locate("stderr")),
    }
    if payload["argv"] and payload["script"] is not None:
        raise GpupoolError("give a command or a script, not both", location=locate("script"))
    if not payload["argv"] and payload["script"] is None:
        raise GpupoolError("a payload needs a command or a script", location=locate("argv"))
    size = len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
    limits.PAYLOAD_BYTES.check(size, locate("payload"), f"{size:,} bytes")
    return payload


def _argv(value: object, location: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise GpupoolError("must be a list of arguments", location=location)
    limits.PAYLOAD_ITEMS.check(len(value), location, f"{len(value)} arguments")
    argv = [_no_nul(item, location) for item in value]
    if argv and not argv[0].strip():
        raise GpupoolError("the command must not be empty", location=location)
    return argv


def _no_nul(value: object, location: str) -> str:
    if not isinstance(value, str):
        raise GpupoolError(f"must be text, got {value!r}", location=location)
    if "\0" in value:
        raise GpupoolError("must not hold a NUL byte", location=location)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no file or argv holds it
        raise GpupoolError("must be valid Unicode text", location=location) from None
    return value


def _free_text(value: object, location: str) -> str | None:
    if value is None:
        return None
    text = _no_nul(value, location)
    if not text.strip():
        raise GpupoolError("must not be empty", location=location)
    return text


def _line(value: object, location: str, limit: limits.TextLimit) -> str | None:
    if value is None or value == "":
        return None
    return limits.check_text(value, location, limit)


def _path(value: object, location: str) -> str | None:
    return _line(value, location, limits.PATH)


def _env(value: object, location: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GpupoolError("must be a mapping of NAME: value", location=location)
    limits.PAYLOAD_ITEMS.check(len(value), location, f"{len(value)} variables")
    env = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise GpupoolError(
                f"{name!r} is not a variable name (letters, digits, _; not a digit first)",
                location=location,
            )
        if name in RESERVED_ENV:
            raise GpupoolError(f"{name} is set from the job's placement", location=location)
        if isinstance(text, int | float) and not isinstance(text, bool):
            text = str(text)  # YAML reads PORT: 8080 as a number
        env[name] = _no_nul(text, f"{location} {name}")
    return env


def parse_env(items: list[str], location: str = "--env") -> dict[str, str]:
    """``["K=V", ...]`` (the CLI's repeated --env, a CSV cell's ``;`` list) as a mapping."""
    env: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            raise GpupoolError(f"must look like NAME=value, got {item!r}", location=location)
        env[name.strip()] = value
    return env

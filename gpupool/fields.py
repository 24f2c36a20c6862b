"""The one table between the CLI's names for an input and the HTTP API's.

The service layer names the input at fault in a GpupoolError's ``location``
by the CLI's name for it (``--gpus``, ``--as``, ``USER``), so the local CLI
prints ``error: --gpus: must be ...``. Over HTTP the same input is a JSON body
field or a query or path parameter (``gpus``, ``gpu_types``, ``user``): a
problem's ``field`` names that (gpupool.server.problems calls
:func:`api_field`), while its ``detail`` stays the CLI's one line
(``--gpus: must be ...``). The CLI as a client checks the detail's location
against the field with :func:`cli_location` and prints the same line.

A location that is not in the table (``jobs.csv:7 gpus``, ``policy.yaml:3
kind``, ``org``) is the same in both. The acting user (``--as`` locally) is
the bearer token's over HTTP: ``Authorization``.

Standard library only: the CLI imports this for every remote error.
"""

from __future__ import annotations

# CLI location -> API field, for every route
API_FIELDS: dict[str, str] = {
    "--as": "Authorization",
    # jobs
    "--org": "org",
    "--gpus": "gpus",
    "--hours": "hours",
    "--gpu-type": "gpu_type",
    "--name": "name",
    "--priority": "priority",
    "--key": "key",
    "--class": "job_class",
    "--state": "state",
    "--limit": "limit",
    "--after": "after",
    "--grace": "grace",
    "--failed": "failed",
    "--at": "at",
    "job id": "job_id",
    # a job's payload (gpupool.scheduler.payloads)
    "COMMAND": "payload.argv",
    "--script": "payload.script",
    "--workdir": "payload.workdir",
    "--env": "payload.env",
    "--image": "payload.image",
    "--stdout": "payload.stdout",
    "--stderr": "payload.stderr",
    "payload": "payload",
    # the platform's description
    "--vendor": "vendor",
    "--memory": "memory_gb",
    "--speed": "speed",
    "--domestic": "domestic",
    "--site": "site",
    "--gpus-per-node": "gpus_per_node",
    "--price": "price_per_gpu_hour",
    "--weight": "weight",
    "--domain": "domain",
    "--budget": "budget",
    # users, tokens, audit
    "NAME": "name",
    "--role": "role",
    "ROLE": "role",
    "USER": "user",
    "--user": "user",
    "--expires": "expires",
    "--scope": "scopes",
    "ID": "token_id",
    "--actor": "actor",
    "--since": "since",
    "--until": "until",
    "--outcome": "outcome",
    "--action": "action",
    # policies
    "VERSION": "version",
    "V1": "old",
    "V2": "new",
    "--comment": "comment",
    "--out": "files",  # whatif: the files come back in the response
    # accounting
    "--programme": "programme",
    "--amount": "amount",
    "--period": "period",
    "--by": "by",
    "--png": "format",  # the chart comes back in the response, in this format
}

# Where one route's field differs from the table: (method, path under /api/v1) -> overrides
# (routes without path parameters: the client looks them up by the path it calls)
ROUTE_FIELDS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/jobs"): {"--gpu-type": "gpu_types"},  # repeated --gpu-type: one list
    # repeated --speed TYPE=SPEED: one mapping; ``--speed A100`` is ``speeds.A100``
    ("POST", "/job-classes"): {"--speed": "speeds"},
}


def api_field(location: str | None, method: str = "", path: str = "") -> str | None:
    """The API's name for the input a service error's ``location`` names, on the
    route ``method path`` (path under /api/v1, as its template: ``/jobs/{job_id}``)."""
    if location is None:
        return None
    overrides = ROUTE_FIELDS.get((method.upper(), path), {})
    head, _, key = location.partition(" ")
    if key and head in overrides:  # one entry of a repeated option: that key of its field
        return f"{overrides[head]}.{key}"
    return overrides.get(location) or API_FIELDS.get(location, location)


def cli_location(detail: str, field: str | None, method: str = "", path: str = "") -> str | None:
    """The CLI's location in a problem's ``detail`` (``--gpus: must be ...``) when it
    is the one ``field`` names on that route; None when the detail names none."""
    if field is None:
        return None
    head, colon, _ = detail.partition(": ")
    if colon and api_field(head, method, path) == field:
        return head
    return None

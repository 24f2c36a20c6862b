"""HttpPlatform: the CLI's operations against a `gpupool serve` (gpupool.cli.platform).

Each call is one request to ``/api/v1`` with the bearer token, and returns the
response body, which is what the same command's ``--json`` prints locally.
An error response (RFC 9457 problem details, gpupool.server.problems) becomes
the GpupoolError the local call would have raised: its ``detail`` is the
error's ``location: message`` line and ``field`` its location, so the CLI
prints the same ``error:`` line and exits 2. A batch or policy document's
``errors`` come back one each, as a BatchError or PolicyDocumentError.

The HTTP client is the standard library's http.client, one connection per
command: a command makes one request, and httpx (with its TLS context built
from certifi's bundle) would cost a `job submit` more than the whole request
(benchmarks/README.md, "CLI start-up"). No SQLAlchemy, no schema check either.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gpupool.model import (
    Conflict,
    GpupoolError,
    NotFound,
    PermissionDenied,
)

if TYPE_CHECKING:  # the alias only names types: no import at run time
    from gpupool.cli.platform import View

API = "/api/v1"
TIMEOUT_SECONDS = 60.0  # a live round waits for a daemon's round in progress
# a response read whole: the largest the server sends (files as JSON text) with room
MAX_BODY_BYTES = 128 * 2**20
_CLASSES = {401: PermissionDenied, 403: PermissionDenied, 404: NotFound, 409: Conflict}


class HttpPlatform:
    def __init__(self, url: str, token: str, where: str = "GPUPOOL_URL") -> None:
        check_url(url, where)
        if not all("!" <= char <= "~" for char in token):  # it goes into an HTTP header as is
            raise GpupoolError(
                "must be printable ASCII without spaces (gpt_...)",
                location="--token" if where == "URL" else "GPUPOOL_TOKEN",
            )
        self.url = url.rstrip("/")
        self.token = token

    def database_url(self, command: str) -> str | None:
        raise GpupoolError(
            "runs only where the database is, not through a server; unset GPUPOOL_URL "
            "(or run `gpupool logout`) on the server's host and give --db",
            location=command,
        )

    # --- the wire ------------------------------------------------------------

    def _call(self, method: str, path: str, *, json=None, params=None, errors=None, raw=False):
        """The response's JSON body (``raw``: its bytes, e.g. a chart), or its error."""
        status, body = self._send(method, API + path + _query(params), json, raw)
        if status >= 400:
            raise _error(status, _decoded(body) if raw else body, errors, method, path)
        return body

    def _send(self, method: str, target: str, payload, raw=False) -> tuple[int, object]:
        """One request on a fresh connection: (status, decoded JSON body or None; with
        ``raw``, the body's bytes, at most MAX_BODY_BYTES)."""
        import http.client
        import json
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme == "https":
            import ssl

            connection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=TIMEOUT_SECONDS,
                context=ssl.create_default_context(),
            )  # fmt: skip
        else:
            connection = http.client.HTTPConnection(
                parts.hostname, parts.port, timeout=TIMEOUT_SECONDS
            )
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, parts.path.rstrip("/") + target, data, headers)
            response = connection.getresponse()
            body = response.read(MAX_BODY_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise GpupoolError(
                f"cannot reach the server {self.url}: {exc.__class__.__name__}: {exc}",
                location="GPUPOOL_URL",
            ) from None
        finally:
            connection.close()
        if len(body) > MAX_BODY_BYTES:
            raise GpupoolError(
                f"the server's answer is over {MAX_BODY_BYTES // 2**20} MiB; not read",
                location="GPUPOOL_URL",
            )
        return response.status, body if raw else _decoded(body)

    # --- jobs ----------------------------------------------------------------

    def submit_job(
        self, org, gpus, hours, gpu_types, name, priority, key, payload=None, job_class=""
    ) -> View:
        body = {
            "org": org,
            "gpus": gpus,
            "hours": hours,
            "gpu_types": list(gpu_types),
            "name": name,
            "priority": priority,
            "key": key,
            "job_class": job_class or "",
        }
        if payload is not None:
            body["payload"] = payload
        return self._call("POST", "/jobs", json=body)

    def submit_batch(self, path: str) -> list[View]:
        from gpupool.files import BATCH_CSV, BATCH_YAML, read_text

        kind = BATCH_CSV if Path(path).suffix.lower() == ".csv" else BATCH_YAML
        body = {"filename": Path(path).name, "content": read_text(path, kind)}
        return self._call("POST", "/jobs/batch", json=body, errors="batch")

    def list_jobs(self, states, org, limit, after, before) -> View:
        params = {"state": list(states), "org": org, "limit": limit}
        return self._call("GET", "/jobs", params={**params, "after": after, "before": before})

    def show_job(self, job_id: int) -> View:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel_job(self, job_id: int) -> View:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def finish_job(self, job_id: int, failed: bool, at: str | None) -> View:
        return self._call("POST", f"/jobs/{job_id}/finish", json={"failed": failed, "at": at})

    def agent_starts(self) -> View:
        return self._call("GET", "/agent/starts")

    def list_sites(self) -> list[View]:
        return self._call("GET", "/sites")

    def reap(self, grace: str | None) -> View:
        return self._call("POST", "/jobs/reap", json={"grace": grace})

    def schedule(self, dry_run: bool, grace: str | None) -> View:
        path = "/schedule/dry-run" if dry_run else "/schedule"
        return self._call("POST", path, json={"dry_run": dry_run, "grace": grace})

    # --- the platform's description -----------------------------------------

    def list_gpu_types(self) -> list[View]:
        return self._call("GET", "/gpu-types")

    def add_gpu_type(self, name, vendor, memory, speed, domestic) -> View:
        body = {
            "name": name,
            "vendor": vendor,
            "memory_gb": memory,
            "speed": speed,
            "domestic": domestic,
        }
        return self._call("POST", "/gpu-types", json=body)

    def list_job_classes(self) -> list[View]:
        return self._call("GET", "/job-classes")

    def add_job_class(self, name: str, speeds: dict[str, str]) -> View:
        return self._call("POST", "/job-classes", json={"name": name, "speeds": speeds})

    def remove_job_class(self, name: str) -> View:
        return self._call("DELETE", f"/job-classes/{_segment(name)}")

    def list_pools(self) -> list[View]:
        return self._call("GET", "/pools")

    def add_pool(self, name, site, gpu_type, gpus, gpus_per_node, price) -> View:
        body = {
            "name": name,
            "site": site,
            "gpu_type": gpu_type,
            "gpus": gpus,
            "gpus_per_node": gpus_per_node,
            "price_per_gpu_hour": price,
        }
        return self._call("POST", "/pools", json=body)

    def list_domains(self) -> list[View]:
        return self._call("GET", "/domains")

    def add_domain(self, name, weight) -> View:
        return self._call("POST", "/domains", json={"name": name, "weight": weight})

    def list_orgs(self, domain: str | None) -> list[View]:
        return self._call("GET", "/orgs", params={"domain": domain})

    def add_org(self, name, domain, budget) -> View:
        return self._call("POST", "/orgs", json={"name": name, "domain": domain, "budget": budget})

    # --- users, tokens, audit ------------------------------------------------

    def list_users(self) -> list[View]:
        return self._call("GET", "/users")

    def add_user(self, name, role, org, site) -> View:
        body = {"name": name, "role": role, "org": org, "site": site}
        return self._call("POST", "/users", json=body)

    def remove_user(self, name: str) -> View:
        return self._call("DELETE", f"/users/{_segment(name)}")

    def set_role(self, name, role, org, site) -> View:
        body = {"role": role, "org": org, "site": site}
        return self._call("PUT", f"/users/{_segment(name)}/role", json=body)

    def create_token(self, user, expires, scopes) -> View:
        body = {"user": user, "expires": expires, "scopes": list(scopes)}
        return self._call("POST", "/tokens", json=body)

    def list_tokens(self, user: str | None) -> list[View]:
        return self._call("GET", "/tokens", params={"user": user})

    def revoke_token(self, token_id: str) -> View:
        from urllib.parse import quote

        return self._call("DELETE", f"/tokens/{quote(token_id, safe='')}")

    def list_audit(self, actor, since, outcome, action, limit: int) -> list[View]:
        params = {
            "actor": actor,
            "since": since,
            "outcome": outcome,
            "action": action,
            "limit": limit,
        }
        return self._call("GET", "/audit", params=params)

    # --- policies ------------------------------------------------------------

    def apply_policy(self, text: str, filename: str, comment: str) -> View:
        body = {"content": text, "filename": filename, "comment": comment}
        return self._call("POST", "/policy/apply", json=body, errors="policy")

    def show_policy(self, version: str | None) -> View:
        if version is None:
            return self._call("GET", "/policy")
        from urllib.parse import quote

        return self._call("GET", f"/policy/versions/{quote(version, safe='')}")

    def policy_history(self) -> list[View]:
        return self._call("GET", "/policy/history")

    def diff_policies(self, old: str, new: str) -> View:
        return self._call("GET", "/policy/diff", params={"old": old, "new": new})

    def rollback_policy(self, version: str, comment: str) -> View:
        return self._call("POST", "/policy/rollback", json={"version": version, "comment": comment})

    def whatif(self, text: str, filename: str, since: str, until: str | None, files) -> View:
        body = {"content": text, "filename": filename, "since": since, "until": until}
        body["files"] = bool(files)
        return self._call("POST", "/policy/whatif", json=body, errors="policy")

    # --- accounting ----------------------------------------------------------

    def list_programmes(self) -> list[View]:
        return self._call("GET", "/programmes")

    def add_programmes(self, declarations: list[dict] | None, path: str | None) -> list[View]:
        if path is None:
            return self._call("POST", "/programmes", json={"programmes": declarations})
        from gpupool.files import PROGRAMMES, read_text

        body = {"content": read_text(path, PROGRAMMES), "filename": Path(path).name}
        return self._call("POST", "/programmes", json=body)

    def list_vouchers(self, org: str | None) -> list[View]:
        return self._call("GET", "/vouchers", params={"org": org})

    def award_voucher(self, org, programme, amount, expires, at) -> View:
        body = {"org": org, "programme": programme, "amount": amount, "expires": expires, "at": at}
        return self._call("POST", "/vouchers", json=body)

    def usage_report(self, period: str | None, by: str) -> list[View]:
        return self._call("GET", "/reports/usage", params={"period": period, "by": by})

    def subsidy_report(self, programme: str | None) -> list[View]:
        return self._call("GET", "/reports/subsidies", params={"programme": programme})

    def export(self, kind: str, site: str | None, resources: dict, gres: dict) -> View:
        params = {
            "site": site,
            "resource": [f"{k}={v}" for k, v in resources.items()],
            "gres": [f"{k}={v}" for k, v in gres.items()],
        }
        return self._call("GET", f"/exports/{kind}", params=params)

    def burn_down_chart(self, programme: str | None, fmt: str) -> bytes:
        params = {"programme": programme, "format": fmt}
        return self._call("GET", "/reports/subsidies/chart", params=params, raw=True)


def _decoded(body: bytes) -> object:
    import json

    try:
        return json.loads(body.decode("utf-8")) if body else None
    except ValueError:
        return None


def _segment(text: str) -> str:
    """One path segment, whatever the text holds (a name with / or ? stays one)."""
    from urllib.parse import quote

    return quote(text.strip(), safe="")


def _query(params: dict | None) -> str:
    """``?a=1&state=x&state=y`` from the parameters given (None and [] left out)."""
    from urllib.parse import urlencode

    given = {k: v for k, v in (params or {}).items() if v is not None and v != []}
    return "?" + urlencode(given, doseq=True) if given else ""


def _error(status: int, body, errors: str | None, method: str = "", path: str = ""):
    """The GpupoolError a problem-details response stands for."""
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail") or f"the server answered {status}")
    items = body.get("errors") or []
    if errors == "batch" and items and status == 422:
        from gpupool.scheduler.service import BatchError

        return BatchError([_one(item.get("field"), str(item.get("detail"))) for item in items])
    if errors == "policy" and items and status == 422:
        from gpupool.policies.document import PolicyDocumentError

        return PolicyDocumentError([_pair(item) for item in items])
    from gpupool.fields import cli_location

    # the detail names the input as the CLI does (--gpus), the field as the API does (gpus)
    location = cli_location(detail, body.get("field"), method, path)
    return _one(location, detail, _CLASSES.get(status, GpupoolError))


def _one(field: str | None, detail: str, kind=GpupoolError) -> GpupoolError:
    """``detail`` is ``field: message`` (as str(GpupoolError) is); split it back."""
    prefix = f"{field}: " if field else None
    if prefix and detail.startswith(prefix):
        return kind(detail[len(prefix) :], location=field)
    return kind(detail)


def _pair(item: dict) -> tuple[str, str]:
    field, detail = item.get("field"), str(item.get("detail"))
    prefix = f"{field}: " if field else ""
    if prefix and detail.startswith(prefix):
        return field, detail[len(prefix) :]
    return "policy", detail


def check_url(url: str, where: str) -> None:
    """A URL that names a host and a valid port, or a one-line error (not urllib's ValueError)."""
    from urllib.parse import urlsplit

    shown = url if len(url) <= 200 else url[:200] + "..."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port out of range or not a number)
    except ValueError as exc:
        raise GpupoolError(f"not a usable URL ({exc}): {shown!r}", location=where) from None
    if parts.scheme not in ("http", "https"):
        raise GpupoolError(f"must start with http:// or https://: {shown!r}", location=where)
    if not parts.hostname:
        raise GpupoolError(f"names no host: {shown!r}", location=where)

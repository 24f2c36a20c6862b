"""What the CLI asks of a platform, and which platform it asks.

Every command parses its options, calls one method of a :class:`Platform` and
renders what comes back: the plain ``*_view`` dicts and lists that ``--json``
prints. There are two platforms, chosen once per command by :func:`connect`:

- gpupool.cli.local.LocalPlatform: the database itself (``--db`` /
  GPUPOOL_DATABASE_URL, else the default SQLite file), as the platform owner or
  the ``--as`` user, each call one unit of work over the service layer;
- gpupool.cli.remote.HttpPlatform: a `gpupool serve` (GPUPOOL_URL and
  GPUPOOL_TOKEN, else what `gpupool login` saved), over HTTP; the token says
  who acts. Problem details come back as the same GpupoolErrors, so a command
  prints the same ``error: <location>: <message>`` line and exits 2.

So a command has one code path for both. Neither platform is imported until a
command runs (SQLAlchemy for the local one, http.client for the remote one).

Which one: an explicit database (``--db`` or GPUPOOL_DATABASE_URL) means the
local database; else GPUPOOL_URL (with GPUPOOL_TOKEN); else the saved login;
else the local default database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from gpupool.model import GpupoolError

View = dict[str, Any]


class Platform(Protocol):
    """The operations the CLI performs; each returns what its ``--json`` prints."""

    # jobs
    def submit_job(
        self, org, gpus, hours, gpu_types, name, priority, key, payload=None, job_class=""
    ) -> View: ...  # {id, created}; payload: what to run (gpupool.scheduler.payloads)
    def submit_batch(self, path: str) -> list[View]: ...
    def list_jobs(
        self, states: list[str], org: str | None, limit: int, after: int | None, before: int | None
    ) -> View: ...  # one page: {jobs, limit, next_after, previous_before}
    def show_job(self, job_id: int) -> View: ...
    def cancel_job(self, job_id: int) -> View: ...
    def finish_job(self, job_id: int, failed: bool, at: str | None) -> View: ...
    def reap(self, grace: str | None) -> View: ...  # {timed_out}
    def agent_starts(self) -> View: ...  # {site, starts}: the agent's site's starts
    def list_sites(self) -> list[View]: ...
    def schedule(self, dry_run: bool, grace: str | None) -> View: ...

    # the platform's description
    def list_gpu_types(self) -> list[View]: ...
    def add_gpu_type(self, name, vendor, memory, speed, domestic) -> View: ...
    def list_job_classes(self) -> list[View]: ...
    def add_job_class(self, name: str, speeds: dict[str, str]) -> View: ...
    def remove_job_class(self, name: str) -> View: ...
    def list_pools(self) -> list[View]: ...
    def add_pool(self, name, site, gpu_type, gpus, gpus_per_node, price) -> View: ...
    def list_domains(self) -> list[View]: ...
    def add_domain(self, name, weight) -> View: ...
    def list_orgs(self, domain: str | None) -> list[View]: ...
    def add_org(self, name, domain, budget) -> View: ...

    # users, tokens, audit
    def list_users(self) -> list[View]: ...
    def add_user(self, name, role, org, site) -> View: ...
    def remove_user(self, name: str) -> View: ...  # the user's view and `tokens_removed`
    def set_role(self, name, role, org, site) -> View: ...
    def create_token(self, user, expires, scopes) -> View: ...  # the view and its `token`
    def list_tokens(self, user: str | None) -> list[View]: ...
    def revoke_token(self, token_id: str) -> View: ...
    def list_audit(self, actor, since, outcome, action, limit: int) -> list[View]: ...

    # policies (documents are parsed by the command first: the same file:line errors)
    def apply_policy(self, text: str, filename: str, comment: str) -> View: ...
    def show_policy(self, version: str | None) -> View: ...
    def policy_history(self) -> list[View]: ...
    def diff_policies(self, old: str, new: str) -> View: ...
    def rollback_policy(self, version: str, comment: str) -> View: ...
    def whatif(self, text, filename, since, until, files: bool) -> View: ...  # + `files`

    # accounting
    def list_programmes(self) -> list[View]: ...
    def add_programmes(self, declarations: list[dict] | None, path: str | None) -> list[View]: ...
    def list_vouchers(self, org: str | None) -> list[View]: ...
    def award_voucher(self, org, programme, amount, expires, at) -> View: ...
    def usage_report(self, period: str | None, by: str) -> list[View]: ...
    def subsidy_report(self, programme: str | None) -> list[View]: ...
    def burn_down_chart(self, programme: str | None, fmt: str) -> bytes: ...

    # exports for sites' workload managers
    def export(self, kind: str, site: str | None, resources: dict, gres: dict) -> View: ...

    # only on the host that holds the database
    def database_url(self, command: str) -> str | None: ...


def connect(ctx_obj: dict | None) -> Platform:
    """The platform a command talks to (see the module docstring)."""
    options = ctx_obj or {}
    db, user = options.get("db"), (options.get("user") or "").strip()
    server = None if db else server_credentials()
    if server is None:
        from gpupool.cli.local import LocalPlatform

        return LocalPlatform(db, user or None)
    if user:
        raise GpupoolError(
            "acting as another user needs the database; with a server the token says who "
            "you are (unset GPUPOOL_URL, or log in with that user's token)",
            location="--as",
        )
    from gpupool.cli.remote import HttpPlatform

    return HttpPlatform(*server)


# --- credentials -------------------------------------------------------------


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpupool" / "credentials"


def server_credentials() -> tuple[str, str] | None:
    """(url, token) from GPUPOOL_URL / GPUPOOL_TOKEN, else from the saved login."""
    url = os.environ.get("GPUPOOL_URL", "").strip()
    if url:
        token = os.environ.get("GPUPOOL_TOKEN", "").strip()
        if not token:
            saved = _saved()
            token = saved[1] if saved and saved[0] == url.rstrip("/") else ""
        if not token:
            raise GpupoolError(
                "a server needs a token: set GPUPOOL_TOKEN or run `gpupool login URL`",
                location="GPUPOOL_TOKEN",
            )
        return url.rstrip("/"), token
    return _saved()


def _saved() -> tuple[str, str] | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["url"]), str(data["token"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise GpupoolError(
            "unreadable saved login; run `gpupool logout` and log in again", location=str(path)
        ) from None


def save_credentials(url: str, token: str) -> Path:
    """Write the login readable by its owner only: created 0600, never world-readable
    even for a moment (os.open with the mode, not chmod afterwards)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"url": url, "token": token}, handle)
        handle.write("\n")
    return path


def forget_credentials() -> bool:
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True

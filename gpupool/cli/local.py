"""LocalPlatform: the CLI's operations on the database itself (gpupool.cli.platform).

Each call is one unit of work (one transaction) over the service layer, made as
the ``--as`` user or, without one, the platform owner: whoever holds the
database URL is its admin. The compositions the HTTP API returns whole come
from gpupool.scheduler.queries, so both front ends build them the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the alias only names types: no import at run time
    from gpupool.cli.platform import View


class LocalPlatform:
    def __init__(self, db_url: str | None, actor: str | None) -> None:
        from gpupool.scheduler.permissions import OWNER

        self.db_url = db_url
        self.actor = actor or OWNER

    @contextmanager
    def _work(self):
        from gpupool.scheduler.database import unit_of_work

        with unit_of_work(self.db_url) as session:
            yield session

    def database_url(self, command: str) -> str | None:
        return self.db_url

    # --- jobs ----------------------------------------------------------------

    def submit_job(
        self, org, gpus, hours, gpu_types, name, priority, key, payload=None, job_class=""
    ) -> View:
        from gpupool.scheduler.service import JobRequest, submit_job

        request = JobRequest(
            org=org,
            gpus=gpus,
            hours=hours,
            gpu_types=list(gpu_types),
            name=name,
            priority=priority,
            submit_key=key,
            payload=payload,
            job_class=job_class or "",
        )
        with self._work() as session:
            job_id, created = submit_job(session, self.actor, request)
        return {"id": job_id, "created": created}

    def submit_batch(self, path: str) -> list[View]:
        from gpupool.scheduler.batch import load_batch
        from gpupool.scheduler.service import submit_jobs

        requests, malformed = load_batch(path)
        with self._work() as session:
            results = submit_jobs(session, self.actor, requests, prior_errors=malformed)
        return [{"id": job_id, "created": created} for job_id, created in results]

    def list_jobs(self, states, org, limit, after, before) -> View:
        from gpupool.scheduler.queries import job_page

        with self._work() as session:
            return job_page(session, self.actor, states or None, org, limit, after, before)

    def show_job(self, job_id: int) -> View:
        from gpupool.scheduler.queries import job_detail

        with self._work() as session:
            return job_detail(session, self.actor, job_id)

    def cancel_job(self, job_id: int) -> View:
        from gpupool.scheduler.service import cancel

        with self._work() as session:
            return cancel(session, self.actor, job_id)

    def finish_job(self, job_id: int, failed: bool, at: str | None) -> View:
        from gpupool.scheduler.service import finish

        with self._work() as session:
            return finish(session, self.actor, job_id, failed=failed, at=at)

    def agent_starts(self) -> View:
        from gpupool.scheduler.sites import starts

        with self._work() as session:
            return starts(session, self.actor)

    def list_sites(self) -> list[View]:
        from gpupool.scheduler.sites import site_views

        with self._work() as session:
            return site_views(session, self.actor)

    def reap(self, grace: str | None) -> View:
        from gpupool.scheduler.service import reap

        with self._work() as session:
            return reap(session, self.actor, grace)

    def schedule(self, dry_run: bool, grace: str | None) -> View:
        from gpupool.scheduler.daemon import WAITING, log
        from gpupool.scheduler.database import make_engine
        from gpupool.scheduler.lifecycle import parse_grace
        from gpupool.scheduler.queries import schedule

        rule = parse_grace(grace)
        engine = make_engine(self.db_url)
        try:  # a daemon's round in progress: say that we wait for it (stderr)
            return schedule(engine, self.actor, dry_run, rule, on_wait=lambda: log.info(WAITING))
        finally:
            engine.dispose()

    # --- the platform's description -----------------------------------------

    def _read(self, operation: str, read):
        from gpupool.scheduler.permissions import authorize

        with self._work() as session:
            authorize(session, self.actor, operation)
            return read(session)

    def list_gpu_types(self) -> list[View]:
        from gpupool.scheduler import repository
        from gpupool.scheduler.service import gpu_type_view

        return self._read(
            "platform.read", lambda s: [gpu_type_view(r) for r in repository.list_gpu_types(s)]
        )

    def add_gpu_type(self, name, vendor, memory, speed, domestic) -> View:
        from gpupool.scheduler import service

        with self._work() as session:
            row = service.add_gpu_type(session, self.actor, name, vendor, memory, speed, domestic)
            return service.gpu_type_view(row)

    def list_job_classes(self) -> list[View]:
        from gpupool.scheduler import repository
        from gpupool.scheduler.service import job_class_view

        return self._read(
            "platform.read", lambda s: [job_class_view(r) for r in repository.list_job_classes(s)]
        )

    def add_job_class(self, name: str, speeds: dict[str, str]) -> View:
        from gpupool.scheduler import service

        with self._work() as session:
            return service.job_class_view(service.add_job_class(session, self.actor, name, speeds))

    def remove_job_class(self, name: str) -> View:
        from gpupool.scheduler import service

        with self._work() as session:
            return service.remove_job_class(session, self.actor, name)

    def list_pools(self) -> list[View]:
        from gpupool.scheduler.service import pool_views

        return self._read("platform.read", pool_views)

    def add_pool(self, name, site, gpu_type, gpus, gpus_per_node, price) -> View:
        from gpupool.scheduler import service

        with self._work() as session:
            row = service.add_pool(
                session, self.actor, name, site, gpu_type, gpus, gpus_per_node, price
            )
            return service.pool_view(row, row.gpus)

    def list_domains(self) -> list[View]:
        from gpupool.scheduler import repository
        from gpupool.scheduler.service import domain_view

        return self._read(
            "platform.read", lambda s: [domain_view(r) for r in repository.list_domains(s)]
        )

    def add_domain(self, name, weight) -> View:
        from gpupool.scheduler import service

        with self._work() as session:
            return service.domain_view(service.add_domain(session, self.actor, name, weight))

    def list_orgs(self, domain: str | None) -> list[View]:
        from gpupool.scheduler import repository
        from gpupool.scheduler.permissions import authorize
        from gpupool.scheduler.service import org_view

        with self._work() as session:
            grant = authorize(session, self.actor, "org.list")  # a submitter: its own only
            orgs = repository.list_orgs(session, domain)
            return [org_view(r) for r in orgs if grant.sees_org(r.name)]

    def add_org(self, name, domain, budget) -> View:
        from gpupool.scheduler import service

        with self._work() as session:
            return service.org_view(service.add_org(session, self.actor, name, domain, budget))

    # --- users, tokens, audit ------------------------------------------------

    def list_users(self) -> list[View]:
        from gpupool.scheduler.permissions import list_users

        with self._work() as session:
            return list_users(session, self.actor)

    def add_user(self, name, role, org, site) -> View:
        from gpupool.scheduler.permissions import add_user, user_view

        with self._work() as session:
            return user_view(add_user(session, self.actor, name, role, org, site))

    def remove_user(self, name: str) -> View:
        from gpupool.scheduler.permissions import remove_user

        with self._work() as session:
            return remove_user(session, self.actor, name)

    def set_role(self, name, role, org, site) -> View:
        from gpupool.scheduler.permissions import set_role, user_view

        with self._work() as session:
            return user_view(set_role(session, self.actor, name, role, org, site))

    def create_token(self, user, expires, scopes) -> View:
        from gpupool.scheduler import tokens

        lifetime = tokens.parse_duration(expires)
        with self._work() as session:
            row, raw = tokens.create_token(session, self.actor, user, lifetime, list(scopes))
            return {**tokens.token_view(row), "token": raw}

    def list_tokens(self, user: str | None) -> list[View]:
        from gpupool.scheduler import tokens

        with self._work() as session:
            return tokens.list_tokens(session, self.actor, user)

    def revoke_token(self, token_id: str) -> View:
        from gpupool.scheduler import tokens

        with self._work() as session:
            return tokens.revoke_token(session, self.actor, token_id)

    def list_audit(self, actor, since, outcome, action, limit: int) -> list[View]:
        from gpupool.scheduler.permissions import audit_since, list_audit

        start = None if since is None else audit_since(since)
        with self._work() as session:
            return list_audit(session, self.actor, actor, start, outcome, action, limit)

    # --- policies ------------------------------------------------------------

    def apply_policy(self, text: str, filename: str, comment: str) -> View:
        from gpupool.policies.document import parse_policy_text
        from gpupool.scheduler import policies_store, repository

        document = parse_policy_text(text, filename)
        with self._work() as session:
            previous = repository.active_policy_row(session)
            row = policies_store.apply_policy(session, self.actor, document, comment)
            return _replacing(policies_store.version_view(row), previous)

    def show_policy(self, version: str | None) -> View:
        from gpupool.scheduler import policies_store

        number = None if version is None else policies_store.parse_version(version)
        with self._work() as session:
            from gpupool.scheduler.permissions import authorize

            authorize(session, self.actor, "policy.read")
            row = policies_store.get_version(session, number)
            return {**policies_store.version_view(row), "document": row.document}

    def policy_history(self) -> list[View]:
        from gpupool.scheduler import policies_store

        return self._read(
            "policy.read",
            lambda s: [policies_store.version_view(r) for r in policies_store.list_versions(s)],
        )

    def diff_policies(self, old: str, new: str) -> View:
        from gpupool.scheduler import policies_store

        first = policies_store.parse_version(old, location="V1")
        second = policies_store.parse_version(new, location="V2")
        result = self._read("policy.read", lambda s: policies_store.diff_versions(s, first, second))
        return {
            "old": result.old,
            "new": result.new,
            "changes": list(result.changes),
            "diff": result.unified,
        }

    def rollback_policy(self, version: str, comment: str) -> View:
        from gpupool.scheduler import policies_store, repository

        number = policies_store.parse_version(version)
        with self._work() as session:
            previous = repository.active_policy_row(session)
            row = policies_store.rollback_policy(session, self.actor, number, comment)
            return _replacing(policies_store.version_view(row), previous)

    def whatif(self, text: str, filename: str, since: str, until: str | None, files) -> View:
        from gpupool.policies.document import parse_policy_text
        from gpupool.scheduler import clock
        from gpupool.scheduler.permissions import authorize
        from gpupool.scheduler.queries import whatif
        from gpupool.simulations import from_db

        document = parse_policy_text(text, filename)
        now = clock.utcnow()
        from_db.parse_since(since, from_db.parse_until(until, now))  # bad dates: no database
        with self._work() as session:
            authorize(session, self.actor, "policy.whatif")  # replays every org's jobs
            return whatif(session, document, filename, since, until, now, files)

    # --- accounting ----------------------------------------------------------

    def list_programmes(self) -> list[View]:
        from gpupool.scheduler import accounts

        with self._work() as session:
            return accounts.list_programmes(session, self.actor)

    def add_programmes(self, declarations: list[dict] | None, path: str | None) -> list[View]:
        from gpupool.accounting.declarations import parse_programmes
        from gpupool.scheduler import accounts

        if path is not None:
            from gpupool import located_yaml
            from gpupool.files import PROGRAMMES

            programmes = parse_programmes(located_yaml.load(path, PROGRAMMES), path)
        else:
            programmes = parse_programmes(declarations, "programme")
        with self._work() as session:
            rows = [accounts.add_programme(session, self.actor, p) for p in programmes]
            return [accounts.programme_view(r) for r in rows]

    def list_vouchers(self, org: str | None) -> list[View]:
        from gpupool.scheduler import accounts

        with self._work() as session:
            return accounts.list_vouchers(session, self.actor, org)

    def award_voucher(self, org, programme, amount, expires, at) -> View:
        from gpupool.accounting.periods import parse_instant
        from gpupool.scheduler import accounts

        awarded = None if at is None else parse_instant(at, "--at")
        expiry = None if expires is None else parse_instant(expires, "--expires")
        with self._work() as session:
            row = accounts.award_voucher(
                session, self.actor, org, programme, amount, now=awarded, expires_at=expiry
            )
            return accounts.voucher_view(row)

    def usage_report(self, period: str | None, by: str) -> list[View]:
        from gpupool.scheduler.queries import usage_report

        with self._work() as session:
            return usage_report(session, self.actor, period, by)

    def subsidy_report(self, programme: str | None) -> list[View]:
        from gpupool.scheduler.queries import subsidy_report

        with self._work() as session:
            return subsidy_report(session, self.actor, programme)

    def export(self, kind: str, site: str | None, resources: dict, gres: dict) -> View:
        from gpupool.scheduler.exporting import export

        with self._work() as session:
            return export(session, self.actor, kind, site, resources, gres)

    def burn_down_chart(self, programme: str | None, fmt: str) -> bytes:
        from gpupool.scheduler.queries import burn_down_chart

        with self._work() as session:
            return burn_down_chart(session, self.actor, programme, fmt)


def _replacing(view: dict, previous) -> dict:
    return {**view, "replaces": None if previous is None else previous.version}

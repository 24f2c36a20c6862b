"""Group commit for POST /api/v1/jobs: concurrent submissions share one transaction.

Each worker process batches the submissions that arrive together
(gpupool.server.batching) and writes them with
gpupool.scheduler.service.submit_each in one transaction; each request is
answered only after that commit. So:

- nothing is acknowledged before it is committed (a server that dies before
  the commit has answered none of the group, and a client retries with its key);
- each submission is checked exactly as a lone one (role, own organisation,
  priority boost, fields, per-organisation key) and gets its own job id, or
  its own error: a refused or invalid one does not sink the others, and a
  refusal is audited (outcome denied) as it would be alone;
- if the group's transaction fails as a whole (a database error), each of its
  submissions is tried again alone, so one cannot take the others down with it.

Under load this turns many small transactions (a BEGIN, the role check, the
largest-gang read, the insert, a COMMIT each) into one per group.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine

from gpupool.server.batching import Batcher

log = logging.getLogger("gpupool.server.submissions")
MAX_GROUP = 64  # submissions per transaction: bounds one transaction's length


class GroupCommit:
    def __init__(self, engine: Engine, max_group: int = MAX_GROUP) -> None:
        self.engine = engine
        self.batcher = Batcher(self.commit, "gpupool-group-commit", max_group)

    async def submit(self, actor: str, request) -> tuple[int, bool]:
        """``(job id, created)`` once committed; raises the submission's own error."""
        return await self.batcher.submit((actor, request))

    def close(self) -> None:
        self.batcher.close()

    def commit(self, submissions: Sequence[tuple[str, object]]) -> list:
        """Each submission's ``(job id, created)`` or exception, committed together."""
        from gpupool.scheduler.database import unit_of_work
        from gpupool.scheduler.permissions import record_denial
        from gpupool.scheduler.service import submit_each

        try:
            with unit_of_work(self.engine) as session:
                outcomes = submit_each(session, submissions)
        except Exception as exc:
            if len(submissions) == 1:
                return [exc]
            log.warning("group of %d submissions failed (%s); each alone", len(submissions), exc)
            return [self._alone(actor, request) for actor, request in submissions]
        for outcome in outcomes:
            entry = getattr(outcome, "audit_entry", None)
            if entry is not None:  # a refusal: its audit row, as a lone submission writes it
                record_denial(self.engine, entry)
        return outcomes

    def _alone(self, actor: str, request) -> object:
        from gpupool.scheduler.database import unit_of_work
        from gpupool.scheduler.service import submit_job

        try:
            with unit_of_work(self.engine) as session:  # audits its own refusal
                return submit_job(session, actor, request)
        except Exception as exc:
            return exc

"""Policy versions in the database (gpupool.scheduler.policies_store), SQLite and PostgreSQL.

Append-only history, one active version, audit rows whose before/after name the
previous and the new version, nothing written when the document or the actor is
refused, and rounds built from the active version.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from gpupool.model import GpupoolError, NotFound, PermissionDenied
from gpupool.policies.document import PolicyDocumentError
from gpupool.scheduler import policies_store as store
from gpupool.scheduler import repository
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, PolicyVersionRow, UserRow
from tests.conftest import add_users, build_small_platform

T0 = dt.datetime(2026, 10, 5, 8, 0, tzinfo=dt.UTC)

FIFO = "# the baseline\nkind: fifo\nsubsidy: {domain_rates: {medical: 0.5}}\n"
MULTIFACTOR = """\
kind: multifactor
domains:
  medical: {weight: 3.0, guarantee: {fraction: 0.25}}
  general: {weight: 1.0}
subsidy:
  domain_rates: {medical: 0.6, general: 0.1}
  gpu_type_rates: {H100: 0.2}
  period_budget: 100
"""


@pytest.fixture
def db(db):
    """The small platform (the documents name its domains and GPU types) with three more
    admins, so the history shows who applied what."""
    with unit_of_work(db) as session:
        build_small_platform(session)
    add_users(db, ("alice", "admin"), ("bob", "admin"), ("carol", "admin"))
    return db


def _apply(db, text, actor="alice", comment="", at=T0):
    with unit_of_work(db) as session:
        return store.apply_policy_text(session, actor, text, "p.yaml", comment, at).version


def _audit(db):
    with unit_of_work(db) as session:
        query = (
            select(AuditLogRow).where(AuditLogRow.target.like("policy%")).order_by(AuditLogRow.id)
        )
        rows = session.scalars(query).all()
        return [(r.actor, r.action, r.target, r.before, r.after, r.outcome) for r in rows]


def _versions(db):
    with unit_of_work(db) as session:
        return [
            (r.version, r.kind, r.active, r.comment, r.applied_by)
            for r in store.list_versions(session)
        ]


def test_apply_history_diff_rollback_round_trip(db):
    assert _apply(db, FIFO, comment=" baseline ") == 1
    assert _apply(db, MULTIFACTOR, actor="bob", comment="medical first") == 2
    with unit_of_work(db) as session:
        rollback = store.rollback_policy(session, "carol", 1, "too aggressive", T0)
        assert rollback.version == 3
    assert _versions(db) == [
        (1, "fifo", False, "baseline", "alice"),
        (2, "multifactor", False, "medical first", "bob"),
        (3, "fifo", True, "rollback to v1: too aggressive", "carol"),
    ]
    with unit_of_work(db) as session:
        assert store.get_version(session, None).document == FIFO  # the text, comments kept
        assert store.version_view(store.get_version(session, 2)) == {
            "version": 2,
            "kind": "multifactor",
            "applied_by": "bob",
            "applied_at": "2026-10-05T08:00:00Z",
            "active": False,
            "comment": "medical first",
        }
    assert _audit(db) == [
        ("alice", "policy.apply", "policy v1", None,
         {"version": 1, "kind": "fifo", "comment": "baseline"}, "ok"),
        ("bob", "policy.apply", "policy v2",
         {"version": 1, "kind": "fifo", "comment": "baseline"},
         {"version": 2, "kind": "multifactor", "comment": "medical first"}, "ok"),
        ("carol", "policy.rollback", "policy v3",
         {"version": 2, "kind": "multifactor", "comment": "medical first"},
         {"version": 3, "kind": "fifo", "comment": "rollback to v1: too aggressive"}, "ok"),
    ]  # fmt: skip


def test_diff_summarises_weights_shares_and_subsidies(db):
    _apply(db, FIFO)
    _apply(db, MULTIFACTOR)
    with unit_of_work(db) as session:
        diff = store.diff_versions(session, 1, 2)
        same = store.diff_versions(session, 2, 2)
    assert diff.changes == (
        "kind: fifo -> multifactor",
        "domain medical weight: 1 -> 3",
        "domain medical guarantee: none -> {fraction: 0.25}",
        "subsidy rate for domain general: 0 -> 0.1",
        "subsidy rate for domain medical: 0.5 -> 0.6",
        "subsidy rate on GPU type H100: 0 -> 0.2",
        "subsidy period_budget: none -> 100",
    )
    assert diff.unified.startswith("--- v1\n+++ v2\n@@")
    assert "-kind: fifo\n+kind: multifactor\n" in diff.unified
    assert (
        "   domain_rates:\n-    medical: 0.5\n-  gpu_type_rates: {}\n+    general: 0.1\n"
        "+    medical: 0.6\n+  gpu_type_rates:\n+    H100: 0.2\n"
    ) in diff.unified
    assert (same.unified, same.changes) == ("", ())


def test_reformatting_is_not_a_change(db):
    _apply(db, "kind: fifo\nsubsidy: {domain_rates: {medical: 0.5}}\n")
    _apply(db, "# same policy\nkind: fifo\nsubsidy:\n  domain_rates:\n    medical: 0.50\n")
    with unit_of_work(db) as session:
        diff = store.diff_versions(session, 1, 2)
    assert (diff.unified, diff.changes) == ("", ())


def test_an_invalid_document_writes_nothing(db):
    _apply(db, FIFO)
    with pytest.raises(PolicyDocumentError) as caught:
        _apply(db, "kind: multifactor\ndomains:\n  medical: {weight: -1}\n")
    assert caught.value.problems == [("p.yaml:3 domains.medical.weight", "must be > 0")]
    assert [v[0] for v in _versions(db)] == [1]
    assert len(_audit(db)) == 1
    with unit_of_work(db) as session:
        assert repository.active_policy_row(session).version == 1


def test_a_submitter_may_not_apply_or_roll_back(db):
    with unit_of_work(db) as session:
        session.add(
            UserRow(name="sam", role="submitter", org_id=repository.get_org(session, "lab").id)
        )
    _apply(db, FIFO)
    _apply(db, MULTIFACTOR)
    audit_before = [a for a in _audit(db) if a[5] == "ok"]
    with pytest.raises(PermissionDenied, match="sam may not apply policies: admins only"):
        _apply(db, FIFO, actor="sam")
    with (
        pytest.raises(PermissionDenied, match="sam may not roll back policies"),
        unit_of_work(db) as session,
    ):
        store.rollback_policy(session, "sam", 1)
    assert [v[0] for v in _versions(db)] == [1, 2]
    assert [a for a in _audit(db) if a[5] == "ok"] == audit_before
    assert [(a[0], a[1], a[2]) for a in _audit(db) if a[5] == "denied"] == [
        ("sam", "apply policies", "policy"),
        ("sam", "roll back policies", "policy v1"),
    ]


def test_unknown_versions_and_bad_version_text(db):
    with unit_of_work(db) as session:
        with pytest.raises(NotFound, match="no policy has been applied; rounds use the FIFO"):
            store.get_version(session, None)
        with pytest.raises(NotFound, match=r"no policy version 4 \(no policy has been applied"):
            store.get_version(session, 4)
    _apply(db, FIFO)
    _apply(db, FIFO)
    with unit_of_work(db) as session:
        with pytest.raises(NotFound) as caught:
            store.get_version(session, 7)
        assert str(caught.value) == "VERSION: no policy version 7 (versions 1..2)"
        with pytest.raises(NotFound, match="V2: no policy version 9"):
            store.diff_versions(session, 1, 9)
        with pytest.raises(GpupoolError, match="VERSION: v2 is already the active policy"):
            store.rollback_policy(session, "alice", 2)
    assert [v[0] for v in _versions(db)] == [1, 2]


@pytest.mark.parametrize(("text", "number"), [("3", 3), ("v12", 12), (" V1 ", 1)])
def test_parse_version(text, number):
    assert store.parse_version(text) == number


@pytest.mark.parametrize("text", ["0", "v", "-1", "three", "1.5", ""])
def test_parse_version_refuses(text):
    with pytest.raises(GpupoolError, match="not a policy version"):
        store.parse_version(text)


def test_rounds_use_the_active_version_and_its_subsidy_rules(db):
    from gpupool.scheduler.rounds import active_policy

    with unit_of_work(db) as session:
        default = active_policy(session)
    assert (default.version, default.kind, default.pricing) == (None, "fifo", None)
    _apply(db, MULTIFACTOR)
    with unit_of_work(db) as session:
        active = active_policy(session)
    assert (active.version, active.kind, type(active.policy).__name__) == (
        1,
        "multifactor",
        "MultifactorPolicy",
    )
    assert active.policy.params.weight("medical") == 3.0
    assert dict(active.pricing.domain_rates) == {"general": 0.1, "medical": 0.6}
    assert active.pricing.period_budget == 100


def test_concurrent_applies_get_distinct_versions(db):
    add_users(db, *((f"admin{i}", "admin") for i in range(4)))
    errors = []

    def apply_one(name):
        try:
            _apply(db, FIFO, actor=name)
        except Exception as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=apply_one, args=(f"admin{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = _versions(db)
    assert [v[0] for v in versions] == [1, 2, 3, 4]
    assert [v[2] for v in versions] == [False, False, False, True]
    with unit_of_work(db) as session:
        assert session.scalar(select(func.count()).select_from(PolicyVersionRow)) == 4
    befores = sorted((a[3] or {}).get("version", 0) for a in _audit(db))
    assert befores == [0, 1, 2, 3]  # each apply saw the one before it as active

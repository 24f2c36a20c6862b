"""API tokens (gpupool.scheduler.tokens): create, authenticate, expire, revoke; both databases.

Users: ada (admin), alice (submitter for hosp), bob (submitter for lab), added by
the local owner on build_small_platform's platform.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select, text

from gpupool.model import AuthenticationFailed, GpupoolError, NotFound, PermissionDenied
from gpupool.scheduler import permissions, tokens
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import ApiTokenRow, AuditLogRow
from tests.conftest import SQLITE_ONLY

OWNER = permissions.OWNER
T0 = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def users(platform):
    with unit_of_work(platform) as session:
        permissions.add_user(session, OWNER, "ada", "admin")
        permissions.add_user(session, OWNER, "alice", "submitter", "hosp")
        permissions.add_user(session, OWNER, "bob", "submitter", "lab")
    tokens.clear_cache()
    return platform


def _create(db, user, actor="ada", **options):
    with unit_of_work(db) as session:
        row, raw = tokens.create_token(session, actor, user, **options)
        return row.token_id, raw


def _authenticate(db, raw, now=None):
    with unit_of_work(db) as session:
        return tokens.authenticate(session, raw, now).name


def _refused(db, raw, now=None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        _authenticate(db, raw, now)
    assert str(info.value) == "token: invalid or expired token"  # one message for every reason
    return info.value


def _audit(db, since=0):
    with unit_of_work(db) as session:
        query = select(AuditLogRow).where(AuditLogRow.id > since).order_by(AuditLogRow.id)
        return [(r.actor, r.action, r.target, r.outcome, r.after) for r in session.scalars(query)]


def _last_audit_id(db) -> int:
    with unit_of_work(db) as session:
        return session.scalar(select(func.max(AuditLogRow.id))) or 0


def test_a_token_authenticates_its_user_and_has_the_documented_shape(users):
    token_id, raw = _create(users, "alice")
    assert re.fullmatch(r"gpt_[a-z0-9]{8}_[A-Za-z0-9_-]{43}", raw)
    assert raw.startswith(f"gpt_{token_id}_")
    assert tokens.token_prefix(raw) == token_id
    assert _authenticate(users, raw) == "alice"
    assert _authenticate(users, raw) == "alice"  # again (from the verified cache)
    other_id, other = _create(users, "bob")
    assert other_id != token_id and _authenticate(users, other) == "bob"


def test_the_database_holds_a_salted_scrypt_hash_never_the_secret(users):
    token_id, raw = _create(users, "alice")
    secret = raw.split("_", 2)[2]
    with unit_of_work(users) as session:
        stored = session.execute(text("SELECT * FROM api_tokens")).one()
        assert not any(secret in str(value) for value in stored)
        row = session.scalars(select(ApiTokenRow)).one()
        assert row.token_id == token_id
        assert row.secret_hash.startswith("scrypt$n=16384,r=8,p=1$")
        assert tokens.verify_secret(secret, row.secret_hash)
        other = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        assert not tokens.verify_secret(other, row.secret_hash)
        audit_text = str(session.execute(text("SELECT * FROM audit_log")).all())
    assert secret not in audit_text and row.secret_hash not in audit_text
    # the same secret hashes differently each time (random salt)
    assert tokens.hash_secret(secret) != tokens.hash_secret(secret)


@SQLITE_ONLY  # decided in Python; refusals and audit rows on PostgreSQL: the tests below
@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("x" if raw[-1] != "x" else "y"),  # wrong secret
        lambda raw: "gpt_zzzzzzzz_" + raw.split("_", 2)[2],  # unknown id
        lambda raw: raw[:-1],  # malformed: short secret
        lambda raw: raw.replace("gpt_", "gpx_"),  # malformed prefix
        lambda raw: "",
        lambda raw: "Bearer " + raw,
        lambda raw: raw + "\n",
    ],
)
def test_every_bad_token_gets_the_same_refusal_and_an_audit_row(users, mangle):
    _, raw = _create(users, "alice")
    before = _last_audit_id(users)
    _refused(users, mangle(raw))
    ((actor, action, _target, outcome, after),) = _audit(users, before)
    assert (actor, action, outcome) == ("anonymous", "authenticate", "denied")
    assert after["reason"] in ("wrong secret", "unknown", "malformed")


def test_a_wrong_secret_is_refused_even_after_the_right_one_was_cached(users):
    _, raw = _create(users, "alice")
    assert _authenticate(users, raw) == "alice"
    wrong = raw[:-2] + ("AA" if not raw.endswith("AA") else "BB")
    error = _refused(users, wrong)
    assert error.reason == "wrong secret"


def test_expiry_is_effective_on_the_next_call(users):
    with unit_of_work(users) as session:
        row, raw = tokens.create_token(session, "ada", "bob", expires=dt.timedelta(hours=1), now=T0)
        assert row.expires_at == T0 + dt.timedelta(hours=1)
    assert _authenticate(users, raw, now=T0 + dt.timedelta(minutes=59)) == "bob"
    error = _refused(users, raw, now=T0 + dt.timedelta(hours=1))
    assert error.reason == "expired"


def test_revocation_is_effective_on_the_next_call_despite_the_cache(users):
    token_id, raw = _create(users, "alice")
    assert _authenticate(users, raw) == "alice"  # cached as verified now
    with unit_of_work(users) as session:
        view = tokens.revoke_token(session, "ada", f"gpt_{token_id}")
    assert (view["id"], view["state"], view["revoked_now"]) == (token_id, "revoked", True)
    assert _refused(users, raw).reason == "revoked"
    with unit_of_work(users) as session:  # revoking again changes nothing and is not re-audited
        assert tokens.revoke_token(session, "ada", token_id)["revoked_now"] is False
    revokes = [a for a in _audit(users) if a[1] == "token.revoke"]
    assert [(a[0], a[2], a[3]) for a in revokes] == [("ada", f"token {token_id}", "ok")]


def test_scrypt_runs_once_per_token_while_cached(users, monkeypatch):
    _, raw = _create(users, "alice")
    calls = []
    real = tokens.verify_secret
    monkeypatch.setattr(tokens, "verify_secret", lambda s, h: calls.append(1) or real(s, h))
    for _ in range(3):
        assert _authenticate(users, raw) == "alice"
    assert len(calls) == 1
    tokens.clear_cache()
    assert _authenticate(users, raw) == "alice"
    assert len(calls) == 2
    monkeypatch.setattr(tokens._verified, "ttl", 0.0)  # expired entries are verified again
    assert _authenticate(users, raw) == "alice"
    assert len(calls) == 3


def test_last_used_is_written_at_most_once_a_minute(users):
    token_id, raw = _create(users, "alice")
    _authenticate(users, raw, now=T0)
    _authenticate(users, raw, now=T0 + dt.timedelta(seconds=30))
    with unit_of_work(users) as session:
        assert tokens.list_tokens(session, "ada")[0]["last_used_at"] == "2026-11-02T10:00:00Z"
    _authenticate(users, raw, now=T0 + dt.timedelta(minutes=2))
    with unit_of_work(users) as session:
        assert tokens.list_tokens(session, "ada")[0]["last_used_at"] == "2026-11-02T10:02:00Z"


def test_only_admins_create_tokens_and_a_refusal_is_audited(users):
    before = _last_audit_id(users)
    with pytest.raises(PermissionDenied) as info, unit_of_work(users) as session:
        tokens.create_token(session, "alice", "alice")
    assert str(info.value) == "--as: alice may not create API tokens: admins only"
    assert [a[:4] for a in _audit(users, before)] == [
        ("alice", "create API tokens", "user alice", "denied")
    ]
    with unit_of_work(users) as session:
        assert session.scalar(select(func.count()).select_from(ApiTokenRow)) == 0


@SQLITE_ONLY  # validated before anything is written: no database-specific step
@pytest.mark.parametrize(
    ("user", "options", "message"),
    [
        ("nobody", {}, "USER: no user named 'nobody'"),
        ("bob", {"expires": dt.timedelta(0)}, "--expires: must be a positive duration"),
        ("bob", {"scopes": ["read", "root"]}, "--scope: must be one of read, write, got 'root'"),
    ],
)
def test_bad_token_requests_write_nothing(users, user, options, message):
    with pytest.raises(GpupoolError) as info, unit_of_work(users) as session:
        tokens.create_token(session, "ada", user, **options)
    assert str(info.value) == message
    with unit_of_work(users) as session:
        assert session.scalar(select(func.count()).select_from(ApiTokenRow)) == 0


def test_scopes_are_stored_and_narrow_what_a_token_may_do(users):
    with unit_of_work(users) as session:
        row, raw = tokens.create_token(session, "ada", "bob", scopes=["read", "read"])
        assert row.scopes == ["read"]
    with unit_of_work(users) as session:
        token = tokens.authenticate_token(session, raw)
        assert (token.user.name, token.scopes) == ("bob", ["read"])
    assert tokens.scope_allows(["read"], write=False) is True
    assert tokens.scope_allows(["read"], write=True) is False
    assert tokens.scope_allows([], write=True) is True
    assert tokens.scope_allows(["write"], write=True) is True


def test_listing_shows_no_secret_and_each_user_sees_only_its_own(users):
    alice_id, _ = _create(users, "alice")
    bob_id, _ = _create(users, "bob", expires=dt.timedelta(days=90), scopes=["read"])
    with unit_of_work(users) as session:
        every = tokens.list_tokens(session, "ada")
        bobs = tokens.list_tokens(session, "ada", user="bob")
        own = tokens.list_tokens(session, "alice")
        own_named = tokens.list_tokens(session, "alice", user="alice")
    assert [t["id"] for t in every] == [alice_id, bob_id]
    assert [t["id"] for t in bobs] == [bob_id] and bobs[0]["scopes"] == ["read"]
    assert [t["id"] for t in own] == [t["id"] for t in own_named] == [alice_id]
    assert set(every[0]) == {
        "id", "user", "scopes", "state", "created_at", "created_by",
        "expires_at", "revoked_at", "last_used_at",
    }  # fmt: skip
    assert every[0]["state"] == "active" and every[0]["created_by"] == "ada"
    with pytest.raises(PermissionDenied), unit_of_work(users) as session:
        tokens.list_tokens(session, "alice", user="bob")
    with pytest.raises(PermissionDenied), unit_of_work(users) as session:
        tokens.list_tokens(session, "mallory")


def test_a_user_revokes_its_own_tokens_but_not_anothers(users):
    alice_id, alice_raw = _create(users, "alice")
    bob_id, _ = _create(users, "bob")
    with pytest.raises(PermissionDenied) as info, unit_of_work(users) as session:
        tokens.revoke_token(session, "alice", bob_id)
    assert str(info.value) == "--as: alice may not revoke API tokens of another user"
    with unit_of_work(users) as session:
        assert tokens.revoke_token(session, "alice", alice_raw)["revoked_now"] is True
    with pytest.raises(NotFound) as info, unit_of_work(users) as session:
        tokens.revoke_token(session, "ada", "gpt_00000000")
    assert str(info.value) == "ID: no token with id 'gpt_00000000'"
    with unit_of_work(users) as session:
        states = {t["id"]: t["state"] for t in tokens.list_tokens(session, "ada")}
    assert states == {alice_id: "revoked", bob_id: "active"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", dt.timedelta(days=90)),
        ("12h", dt.timedelta(hours=12)),
        ("30m", dt.timedelta(minutes=30)),
        ("2w", dt.timedelta(weeks=2)),
        ("never", None),
    ],
)
def test_durations(text, expected):
    assert tokens.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0d", "90", "d", "-1d", "1y", "1.5d"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(GpupoolError) as info:
        tokens.parse_duration(text)
    assert info.value.location == "--expires"


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ("gpt_abcd1234_" + "x" * 43, "abcd1234"),
        ("gpt_abcd1234_short", "abcd1234"),  # a bad secret still has an id to rate-limit on
        ("gpt_ABCD1234_" + "x" * 43, None),
        ("bearer", None),
        (None, None),
        ("gpt_abcd1234_" + "x" * 500, None),
    ],
)
def test_token_prefix(raw, prefix):
    assert tokens.token_prefix(raw) == prefix


def test_identify_reads_revocation_from_the_row_even_for_a_cached_token(users):
    from gpupool.scheduler.database import make_engine

    token_id, raw = _create(users, "alice", scopes=["read"])
    engine = make_engine(users)
    try:
        with engine.begin() as connection:
            bearer = tokens.identify(connection, raw)
        assert bearer == tokens.Bearer(token_id, "alice", "submitter", ("read",))
        with unit_of_work(users) as session:
            tokens.revoke_token(session, "ada", token_id)
        with engine.begin() as connection, pytest.raises(AuthenticationFailed) as info:
            tokens.identify(connection, raw)  # the cache still holds the secret
        assert info.value.audit_entry["after"] == {"reason": "revoked"}
    finally:
        engine.dispose()


def test_requests_arriving_together_with_one_token_pay_one_scrypt(users, monkeypatch):
    import threading

    _, raw = _create(users, "alice")
    tokens.clear_cache()
    calls = []
    real = tokens.verify_secret
    monkeypatch.setattr(tokens, "verify_secret", lambda s, h: calls.append(1) or real(s, h))
    start = threading.Barrier(4)
    names = []

    def request() -> None:
        start.wait()
        names.append(_authenticate(users, raw))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert names == ["alice"] * 4
    assert len(calls) == 1

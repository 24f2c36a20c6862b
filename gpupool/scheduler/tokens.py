"""API tokens: create, authenticate, list, revoke (see docs/security.md).

A token reads ``gpt_<id>_<secret>``: ``id`` is 8 characters of [a-z0-9], public
(safe to log, shown by `token list`, the key failed attempts are rate-limited
on); ``secret`` is ``secrets.token_urlsafe(32)`` (43 characters, 256 bits). The
raw token is returned once by :func:`create_token` and never stored: the
database keeps the id and a scrypt hash of the secret with its random salt and
its cost parameters (``scrypt$n=16384,r=8,p=1$<salt>$<hash>``), so the cost can
be raised later for new tokens without invalidating old ones. Hashes are
compared with ``hmac.compare_digest``. No crypto is invented here: stdlib
``secrets``, ``hashlib.scrypt``, ``hmac``.

Who may do what:
- ``create_token``: admins only, for any user (audited). A user may not mint
  tokens for itself: a token with a short expiry or narrow scopes could
  otherwise make itself a longer-lived or wider one.
- ``list_tokens``: admins and auditors see every token; anyone else its own.
- ``revoke_token``: admins any token; anyone its own (revoking only removes
  power). Audited.

Scopes narrow a token below its user's role: none means everything the role
allows; ``read`` allows only reads; ``write`` reads and writes (the same as
none, written out). The HTTP layer asks :func:`scope_allows` per request.

Verification cost and the cache: scrypt at n=2**14 costs tens of
milliseconds of one core, which alone would cap a server at a few dozen
requests per second per core. :func:`authenticate` therefore keeps a small
in-process cache of *verified* tokens, keyed by the SHA-256 of the raw token
(never the token itself), holding the stored hash it was verified against.
Every request still reads the token row (one indexed lookup) and checks
revocation and expiry there, so a revoke or an expiry is effective on the
next request in every process; the cache only skips re-running scrypt for a
secret that matched the same stored hash within the last ``CACHE_TTL``
seconds (an hour). Trade-off: a process remembers, for up to an hour, that a
secret was right (in memory only, as a SHA-256 of a 256-bit random secret,
which is no easier to invert than the scrypt hash in the database); failures
are never cached, so each wrong guess costs a full scrypt (rate-limit them by
:func:`token_prefix`). The TTL was 10 s: then every busy token paid a scrypt
(~0.15 s of a core, its other requests waiting behind it) every 10 s, a fifth
of a loaded server's CPU and the source of its multi-second p99.

A server checks tokens with :func:`identify` (one Core SELECT of the token
and its user); :func:`authenticate_token` is the same check for callers that
want the ORM row.

``last_used_at`` is written at most once per ``LAST_USED_EVERY`` per token, so
requests are not all writes; it is a "used around then" hint, not a log.

Every failure raises AuthenticationFailed with one generic message; the
reason (unknown, malformed, expired, revoked, wrong secret) goes only into its
``audit_entry``, which the unit of work writes as a ``denied`` audit row.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from gpupool.model import AuthenticationFailed, GpupoolError, NotFound
from gpupool.scheduler import clock, permissions, repository
from gpupool.scheduler.clock import parse_duration  # noqa: F401  (tokens.parse_duration)
from gpupool.scheduler.orm import ApiTokenRow, UserRow

PREFIX = "gpt"
ID_LENGTH = 8
_ID_ALPHABET = string.ascii_lowercase + string.digits
SECRET_BYTES = 32  # token_urlsafe(32): 43 characters
SCOPES = ("read", "write")
_TOKEN = re.compile(rf"{PREFIX}_([a-z0-9]{{{ID_LENGTH}}})_([A-Za-z0-9_-]{{43}})")
_ID = re.compile(rf"(?:{PREFIX}_)?([a-z0-9]{{{ID_LENGTH}}})(?:_.*)?")

CACHE_TTL = 3600.0  # seconds a verified secret is trusted without re-running scrypt
CACHE_SIZE = 1024  # tokens remembered at once (least recently used dropped first)
LAST_USED_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class ScryptCost:
    n: int = 2**14
    r: int = 8
    p: int = 1

    def text(self) -> str:
        return f"n={self.n},r={self.r},p={self.p}"

    def sane(self) -> bool:
        """Bounds on what a stored hash may ask of us (a tampered row must not
        make each request allocate gigabytes)."""
        power_of_two = self.n > 1 and self.n & (self.n - 1) == 0
        return power_of_two and self.n <= 2**20 and 1 <= self.r <= 32 and 1 <= self.p <= 16


COST = ScryptCost()


# ---------------------------------------------------------------------------
# Secrets and their hashes
# ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, cost: ScryptCost) -> bytes:
    memory = 128 * cost.r * (cost.n + cost.p + 2) + 2**20
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p, maxmem=memory, dklen=32
    )


def hash_secret(secret: str, cost: ScryptCost = COST) -> str:
    salt = secrets.token_bytes(16)
    return f"scrypt${cost.text()}${_b64(salt)}${_b64(_scrypt(secret, salt, cost))}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``; False for any malformed stored value."""
    try:
        scheme, params, salt, expected = stored.split("$")
        fields = dict(item.split("=") for item in params.split(","))
        cost = ScryptCost(int(fields["n"]), int(fields["r"]), int(fields["p"]))
        salt_bytes, expected_bytes = _unb64(salt), _unb64(expected)
    except (ValueError, KeyError):
        return False
    if scheme != "scrypt" or not cost.sane():
        return False
    return hmac.compare_digest(_scrypt(secret, salt_bytes, cost), expected_bytes)


# ---------------------------------------------------------------------------
# The verified-token cache
# ---------------------------------------------------------------------------


class _VerifiedCache:
    """sha256(raw token) -> (the stored hash it matched, when): bounded, long-lived."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._verifying: weakref.WeakValueDictionary[bytes, threading.Lock] = (
            weakref.WeakValueDictionary()
        )

    def matched(self, key: bytes, stored_hash: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if time.monotonic() - entry[1] > self.ttl or entry[0] != stored_hash:
                del self._entries[key]
                return False
            self._entries.move_to_end(key)
            return True

    def remember(self, key: bytes, stored_hash: str) -> None:
        with self._lock:
            self._entries[key] = (stored_hash, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def verify_once(self, key: bytes, stored_hash: str, verify) -> bool:
        """``verify()`` (a scrypt) unless the cache holds the answer; callers with
        the same token take turns, so requests arriving together with a token the
        cache lacks pay one scrypt, not one each (parallel scrypts, 16 MiB each,
        thrash memory: 8 together took over 7 s on the 2-core machine). Only a
        miss takes the turn; a cached token is never held up."""
        if self.matched(key, stored_hash):
            return True
        with self._lock:
            turn = self._verifying.get(key)
            if turn is None:
                turn = threading.Lock()
                self._verifying[key] = turn  # weakly held: gone once nobody waits
        with turn:
            if self.matched(key, stored_hash):  # verified while this one waited
                return True
            if not verify():
                return False
            self.remember(key, stored_hash)
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_verified = _VerifiedCache(CACHE_SIZE, CACHE_TTL)


def clear_cache() -> None:
    """Forget every verified token (tests; a process that wants scrypt every time)."""
    _verified.clear()


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def token_prefix(raw_token: str | None) -> str | None:
    """The public id of something shaped like a token (``gpt_<id>_...``), else None.

    Safe to log and to rate-limit on; it says nothing about whether the token
    is valid.
    """
    if not isinstance(raw_token, str) or len(raw_token) > 200:
        return None
    match = re.match(rf"{PREFIX}_([a-z0-9]{{{ID_LENGTH}}})_", raw_token)
    return match.group(1) if match else None


def _parse(raw_token: object) -> tuple[str, str] | None:
    if not isinstance(raw_token, str):
        return None
    match = _TOKEN.fullmatch(raw_token)
    return (match.group(1), match.group(2)) if match else None


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


def create_token(
    session: Session,
    actor: str,
    user: str,
    expires: dt.timedelta | None = None,
    scopes: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> tuple[ApiTokenRow, str]:
    """A new token for ``user`` (admins only); returns the row and the raw token,
    which exists nowhere else: show it once."""
    name = (user or "").strip()
    permissions.require_admin(session, actor, "create API tokens", f"user {name}")
    user_row = repository.find_user(session, name)
    if user_row is None:
        raise NotFound(f"no user named {name!r}", location="USER")
    if expires is not None and expires <= dt.timedelta(0):
        raise GpupoolError("must be a positive duration", location="--expires")
    now = now or clock.utcnow()
    token_id, secret = _new_id(session), secrets.token_urlsafe(SECRET_BYTES)
    row = ApiTokenRow(
        token_id=token_id,
        secret_hash=hash_secret(secret),
        user_id=user_row.id,
        scopes=_check_scopes(scopes),
        created_at=now,
        created_by=actor,
        expires_at=None if expires is None else now + expires,
    )
    session.add(row)
    session.flush()
    row.user = user_row
    permissions.audit(session, actor, "token.create", f"token {token_id}", after=token_view(row))
    return row, f"{PREFIX}_{token_id}_{secret}"


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    chosen = []
    for scope in scopes:
        scope = (scope or "").strip()
        if scope not in SCOPES:
            raise GpupoolError(
                f"must be one of {', '.join(SCOPES)}, got {scope!r}", location="--scope"
            )
        if scope not in chosen:
            chosen.append(scope)
    return sorted(chosen)


def _new_id(session: Session) -> str:
    while True:  # 36**8 ids: a clash is rare, but the column is unique, so check
        candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
        taken = session.scalar(select(ApiTokenRow.id).where(ApiTokenRow.token_id == candidate))
        if taken is None:
            return candidate


def authenticate_token(
    session: Session, raw_token: str, now: dt.datetime | None = None
) -> ApiTokenRow:
    """The valid token row (with ``.user`` and ``.scopes``) ``raw_token`` names.

    Raises AuthenticationFailed, always with the same message.
    """
    token_id, secret = _parsed_or_fail(raw_token)
    row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.token_id == token_id)).one_or_none()
    if row is None:
        raise _failed("unknown", token_id)
    now = now or clock.utcnow()
    _check(raw_token, token_id, secret, row.secret_hash, row.revoked_at, row.expires_at, now)
    if _last_used_due(row.last_used_at, now):
        row.last_used_at = now
    return row


@dataclass(frozen=True)
class Bearer:
    """Who a valid token speaks for, as one request needs it (:func:`identify`)."""

    token_id: str
    user: str
    role: str
    scopes: tuple[str, ...]


# What a request's token check reads, for every token of the requests at hand at once.
_BEARERS_QUERY = (
    select(
        ApiTokenRow.token_id,
        ApiTokenRow.secret_hash,
        ApiTokenRow.revoked_at,
        ApiTokenRow.expires_at,
        ApiTokenRow.last_used_at,
        ApiTokenRow.scopes,
        UserRow.name,
        UserRow.role,
    )
    .join_from(ApiTokenRow, UserRow, ApiTokenRow.user_id == UserRow.id)
    .where(ApiTokenRow.token_id.in_(bindparam("token_ids", expanding=True)))
)


def identify(connection: Connection, raw_token: str, now: dt.datetime | None = None) -> Bearer:
    """:func:`authenticate_token` for a server's request: the same checks in one
    SELECT (token joined with its user; no ORM objects), and the rare
    ``last_used_at`` write as its own statement. The caller commits; an
    AuthenticationFailed carries the audit entry to record."""
    outcome = identify_many(connection, [raw_token], now)[0]
    if isinstance(outcome, AuthenticationFailed):
        raise outcome
    return outcome


def identify_many(
    connection: Connection, raw_tokens: Sequence[str], now: dt.datetime | None = None
) -> list[Bearer | AuthenticationFailed]:
    """:func:`identify` for requests that arrived together: one SELECT for all their
    tokens, then each token checked on its own (its Bearer, or its AuthenticationFailed)."""
    now = now or clock.utcnow()
    parsed = [_parse(raw) for raw in raw_tokens]
    token_ids = sorted({parts[0] for parts in parsed if parts is not None})
    rows = {}
    if token_ids:
        found = connection.execute(_BEARERS_QUERY, {"token_ids": token_ids})
        rows = {row.token_id: row for row in found}
    stamped: set[str] = set()
    outcomes: list[Bearer | AuthenticationFailed] = []
    for raw_token, parts in zip(raw_tokens, parsed, strict=True):
        try:
            outcomes.append(_bearer(connection, raw_token, parts, rows, now, stamped))
        except AuthenticationFailed as exc:
            outcomes.append(exc)
    return outcomes


def _bearer(connection, raw_token, parts, rows, now, stamped: set[str]) -> Bearer:
    if parts is None:
        raise _failed("malformed", None)
    token_id, secret = parts
    row = rows.get(token_id)
    if row is None:
        raise _failed("unknown", token_id)
    _check(raw_token, token_id, secret, row.secret_hash, row.revoked_at, row.expires_at, now)
    if token_id not in stamped and _last_used_due(row.last_used_at, now):
        stamp = update(ApiTokenRow).where(ApiTokenRow.token_id == token_id)
        connection.execute(stamp.values(last_used_at=now))
        stamped.add(token_id)
    return Bearer(token_id, row.name, row.role, tuple(row.scopes or ()))


def _parsed_or_fail(raw_token: str) -> tuple[str, str]:
    parsed = _parse(raw_token)
    if parsed is None:
        raise _failed("malformed", None)
    return parsed


def _check(raw_token, token_id, secret, secret_hash, revoked_at, expires_at, now) -> None:
    """Revocation and expiry from the row just read, then the secret (scrypt, unless
    this process verified the same secret against the same stored hash recently)."""
    if revoked_at is not None:
        raise _failed("revoked", token_id)
    if expires_at is not None and expires_at <= now:
        raise _failed("expired", token_id)
    key = hashlib.sha256(raw_token.encode("utf-8")).digest()
    if not _verified.verify_once(key, secret_hash, lambda: verify_secret(secret, secret_hash)):
        raise _failed("wrong secret", token_id)


def _last_used_due(last_used_at: dt.datetime | None, now: dt.datetime) -> bool:
    return last_used_at is None or now - last_used_at >= LAST_USED_EVERY


def authenticate(session: Session, raw_token: str, now: dt.datetime | None = None) -> UserRow:
    """The user a valid token belongs to; AuthenticationFailed otherwise."""
    return authenticate_token(session, raw_token, now).user


def scope_allows(scopes: Sequence[str], write: bool) -> bool:
    """Whether a token with ``scopes`` may make a read (or, ``write``, a write) request."""
    if not scopes or "write" in scopes:
        return True
    return not write


def _failed(reason: str, token_id: str | None) -> AuthenticationFailed:
    error = AuthenticationFailed(reason)
    # written by the unit of work, in its own transaction, as outcome 'denied'
    error.audit_entry = {
        "actor": "anonymous",
        "action": "authenticate",
        "target": f"token {token_id}" if token_id else "token (malformed)",
        "after": {"reason": reason},
    }
    return error


def list_tokens(session: Session, actor: str, user: str | None = None) -> list[dict]:
    """Tokens (never secrets or hashes), oldest first: every user's for admins and
    auditors, one's own for anyone else."""
    own = permissions.sees_all_tokens(session, actor, "list API tokens") is False
    if own and user is not None and user.strip() != actor:
        raise permissions.Denied(
            f"{actor} may not list another user's tokens", actor, "list API tokens", f"user {user}"
        )
    query = select(ApiTokenRow).join(ApiTokenRow.user).order_by(ApiTokenRow.id)
    name = actor if own else (user.strip() if user else None)
    if name is not None:
        query = query.where(UserRow.name == name)
    now = clock.utcnow()
    return [token_view(row, now) for row in session.scalars(query).unique()]


def revoke_token(session: Session, actor: str, token_id_or_prefix: str) -> dict:
    """Revoke a token (idempotent); returns its view, with ``revoked_now``.

    Accepts the id (``k3x9q2mz``), ``gpt_k3x9q2mz`` or the whole raw token.
    """
    text = (token_id_or_prefix or "").strip()
    match = _ID.fullmatch(text)
    row = None
    if match is not None:
        query = select(ApiTokenRow).where(ApiTokenRow.token_id == match.group(1))
        row = session.scalars(query.with_for_update(of=ApiTokenRow)).one_or_none()
    if row is None:
        raise NotFound(f"no token with id {text!r}", location="ID")
    permissions.require_self_or_admin(
        session, actor, row.user.name, "revoke API tokens", f"token {row.token_id}"
    )
    revoked_now = row.revoked_at is None
    if revoked_now:
        before = token_view(row)
        row.revoked_at = clock.utcnow()
        session.flush()
        permissions.audit(
            session, actor, "token.revoke", f"token {row.token_id}", before, token_view(row)
        )
    return {**token_view(row), "revoked_now": revoked_now}


def token_view(row: ApiTokenRow, now: dt.datetime | None = None) -> dict:
    now = now or clock.utcnow()
    if row.revoked_at is not None:
        state = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    return {
        "id": row.token_id,
        "user": row.user.name,
        "scopes": list(row.scopes or []),
        "state": state,
        "created_at": clock.iso(row.created_at),
        "created_by": row.created_by,
        "expires_at": clock.iso(row.expires_at),
        "revoked_at": clock.iso(row.revoked_at),
        "last_used_at": clock.iso(row.last_used_at),
    }

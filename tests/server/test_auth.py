"""Bearer tokens over HTTP: missing, malformed, wrong, expired, revoked, read-only;
failed attempts limited per client address and per token prefix, and audited."""

from __future__ import annotations

import json

from tests.server.conftest import audit_rows, expired_token, make_token


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return body


def test_no_token_is_a_401_asking_for_bearer_and_is_not_audited(live):
    before = len(audit_rows(live.db, action="auth.failed"))
    with live.client() as client:
        missing = client.get("/api/v1/jobs")
        basic = client.get("/api/v1/jobs", headers={"Authorization": "Basic cm9vdDpyb290"})
    for response in (missing, basic):
        body = _problem(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer realm="gpupool"'
        assert "gpupool token create" in body["detail"]
    assert len(audit_rows(live.db, action="auth.failed")) == before


def test_a_wrong_token_is_a_401_and_an_audit_row_without_the_secret(live):
    secret = "gpt_zzzzzzzz_" + "s" * 43
    with live.client(**{"X-Forwarded-For": "127.0.0.21"}) as client:
        response = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    body = _problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert body["detail"] == "token: invalid or expired token"
    row = audit_rows(live.db, action="auth.failed")[-1]
    assert (row.actor, row.outcome, row.target) == ("anonymous", "denied", "token zzzzzzzz")
    assert row.after["client"] == "127.0.0.21"
    assert row.after["token_prefix"] == "zzzzzzzz"
    assert row.after["reason"] == "unknown"
    assert "s" * 43 not in json.dumps([row.before, row.after, row.target])
    assert not any("s" * 43 in line for line in live.log)


def test_expired_and_revoked_tokens_are_refused_on_the_next_request(live):
    expired = expired_token(live.db, "bob")
    fresh = make_token(live.db, "bob")
    headers = {"X-Forwarded-For": "127.0.0.22"}
    with live.client(**headers) as client:
        assert client.get("/api/v1/jobs", headers=_bearer(expired)).status_code == 401
        assert client.get("/api/v1/jobs", headers=_bearer(fresh)).status_code == 200
        prefix = fresh.split("_")[1]
        revoked = client.delete(f"/api/v1/tokens/{prefix}", headers=_bearer(live.tokens["root"]))
        assert revoked.status_code == 200, revoked.text
        again = client.get("/api/v1/jobs", headers=_bearer(fresh))
    _problem(again, 401)
    reasons = [r.after["reason"] for r in audit_rows(live.db, action="auth.failed")[-2:]]
    assert reasons == ["expired", "revoked"]


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_failures_from_one_address_are_limited_with_retry_after(live):
    headers = {"X-Forwarded-For": "127.0.0.23"}
    before = len(audit_rows(live.db, action="auth.failed"))
    statuses = []
    with live.client(**headers) as client:
        for attempt in range(21):
            token = f"gpt_{attempt:08d}_" + "x" * 43  # a different prefix each time
            statuses.append(client.get("/api/v1/pools", headers=_bearer(token)).status_code)
        good = client.get("/api/v1/pools", headers=_bearer(live.tokens["root"]))
    with live.client("root", **{"X-Forwarded-For": "127.0.0.24"}) as elsewhere:
        other_address = elsewhere.get("/api/v1/pools")
    assert statuses == [401] * 20 + [429]
    body = _problem(good, 429)  # the address is blocked, whatever it sends
    assert 1 <= int(good.headers["retry-after"]) <= 60
    assert "retry in" in body["detail"]
    assert other_address.status_code == 200
    # only the attempts that were checked are audited, not the refused ones
    assert len(audit_rows(live.db, action="auth.failed")) - before == 20


def test_failures_with_one_token_prefix_are_limited_from_any_address(live):
    victim = make_token(live.db, "hana")
    prefix = victim.split("_")[1]
    statuses = []
    for attempt in range(6):
        wrong = f"gpt_{prefix}_" + "w" * 43
        with live.client(**{"X-Forwarded-For": f"127.0.1.{attempt + 1}"}) as client:
            statuses.append(client.get("/api/v1/pools", headers=_bearer(wrong)).status_code)
    assert statuses == [401] * 5 + [429]
    rows = audit_rows(live.db, action="auth.failed")[-5:]
    assert {r.target for r in rows} == {f"token {prefix}"}
    assert {r.after["reason"] for r in rows} == {"wrong secret"}


def test_a_read_only_token_reads_but_may_not_write(live):
    reader = make_token(live.db, "bob", scopes=("read",))
    with live.client(**_bearer(reader)) as client:
        listed = client.get("/api/v1/jobs")
        validated = client.post(
            "/api/v1/policy/validate", json={"content": "kind: fifo\n", "filename": "p.yaml"}
        )
        before = len(client.get("/api/v1/jobs").json()["jobs"])
        refused = client.post("/api/v1/jobs", json={"org": "lab", "gpus": 1, "hours": 1})
        round_refused = client.post("/api/v1/schedule", json={"dry_run": True})
        after = len(client.get("/api/v1/jobs").json()["jobs"])
    assert listed.status_code == 200
    assert validated.status_code in (200, 422)  # reached the validator: not refused
    _problem(refused, 403)
    _problem(round_refused, 403)  # the round route writes; its dry run has its own route
    assert before == after
    rows = audit_rows(live.db, actor="bob")[-2:]
    assert [(r.action, r.outcome) for r in rows] == [
        ("POST /api/v1/jobs", "denied"),
        ("POST /api/v1/schedule", "denied"),
    ]


# Writes a read-only token may make: they write nothing (gpupool.server.auth.reads_only)
READS_ONLY = {
    ("post", "/api/v1/policy/validate"),
    ("post", "/api/v1/policy/whatif"),
    ("post", "/api/v1/schedule/dry-run"),
}
# reads only a site's agent may make: the admin's read-only token passes the scope check
# and is then refused for its role
AGENT_ONLY_READS = {("get", "/api/v1/agent/starts")}
_SAMPLE = {"job_id": "1", "name": "nobody", "token_id": "abcdefgh", "version": "1", "kind": "kueue"}


def _operations(live) -> list[tuple[str, str]]:
    """(method, path with sample parameters) of every /api/v1 operation in the spec."""
    with live.client() as client:
        spec = client.get("/openapi.json").json()
    found = []
    for template, operations in spec["paths"].items():
        if template.startswith("/api/v1"):
            path = template.format(**_SAMPLE)
            found += [(method, template, path) for method in operations]
    return found


def test_every_api_route_checks_the_tokens_scope(live):
    """An admin's read-only token: every write in the spec is a 403 before its body is
    even read, every read (and the writes that write nothing) passes the scope check."""
    reader = make_token(live.db, "root", scopes=("read",))
    operations = _operations(live)
    before = len(audit_rows(live.db, actor="root"))
    statuses, details = {}, {}
    with live.client(**_bearer(reader)) as client:
        for method, template, path in operations:
            response = client.request(method, path, json={})
            statuses[(method, template)] = response.status_code
            if response.status_code == 403:
                details[(method, template)] = response.json()["detail"]
    writes = {k for k in statuses if k[0] != "get" and k not in READS_ONLY}
    assert len(writes) >= 15 and {("delete", "/api/v1/users/{name}")} <= writes
    assert {k: statuses[k] for k in writes} == {k: 403 for k in writes}
    assert all("may only read" in details[k] for k in writes)
    # reads pass the scope check; an agent's route then refuses the admin's role
    reads = set(statuses) - writes
    assert {k for k in reads if statuses[k] == 403} == AGENT_ONLY_READS, details
    assert not any("may only read" in details[k] for k in AGENT_ONLY_READS)
    denied = audit_rows(live.db, actor="root")[before:]
    assert len([r for r in denied if r.outcome == "denied"]) == len(writes) + len(AGENT_ONLY_READS)


def test_every_api_route_needs_a_token(live):
    with live.client() as client:
        statuses = {
            (method, template): client.request(method, path, json={}).status_code
            for method, template, path in _operations(live)
        }
    assert set(statuses.values()) == {401}, statuses

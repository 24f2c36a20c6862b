"""User administration over HTTP: remove and set-role (admins), effective on the next
request, the last admin kept. Uses the session's shared server (tests/server/conftest)."""

from __future__ import annotations

from tests.server.conftest import audit_rows, make_token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_removed_users_tokens_are_refused_from_the_next_request(live):
    with live.client("root") as root:
        added = root.post("/api/v1/users", json={"name": "gone", "role": "submitter", "org": "lab"})
        assert added.status_code == 201, added.text
        token = make_token(live.db, "gone")
        with live.client(**_bearer(token)) as gone:
            # twice: the second is served by the verified-token cache
            assert [gone.get("/api/v1/jobs").status_code for _ in range(2)] == [200, 200]
            removed = root.delete("/api/v1/users/gone")
            after = gone.get("/api/v1/jobs")
        listed = [u["name"] for u in root.get("/api/v1/users").json()]
        again = root.delete("/api/v1/users/gone")
    assert removed.status_code == 200, removed.text
    assert removed.json() == {
        "name": "gone",
        "role": "submitter",
        "org": "lab",
        "site": None,
        "tokens_removed": 1,
    }
    assert after.status_code == 401
    assert "gone" not in listed
    assert (again.status_code, again.json()["field"]) == (404, "name")
    row = audit_rows(live.db, action="user.remove")[-1]
    assert (row.actor, row.target, row.outcome) == ("root", "user gone", "ok")
    assert row.before["tokens"] == [token.split("_")[1]]


def test_a_new_role_applies_from_the_next_request(live):
    with live.client("root") as root:
        root.post("/api/v1/users", json={"name": "interim", "role": "admin"})
        token = make_token(live.db, "interim")
        with live.client(**_bearer(token)) as interim:
            as_admin = interim.get("/api/v1/users")
            demoted = root.put(
                "/api/v1/users/interim/role", json={"role": "submitter", "org": "lab"}
            )
            as_submitter = interim.get("/api/v1/users")
        no_org = root.put("/api/v1/users/interim/role", json={"role": "submitter"})
        listed = {u["name"]: (u["role"], u["org"]) for u in root.get("/api/v1/users").json()}
        root.delete("/api/v1/users/interim")
    assert as_admin.status_code == 200
    assert demoted.status_code == 200, demoted.text
    assert demoted.json() == {"name": "interim", "role": "submitter", "org": "lab", "site": None}
    assert as_submitter.status_code == 403
    assert listed["interim"] == ("submitter", "lab")
    assert (no_org.status_code, no_org.json()["field"]) == (422, "org")
    row = audit_rows(live.db, action="user.set_role")[-1]
    assert (row.before["role"], row.after["role"]) == ("admin", "submitter")


def test_the_last_admin_is_neither_removed_nor_demoted(live):
    with live.client("root") as root:
        admins = [u["name"] for u in root.get("/api/v1/users").json() if u["role"] == "admin"]
        removed = root.delete("/api/v1/users/root")
        demoted = root.put("/api/v1/users/root/role", json={"role": "auditor"})
        still = root.get("/api/v1/users")
    assert admins == ["root"]
    assert (removed.status_code, removed.json()["field"]) == (409, "name")
    assert "root is the last admin" in removed.json()["detail"]
    assert demoted.status_code == 409 and "cannot be demoted" in demoted.json()["detail"]
    assert still.status_code == 200


def test_only_admins_change_users_and_the_refusal_is_audited(live):
    with live.client("bob") as bob, live.client("audrey") as audrey:
        by_submitter = bob.delete("/api/v1/users/hana")
        by_auditor = audrey.put("/api/v1/users/hana/role", json={"role": "auditor"})
    assert (by_submitter.status_code, by_submitter.json()["field"]) == (403, "Authorization")
    assert by_auditor.status_code == 403
    row = audit_rows(live.db, actor="bob")[-1]
    assert (row.action, row.target, row.outcome) == ("remove users", "user hana", "denied")

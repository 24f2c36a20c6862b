"""Admin endpoints: a submitter is refused on each (403, nothing written, audited);
an admin describes the platform, manages policies, runs rounds and reads reports."""

from __future__ import annotations

import json
import uuid

from tests.server.conftest import audit_rows

POLICY = """\
kind: priority
domains:
  medical: {weight: 3}
  general: {weight: 1}
"""

# (method, path, body) of every endpoint only admins may use
ADMIN_ONLY = [
    ("POST", "/api/v1/gpu-types", {"name": "X1", "vendor": "V", "memory_gb": 8}),
    (
        "POST",
        "/api/v1/pools",
        {
            "name": "p-x",
            "site": "S",
            "gpu_type": "A100",
            "gpus": 8,
            "price_per_gpu_hour": 1,
        },
    ),
    ("POST", "/api/v1/domains", {"name": "d-x"}),
    ("POST", "/api/v1/orgs", {"name": "o-x", "domain": "general"}),
    ("POST", "/api/v1/job-classes", {"name": "k-x", "speeds": {"A100": 2}}),
    ("DELETE", "/api/v1/job-classes/k-x", None),
    ("POST", "/api/v1/users", {"name": "mallory", "role": "admin"}),
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/tokens", {"user": "bob"}),
    ("POST", "/api/v1/policy/apply", {"content": POLICY, "filename": "p.yaml"}),
    ("POST", "/api/v1/policy/rollback", {"version": 1}),
    ("POST", "/api/v1/schedule", {"dry_run": False}),
    ("POST", "/api/v1/jobs/reap", {}),
    ("POST", "/api/v1/programmes", {"programmes": [{"name": "free", "rate": 1}]}),
    ("POST", "/api/v1/vouchers", {"org": "lab", "programme": "free", "amount": 10}),
    ("GET", "/api/v1/audit", None),
]


def _snapshot(live) -> dict:
    """What the admin endpoints could change (a token's last use is not such a change)."""
    with live.client("root") as root:
        return {
            path: [_without(item, "last_used_at") for item in root.get(path).json()]
            for path in (
                "/api/v1/gpu-types",
                "/api/v1/pools",
                "/api/v1/domains",
                "/api/v1/orgs",
                "/api/v1/job-classes",
                "/api/v1/users",
                "/api/v1/policy/history",
                "/api/v1/programmes",
                "/api/v1/vouchers",
                "/api/v1/tokens",
            )
        }


def _without(item: dict, key: str) -> dict:
    return {k: v for k, v in item.items() if k != key}


def test_a_submitter_is_refused_on_every_admin_endpoint_and_nothing_is_written(live):
    before = _snapshot(live)
    denied_before = len([r for r in audit_rows(live.db, actor="bob") if r.outcome == "denied"])
    refused = []
    with live.client("bob") as bob:
        for method, path, body in ADMIN_ONLY:
            response = bob.request(method, path, json=body)
            refused.append((path, response.status_code))
            assert response.headers["content-type"] == "application/problem+json", path
    assert refused == [(path, 403) for _, path, _ in ADMIN_ONLY]
    assert _snapshot(live) == before
    denied = [r for r in audit_rows(live.db, actor="bob") if r.outcome == "denied"]
    assert len(denied) - denied_before == len(ADMIN_ONLY)


def test_an_admin_describes_the_platform_and_duplicates_conflict(live):
    suffix = uuid.uuid4().hex[:6]
    with live.client("root") as root:
        gpu = root.post(
            "/api/v1/gpu-types",
            json={"name": f"G{suffix}", "vendor": "V", "memory_gb": 16, "speed": 0.5},
        )
        pool = root.post(
            "/api/v1/pools",
            json={
                "name": f"p-{suffix}",
                "site": "Wuhan",
                "gpu_type": f"G{suffix}",
                "gpus": 4,
                "gpus_per_node": 4,
                "price_per_gpu_hour": 2.5,
            },
        )
        again = root.post("/api/v1/domains", json={"name": "medical"})
        unknown_type = root.post(
            "/api/v1/pools",
            json={
                "name": "p-none",
                "site": "S",
                "gpu_type": "nope",
                "gpus": 1,
                "price_per_gpu_hour": 1,
            },
        )
        pools = root.get("/api/v1/pools").json()
    assert gpu.status_code == 201 and gpu.json()["speed"] == 0.5
    assert pool.status_code == 201
    assert pool.json() == {
        "name": f"p-{suffix}",
        "site": "Wuhan",
        "gpu_type": f"G{suffix}",
        "gpus": 4,
        "gpus_per_node": 4,
        "price_per_gpu_hour": 2.5,
        "free_gpus": 4,
    }
    assert pool.json() in pools
    assert again.status_code == 409
    assert again.json()["detail"] == "name: a domain named 'medical' already exists"
    assert unknown_type.status_code == 422 and unknown_type.json()["field"] == "gpu_type"


def test_policies_over_http_validate_apply_show_diff_and_roll_back(live):
    with live.client("root") as root:
        bad = root.post(
            "/api/v1/policy/validate",
            json={
                "content": "kind: priority\ndomains:\n  medical: {weight: -1}\n",
                "filename": "p.yaml",
            },
        )
        first = root.post("/api/v1/policy/apply", json={"content": POLICY, "comment": "one"})
        second = root.post(
            "/api/v1/policy/apply", json={"content": POLICY.replace("3", "5"), "comment": "two"}
        )
        v1, v2 = first.json()["version"], second.json()["version"]
        active = root.get("/api/v1/policy").json()
        diff = root.get("/api/v1/policy/diff", params={"old": v1, "new": f"v{v2}"}).json()
        back = root.post("/api/v1/policy/rollback", json={"version": f"v{v1}"})
        missing = root.get("/api/v1/policy/versions/999")
        history = root.get("/api/v1/policy/history").json()
    assert bad.status_code == 422
    problem = bad.json()
    assert problem["errors"] and problem["errors"][0]["field"].startswith("p.yaml:3")
    assert problem["errors"][0]["line"] == 3
    assert first.status_code == second.status_code == 201
    assert second.json()["replaces"] == v1
    assert active["version"] == v2 and active["active"] and "weight: 5" in active["document"]
    assert diff["old"] == v1 and diff["new"] == v2 and diff["changes"]
    assert back.status_code == 201 and back.json()["replaces"] == v2
    assert missing.status_code == 404
    assert [h["active"] for h in history].count(True) == 1
    assert history[-1]["version"] == back.json()["version"]


def test_rounds_and_reports_over_http(live):
    with live.client("hana") as hana:
        job = hana.post("/api/v1/jobs", json={"org": "hosp", "gpus": 1, "hours": 1}).json()["id"]
        peek = hana.post("/api/v1/schedule", json={"dry_run": True})  # shows every org's jobs
    with live.client("audrey") as auditor:
        dry = auditor.post("/api/v1/schedule", json={"dry_run": True})
    with live.client("root") as root:
        real = root.post("/api/v1/schedule", json={})
        shown = root.get(f"/api/v1/jobs/{job}").json()
        finished = root.post(f"/api/v1/jobs/{job}/finish", json={})
        usage = root.get("/api/v1/reports/usage", params={"by": "org"})
        bad_by = root.get("/api/v1/reports/usage", params={"by": "planet"})
        subsidies = root.get("/api/v1/reports/subsidies")
    with live.client("bob") as bob:
        own_usage = bob.get("/api/v1/reports/usage", params={"by": "org"})
    assert peek.status_code == 403
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert dry.json()["round"] is None
    assert real.status_code == 200, real.text
    assert job in [s["job"] for s in real.json()["started"]]
    assert shown["state"] == "running" and shown["placements"]
    assert finished.status_code == 200 and finished.json()["state"] == "completed"
    assert usage.status_code == 200 and any(r["org"] == "hosp" for r in usage.json())
    assert bad_by.status_code == 422 and bad_by.json()["field"] == "by"
    assert subsidies.status_code == 200
    assert own_usage.status_code == 200
    assert {r["org"] for r in own_usage.json()} <= {"lab"}  # never another org's spending


def test_programmes_and_vouchers_over_http(live):
    name = f"prog-{uuid.uuid4().hex[:6]}"
    yaml_text = f"programmes:\n  - name: {name}y\n    rate: 2\n"
    with live.client("root") as root:
        added = root.post(
            "/api/v1/programmes",
            json={"programmes": [{"name": name, "vouchers": True, "domains": ["general"]}]},
        )
        bad_file = root.post(
            "/api/v1/programmes", json={"content": yaml_text, "filename": "progs.yaml"}
        )
        award = root.post("/api/v1/vouchers", json={"org": "lab", "programme": name, "amount": 12})
        listed = root.get("/api/v1/programmes").json()
        vouchers = root.get("/api/v1/vouchers", params={"org": "lab"}).json()
    assert added.status_code == 201, added.text
    assert added.json()[0]["name"] == name
    assert bad_file.status_code == 422
    assert bad_file.json()["field"].startswith("progs.yaml:3")
    assert award.status_code == 201 and award.json()["balance"] == 12
    assert name in [p["name"] for p in listed]
    assert award.json() in vouchers


def test_auditors_read_the_audit_log_and_tokens(live):
    with live.client("audrey") as audrey:
        refused = audrey.post("/api/v1/domains", json={"name": "x-audit"})  # audited as denied
        entries = audrey.get("/api/v1/audit", params={"outcome": "denied", "limit": 5})
        tokens = audrey.get("/api/v1/tokens")
    assert entries.status_code == 200
    assert 0 < len(entries.json()) <= 5
    assert {e["outcome"] for e in entries.json()} == {"denied"}
    assert tokens.status_code == 200
    assert {"root", "bob"} <= {t["user"] for t in tokens.json()}
    assert all("token" not in t and "secret_hash" not in t for t in tokens.json())
    assert refused.status_code == 403


def test_an_admin_creates_a_token_that_works_once_shown(live):
    with live.client("root") as root:
        created = root.post("/api/v1/tokens", json={"user": "hana", "scopes": ["read"]})
        listed = root.get("/api/v1/tokens", params={"user": "hana"}).json()
        never = root.post("/api/v1/tokens", json={"user": "hana", "expires": "soon"})
    assert created.status_code == 201
    body = created.json()
    assert body["token"].startswith(f"gpt_{body['id']}_")
    assert body["scopes"] == ["read"] and body["expires_at"] is not None
    assert body["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)
    assert never.status_code == 422 and never.json()["field"] == "expires"
    with live.client(Authorization=f"Bearer {body['token']}") as hana:
        assert hana.get("/api/v1/jobs").status_code == 200


def test_whatif_replays_for_readers_only(live):
    with live.client("audrey") as auditor:
        replay = auditor.post(
            "/api/v1/policy/whatif", json={"content": POLICY, "filename": "p.yaml", "since": "2d"}
        )
    with live.client("bob") as bob:
        refused = bob.post("/api/v1/policy/whatif", json={"content": POLICY, "since": "2d"})
    assert replay.status_code == 200, replay.text
    assert "medical" in replay.json()["domains"]
    assert refused.status_code == 403


def test_uploads_follow_the_rules_files_follow(live):
    big_policy = POLICY + "#" * (256 * 1024)
    bomb = "programmes:\n  - &a {name: x, rate: 1}\n  - *a\n"
    with live.client("root") as root:
        too_big = root.post("/api/v1/policy/validate", json={"content": big_policy})
        aliases = root.post(
            "/api/v1/programmes", json={"content": bomb, "filename": "../../etc/progs.yaml"}
        )
    assert too_big.status_code == 422
    assert "a policy document may have at most 262,144 bytes" in too_big.json()["detail"]
    assert aliases.status_code == 422
    assert aliases.json()["field"].startswith("progs.yaml:2")  # the name, never the path


def test_the_burn_down_chart_is_served_to_readers_of_every_org_only(live):
    with live.client("audrey") as audrey, live.client("bob") as bob:
        png = audrey.get("/api/v1/reports/subsidies/chart")
        svg = audrey.get("/api/v1/reports/subsidies/chart", params={"format": "svg"})
        bmp = audrey.get("/api/v1/reports/subsidies/chart", params={"format": "bmp"})
        refused = bob.get("/api/v1/reports/subsidies/chart")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert (bmp.status_code, bmp.json()["field"]) == (422, "format")
    assert (refused.status_code, refused.json()["field"]) == (403, "Authorization")
    row = audit_rows(live.db, actor="bob")[-1]
    assert (row.action, row.outcome) == ("chart budget burn-down", "denied")


def test_whatif_returns_its_files_when_asked(live):
    body = {"content": "kind: fifo\n", "filename": "p.yaml", "since": "30d"}
    with live.client("audrey") as audrey:
        plain = audrey.post("/api/v1/policy/whatif", json=body)
        with_files = audrey.post("/api/v1/policy/whatif", json={**body, "files": True})
    assert plain.status_code == with_files.status_code == 200
    assert "files" not in plain.json()
    files = with_files.json()["files"]
    assert set(files) == {"whatif.json", "jobs-current.csv", "jobs-proposed.csv"}
    assert json.loads(files["whatif.json"])["proposed"] == "p.yaml (fifo)"
    assert files["jobs-current.csv"].startswith("id,name,org,")


def test_job_classes_over_http_name_a_bad_speed_by_its_type(live):
    name = f"k-{uuid.uuid4().hex[:6]}"
    with live.client("root") as root:
        unknown = root.post("/api/v1/job-classes", json={"name": name, "speeds": {"V9": 1}})
        too_fast = root.post("/api/v1/job-classes", json={"name": name, "speeds": {"A100": 1e4}})
        added = root.post("/api/v1/job-classes", json={"name": name, "speeds": {"H100": "3"}})
        listed = root.get("/api/v1/job-classes").json()
        removed = root.delete(f"/api/v1/job-classes/{name}")
    assert (unknown.status_code, unknown.json()["field"]) == (422, "speeds.V9")
    assert unknown.json()["detail"] == "--speed V9: no GPU type named 'V9'"
    assert (too_fast.status_code, too_fast.json()["field"]) == (422, "speeds.A100")
    assert added.status_code == 201 and added.json() == {"name": name, "speeds": {"H100": 3.0}}
    assert added.json() in listed
    assert removed.status_code == 200 and removed.json() == added.json()

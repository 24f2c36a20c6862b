"""Health, readiness, metrics, request ids, JSON logs, the OpenAPI document, body limits."""

from __future__ import annotations

import json
import re

import httpx

from tests.server.conftest import audit_rows, wait_for

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def test_healthz_and_readyz_answer_without_a_token(live):
    with live.client() as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    from gpupool.scheduler.migrations import HEAD

    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["revision"] == HEAD


def test_readyz_reports_a_database_behind_the_migrations(tmp_path, start_server):
    from gpupool.scheduler.database import make_engine
    from gpupool.scheduler.migrate import upgrade

    db = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(db)
    upgrade(engine, "0001")
    engine.dispose()
    server = start_server(db)
    with server.client() as client:
        ready = client.get("/readyz")
        api = client.get("/api/v1/jobs", headers={"Authorization": "Bearer gpt_abcdefgh_x"})
        health = client.get("/healthz")
    assert ready.status_code == 503
    assert ready.json()["revision"] == "0001"
    assert "gpupool db upgrade" in ready.json()["reason"]
    assert health.status_code == 200  # the process is up; it is just not ready
    assert api.status_code == 503  # the token cannot even be looked up
    assert api.headers["content-type"] == "application/problem+json"
    assert "old.db" not in api.text  # where the database is stays in the server's log


def test_metrics_need_an_admin_or_auditor_token(live):
    with live.client() as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    before = len(audit_rows(live.db, action="read metrics"))
    with live.client("bob") as submitter:
        refused = submitter.get("/metrics")
    assert refused.status_code == 403
    denied = audit_rows(live.db, action="read metrics")[before:]
    assert [(r.actor, r.outcome) for r in denied] == [("bob", "denied")]
    with live.client("audrey") as auditor:
        assert auditor.get("/metrics").status_code == 200


def test_metrics_report_the_platform_from_the_database(live):
    with live.client("hana") as hana:
        job = hana.post("/api/v1/jobs", json={"org": "hosp", "gpus": 1, "hours": 1})
        assert job.status_code == 201
    with live.client("root") as root:
        text = root.get("/metrics").text
        pending = _sample(text, "gpupool_pending_jobs", domain="medical")
        root.post(f"/api/v1/jobs/{job.json()['id']}/cancel")
        later = root.get("/metrics").text
    assert _sample(later, "gpupool_pending_jobs", domain="medical") == pending - 1
    assert _sample(text, "gpupool_free_gpus", pool="p-h100", site="Shanghai", gpu_type="H100") <= 8
    assert _sample(text, "gpupool_database_up") == 1
    assert _sample(text, "gpupool_rounds_total") >= 0
    assert "gpupool_subsidy_spent" in text
    # the latency histogram is labelled by route template, not by each job's URL
    assert 'route="/api/v1/jobs/{job_id}/cancel"' in later
    assert f"/api/v1/jobs/{job.json()['id']}/cancel" not in later
    count = _sample(
        text, "gpupool_http_request_duration_seconds_count", method="POST", route="/api/v1/jobs"
    )
    assert count is not None and count >= 1


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_request_ids_are_kept_or_made_and_every_request_is_logged_as_json(live):
    with live.client() as client:
        given = client.get("/healthz", headers={"X-Request-ID": "trace-123.a"})
        made = client.get("/healthz")
        hostile = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        missing = client.get("/api/v1/jobs")
    assert given.headers["x-request-id"] == "trace-123.a"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    assert missing.json()["request_id"] == missing.headers["x-request-id"]

    def logged(request_id: str):
        for line in live.log:
            if request_id in line:
                return json.loads(line)
        return None

    entry = wait_for(lambda: logged("trace-123.a"))
    assert entry is not None, "no access log line for the request"
    assert entry["request_id"] == "trace-123.a"
    assert (entry["method"], entry["route"], entry["status"]) == ("GET", "/healthz", 200)
    assert entry["duration_ms"] >= 0


def test_the_openapi_document_describes_the_api(live):
    with live.client() as client:
        spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}/cancel", "/api/v1/policy/apply"):
        assert path in paths
    assert all(p.startswith("/api/v1/") for p in paths if p not in _OPERATIONS)
    post = paths["/api/v1/jobs"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert "application/problem+json" in post["responses"]["409"]["content"]
    assert "security" not in paths["/healthz"]["get"]


_OPERATIONS = {"/healthz", "/readyz", "/metrics"}


def test_a_body_over_the_limit_is_refused_before_it_is_read(live):
    big = b"x" * (1024 * 1024 + 1)
    with live.client("root") as root:
        declared = root.post(
            "/api/v1/jobs/batch", content=big, headers={"Content-Type": "application/json"}
        )
        streamed = root.post(
            "/api/v1/jobs/batch",
            content=_chunks(big),  # no Content-Length: counted as it arrives
            headers={"Content-Type": "application/json"},
        )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert set(body) >= PROBLEM_KEYS and body["status"] == 413
        assert "1048576 bytes" in body["detail"]


def _chunks(data: bytes):
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


def test_unknown_routes_are_problems_too(live):
    response = httpx.get(f"{live.url}/api/v1/nothing-here", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "no such endpoint"


def test_several_workers_share_one_histogram(tmp_path, start_server):
    from tests.server.conftest import populate

    db = f"sqlite:///{tmp_path / 'workers.db'}"
    tokens = populate(db)
    server = start_server(db, "--workers", "2")
    headers = {"Authorization": f"Bearer {tokens['root']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for _ in range(12):  # new connections: the kernel spreads them over the workers
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as one:
                assert one.get("/api/v1/pools").status_code == 200
        text = client.get("/metrics").text
    count = _sample(
        text, "gpupool_http_request_duration_seconds_count", method="GET", route="/api/v1/pools"
    )
    assert count == 12  # whichever worker answered the scrape, it reports all of them

"""Jobs over HTTP as a submitter: own organisation only, problem details, idempotent
submission by key, batches with file:line errors."""

from __future__ import annotations

import uuid

from tests.server.conftest import audit_rows

JOB = {"org": "lab", "gpus": 2, "hours": 1.5, "name": "train"}


def _all_jobs(live) -> list[dict]:
    with live.client("root") as root:
        return root.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]


def test_a_submitter_submits_lists_shows_and_cancels_its_own_jobs(live):
    with live.client("bob") as bob:
        created = bob.post("/api/v1/jobs", json=JOB)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert created.json() == {"id": job_id, "created": True}
        assert created.headers["location"] == f"/api/v1/jobs/{job_id}"
        listed = bob.get("/api/v1/jobs", params={"state": "pending", "limit": 1000}).json()["jobs"]
        shown = bob.get(f"/api/v1/jobs/{job_id}").json()
        cancelled = bob.post(f"/api/v1/jobs/{job_id}/cancel")
        again = bob.post(f"/api/v1/jobs/{job_id}/cancel")
    assert job_id in [j["id"] for j in listed]
    assert {j["org"] for j in listed} == {"lab"}  # never another organisation's
    assert (shown["state"], shown["submitted_by"], shown["placements"]) == ("pending", "bob", [])
    assert shown["accounting"] is None
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert again.status_code == 409
    assert again.json()["detail"] == "state: a cancelled job cannot become cancelled"
    assert again.json()["field"] == "state"


def test_another_organisations_job_looks_missing_and_the_refusal_is_audited(live):
    with live.client("hana") as hana:
        hosp_job = hana.post("/api/v1/jobs", json={**JOB, "org": "hosp"}).json()["id"]
    with live.client("bob") as bob:
        shown = bob.get(f"/api/v1/jobs/{hosp_job}")
        cancel = bob.post(f"/api/v1/jobs/{hosp_job}/cancel")
        missing = bob.get("/api/v1/jobs/999999")
    assert shown.status_code == cancel.status_code == missing.status_code == 404
    assert shown.json()["detail"] == f"job id: no job with id {hosp_job}"
    assert missing.json()["detail"] == "job id: no job with id 999999"
    assert {k for k in shown.json() if k != "request_id"} == {
        k for k in missing.json() if k != "request_id"
    }
    assert [j["state"] for j in _all_jobs(live) if j["id"] == hosp_job] == ["pending"]
    denials = [r for r in audit_rows(live.db, actor="bob") if r.target == f"job {hosp_job}"]
    assert [r.outcome for r in denials] == ["denied", "denied"]


def test_submitting_for_another_organisation_is_a_403_and_writes_nothing(live):
    before = len(_all_jobs(live))
    with live.client("bob") as bob:
        refused = bob.post("/api/v1/jobs", json={**JOB, "org": "hosp"})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "hosp" in refused.json()["detail"]
    assert len(_all_jobs(live)) == before
    row = audit_rows(live.db, actor="bob")[-1]
    assert (row.action, row.outcome) == ("submit jobs", "denied")


def test_bad_values_are_422_with_the_cli_message_and_field(live):
    with live.client("bob") as bob:
        bad = bob.post("/api/v1/jobs", json={**JOB, "gpus": "x"})
        shape = bob.post("/api/v1/jobs", json={"org": "lab"})
        unknown_type = bob.post("/api/v1/jobs", json={**JOB, "gpu_types": ["Z9"]})
    assert bad.status_code == 422
    assert bad.json()["detail"] == "--gpus: must be a positive whole number, got 'x'"
    assert bad.json()["field"] == "gpus"  # the body's field; the detail keeps the CLI's line
    assert shape.status_code == 422 and shape.json()["field"] in ("gpus", "hours")
    assert {e["field"] for e in shape.json()["errors"]} == {"gpus", "hours"}
    assert unknown_type.status_code == 422 and unknown_type.json()["field"] == "gpu_types"


def test_a_retried_submission_with_a_key_returns_the_same_job(live):
    key = f"retry-{uuid.uuid4().hex}"
    with live.client("bob") as bob:
        first = bob.post("/api/v1/jobs", json={**JOB, "key": key})
        retry = bob.post("/api/v1/jobs", json={**JOB, "key": key})
        header = bob.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
        other = bob.post("/api/v1/jobs", json={**JOB, "gpus": 4, "key": key})
    assert (first.status_code, retry.status_code, header.status_code) == (201, 200, 200)
    assert first.json()["id"] == retry.json()["id"] == header.json()["id"]
    assert retry.json()["created"] is False
    assert other.status_code == 409
    assert "with different content" in other.json()["detail"]
    assert len([j for j in _all_jobs(live) if j["id"] == first.json()["id"]]) == 1


def test_a_batch_is_all_or_nothing_with_each_bad_row_at_file_line(live):
    before = len(_all_jobs(live))
    bad_csv = "org,gpus,hours\nlab,1,1\nlab,zero,1\nlab,1,-2\n"
    with live.client("bob") as bob:
        refused = bob.post("/api/v1/jobs/batch", json={"filename": "jobs.csv", "content": bad_csv})
        good = bob.post(
            "/api/v1/jobs/batch",
            json={"filename": "jobs.yaml", "content": "- {org: lab, gpus: 1, hours: 2}\n"},
        )
        wrong_kind = bob.post("/api/v1/jobs/batch", json={"filename": "jobs.txt", "content": "x"})
    assert refused.status_code == 422
    body = refused.json()
    assert body["detail"] == "2 bad row(s) in jobs.csv; nothing submitted"
    assert [(e["field"], e["line"]) for e in body["errors"]] == [
        ("jobs.csv:3 gpus", 3),
        ("jobs.csv:4 hours", 4),
    ]
    assert body["errors"][0]["detail"].startswith("jobs.csv:3 ")
    assert good.status_code == 201 and good.json()[0]["created"] is True
    assert wrong_kind.status_code == 422 and wrong_kind.json()["field"] == "jobs.txt"
    assert len(_all_jobs(live)) == before + 1


def test_a_priority_boost_from_a_submitter_is_refused_naming_the_field(live):
    before = len(_all_jobs(live))
    with live.client("bob") as bob:
        refused = bob.post("/api/v1/jobs", json={**JOB, "priority": 5})
    assert refused.status_code == 403
    assert refused.json()["field"] == "priority"
    assert len(_all_jobs(live)) == before
    with live.client("root") as root:
        boosted = root.post("/api/v1/jobs", json={**JOB, "priority": 5})
    assert boosted.status_code == 201


def test_problem_fields_name_the_apis_inputs(live):
    with live.client("bob") as bob:
        admins_only = bob.post("/api/v1/domains", json={"name": "field-test", "weight": 1})
        other_org = bob.get("/api/v1/jobs", params={"org": "hosp"})
        bad_state = bob.get("/api/v1/jobs", params={"state": "sleeping"})
        bad_id = bob.get("/api/v1/jobs/0")
    assert (admins_only.status_code, admins_only.json()["field"]) == (403, "Authorization")
    assert admins_only.json()["detail"].startswith("--as: bob may not")  # the CLI's line
    assert (other_org.status_code, other_org.json()["field"]) == (403, "org")
    assert (bad_state.status_code, bad_state.json()["field"]) == (422, "state")
    assert (bad_id.status_code, bad_id.json()["field"]) == (422, "job_id")


def test_a_name_taken_is_a_409_conflict(live):
    with live.client("root") as root:
        first = root.post("/api/v1/domains", json={"name": "conflict-test", "weight": 1})
        again = root.post("/api/v1/domains", json={"name": "Conflict-Test", "weight": 1})
    assert first.status_code == 201
    assert (again.status_code, again.json()["field"]) == (409, "name")
    assert again.json()["type"] == "urn:gpupool:problem:conflict"


def test_job_list_pages_are_bounded_and_stable(live):
    with live.client("root") as root:
        for _ in range(3):
            assert root.post("/api/v1/jobs", json=JOB).status_code == 201
        whole = root.get("/api/v1/jobs", params={"limit": 1000}).json()
        pages, after = [], None
        while True:
            params = {"limit": 2} | ({"after": after} if after else {})
            page = root.get("/api/v1/jobs", params=params).json()
            pages.append(page)
            after = page["next_after"]
            if after is None:
                break
        back = root.get("/api/v1/jobs", params={"limit": 2, "before": pages[1]["jobs"][0]["id"]})
        too_many = root.get("/api/v1/jobs", params={"limit": 1001})
        default = root.get("/api/v1/jobs").json()
    ids = [j["id"] for j in whole["jobs"]]
    assert whole["next_after"] is None and len(ids) >= 3
    assert [j["id"] for page in pages for j in page["jobs"]] == ids == sorted(ids)
    assert all(len(page["jobs"]) <= 2 for page in pages)
    assert pages[0]["previous_before"] is None and pages[1]["previous_before"] == ids[2]
    assert back.json()["jobs"] == pages[0]["jobs"] and back.json()["previous_before"] is None
    assert (too_many.status_code, too_many.json()["field"]) == (422, "limit")
    assert default["limit"] == 100 and len(default["jobs"]) == min(100, len(ids))


def test_a_submitters_pages_hold_its_own_jobs_only(live):
    with live.client("hana") as hana:
        hana.post("/api/v1/jobs", json={**JOB, "org": "hosp"})
        first = hana.get("/api/v1/jobs", params={"limit": 1}).json()
        rest = hana.get("/api/v1/jobs", params={"limit": 1000, "after": first["jobs"][0]["id"]})
    assert {j["org"] for j in [*first["jobs"], *rest.json()["jobs"]]} == {"hosp"}

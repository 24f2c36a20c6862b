"""The dashboard's pages over plain HTTP: log-in, cookies and CSRF, security headers,
who sees what on each page, figures that match the ledger, escaping, bad input.

One real `gpupool serve` per backend, on the platform with a week of history of
tests/server/dashboard_history.py, shared for the session with test_dashboard.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.server.conftest import audit_rows
from tests.server.dashboard_history import (
    AGENT,
    BUDGET,
    HOSTILE_NAME,
    SUBSIDY_PAID,
)

_CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def board(request, dashboard_server):
    return dashboard_server(request.param)


def _client(server, address: str | None = None) -> httpx.Client:
    # Each test its own client address (the server trusts X-Forwarded-For from
    # 127.0.0.1), so failed log-ins in one test never rate-limit another.
    address = address or f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    return httpx.Client(base_url=server.url, headers={"X-Forwarded-For": address}, timeout=30)


def _login_form(client: httpx.Client) -> str:
    page = client.get("/ui/login")
    assert page.status_code == 200
    return _CSRF_INPUT.search(page.text).group(1)


def _log_in(client: httpx.Client, token: str, next_page: str = "/ui/queue") -> httpx.Response:
    csrf = _login_form(client)
    return client.post("/ui/login", data={"token": token, "csrf": csrf, "next": next_page})


@contextmanager
def _as(server, user: str) -> Iterator[httpx.Client]:
    """A client logged in as ``user`` through the log-in form."""
    with _client(server) as client:
        assert _log_in(client, server.tokens[user]).status_code == 303
        yield client


def _text(html: str) -> str:
    """The page's text, roughly: inline tags dropped, others a space, whitespace squeezed."""
    inline = re.sub(r"</?(strong|span|a|code)\b[^>]*>", "", html)
    return " ".join(re.sub(r"<[^>]+>", " ", inline).split())


def test_pages_send_a_browser_without_a_session_to_the_login_page(board):
    server, _ = board
    with _client(server) as client:
        response = client.get("/ui/queue?x=1")
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert target.path == "/ui/login"
    assert parse_qs(target.query)["next"] == ["/ui/queue?x=1"]


def test_logging_in_sets_a_cookie_scripts_and_other_sites_cannot_use(board):
    server, _ = board
    with _client(server) as client:
        response = _log_in(client, server.tokens["root"], "/ui/usage")
        cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
        page = client.get("/ui/usage")
    assert response.status_code == 303 and response.headers["location"] == "/ui/usage"
    (session,) = [c for c in cookies if c.startswith("gpupool_session=")]
    attributes = {a.strip().lower() for a in session.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # plain http here; https requests get Secure
    assert page.status_code == 200 and "root" in page.text


def test_the_cookie_is_secure_behind_an_https_proxy(board):
    server, _ = board
    # the server trusts X-Forwarded-Proto from 127.0.0.1, as from a TLS proxy on the host
    with _client(server) as client:
        csrf = _login_form(client)  # over plain http, so httpx sends the cookie back
        response = client.post(
            "/ui/login",
            data={"token": server.tokens["root"], "csrf": csrf},
            headers={"X-Forwarded-Proto": "https"},
        )
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    (session,) = [c for c in cookies if c.startswith("gpupool_session=")]
    assert response.status_code == 303 and "secure" in session.lower().split("; ")


def test_a_form_stuffed_with_fields_is_refused_not_an_error(board):
    server, _ = board
    with _client(server) as client:
        csrf = _login_form(client)
        fields = {f"f{i}": "x" for i in range(50)} | {"csrf": csrf, "token": "t"}
        response = client.post("/ui/login", data=fields)
    assert response.status_code == 403


def test_every_page_carries_the_security_headers(board):
    server, _ = board
    with _as(server, "root") as client:
        responses = [client.get(p) for p in ("/ui/login", "/ui/pools", "/ui/jobs/999999")]
    for response in responses:
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "script-src" not in policy  # no script at all
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"


def test_a_login_without_the_forms_csrf_token_is_refused(board):
    server, _ = board
    with _client(server) as client:
        _login_form(client)  # the browser has its CSRF cookie, but the post lacks the value
        missing = client.post("/ui/login", data={"token": server.tokens["root"]})
        wrong = client.post("/ui/login", data={"token": server.tokens["root"], "csrf": "x" * 43})
    with _client(server) as stranger:  # a cross-site post carries no cookie at all
        forged = stranger.post("/ui/login", data={"token": server.tokens["root"], "csrf": "y"})
    for response in (missing, wrong, forged):
        assert response.status_code == 403
        assert "gpupool_session" not in response.headers.get("set-cookie", "")


def test_a_wrong_token_is_refused_and_audited_like_an_api_call(board):
    server, _ = board
    bad = "gpt_zzzzzzzz_" + "A" * 43
    with _client(server, "10.77.0.1") as client:
        response = _log_in(client, bad)
    assert response.status_code == 401
    assert "That token is not valid." in response.text
    assert "gpupool_session" not in response.headers.get("set-cookie", "")
    rows = [r for r in audit_rows(server.db, "auth.failed") if r.target == "token zzzzzzzz"]
    assert rows and rows[-1].after["client"] == "10.77.0.1"


def test_a_revoked_token_ends_the_session_on_the_next_page(board):
    from gpupool.scheduler import tokens
    from gpupool.scheduler.database import unit_of_work
    from tests.server.conftest import make_token

    server, _ = board
    token = make_token(server.db, "bob")
    with _client(server) as client:
        assert _log_in(client, token).status_code == 303
        assert client.get("/ui/queue").status_code == 200
        with unit_of_work(server.db) as session:
            tokens.revoke_token(session, "root", tokens.token_prefix(token))
        after = client.get("/ui/queue")
    assert after.status_code == 303
    assert parse_qs(urlsplit(after.headers["location"]).query)["reason"] == ["expired"]
    assert 'gpupool_session=""' in after.headers["set-cookie"]  # deleted


def test_logging_out_needs_the_csrf_token_and_forgets_the_session(board):
    server, _ = board
    with _as(server, "bob") as client:
        page = client.get("/ui/pools")
        refused = client.post("/ui/logout", data={"csrf": "nope"})
        still_in = client.get("/ui/pools")
        csrf = _CSRF_INPUT.search(page.text).group(1)
        out = client.post("/ui/logout", data={"csrf": csrf})
        after = client.get("/ui/pools")
    assert refused.status_code == 403 and still_in.status_code == 200
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert after.status_code == 303  # to the log-in page again


def test_the_api_does_not_take_the_dashboards_cookie(board):
    server, _ = board
    with _as(server, "root") as client:
        cookie = client.cookies.get("gpupool_session")
        assert client.get("/ui/pools").status_code == 200  # the cookie works on pages ...
    with httpx.Client(base_url=server.url, timeout=30) as api:
        response = api.get("/api/v1/jobs", headers={"Cookie": f"gpupool_session={cookie}"})
    assert response.status_code == 401  # ... but the API wants a bearer token


def test_the_queue_shows_waiting_jobs_per_domain_with_why_they_wait(board):
    server, history = board
    with _as(server, "root") as client:
        page = client.get("/ui/queue").text
    sections = dict(
        re.findall(r'<section class="domain" data-domain="([^"]+)">(.*?)</section>', page, re.S)
    )
    assert set(sections) == {"medical", "general"}
    assert f'data-job="{history.waiting_hosp}"' in sections["medical"]
    assert f'data-job="{history.waiting_lab}"' in sections["general"]
    assert f'data-job="{history.unconsidered}"' in sections["general"]
    assert "no capacity of an allowed GPU type" in sections["medical"]
    assert "not yet considered by a round" in sections["general"]
    for job_id in history.running:
        assert f'<tr data-job="{job_id}">' in page.split("<h2>Running</h2>")[1]


def test_the_queue_pages_waiting_jobs_with_next_and_previous_links(board):
    server, history = board
    waiting = sorted([history.waiting_hosp, history.waiting_lab, history.unconsidered])
    with _as(server, "root") as client:
        first = client.get("/ui/queue?limit=2").text
        after = re.search(r'<a rel="next" href="/ui/queue\?after=(\d+)&amp;limit=2">', first)
        second = client.get(f"/ui/queue?after={after.group(1)}&limit=2").text
        before = re.search(r'<a rel="prev" href="/ui/queue\?before=(\d+)&amp;limit=2">', second)
        back = client.get(f"/ui/queue?before={before.group(1)}&limit=2").text
        bad = client.get("/ui/queue?after=soon")
        too_many = client.get("/ui/queue?limit=5000")

    def waiting_on(page: str) -> list[int]:
        sections = page.split("<h2>Running</h2>")[0]
        return [int(j) for j in re.findall(r'<tr data-job="(\d+)">', sections)]

    assert sorted(waiting_on(first)) == waiting[:2] and 'rel="prev"' not in first
    assert waiting_on(second) == waiting[2:] and 'rel="next"' not in second
    assert sorted(waiting_on(back)) == waiting[:2]
    assert '<strong id="waiting-total">3</strong>' in first  # the total, not the page's
    assert bad.status_code == 422 and "after: must be a positive whole number" in bad.text
    assert too_many.status_code == 422 and "limit: must be between 1 and 1,000" in too_many.text


def test_a_submitter_sees_its_own_organisations_jobs_only(board):
    server, history = board
    with _as(server, "bob") as client:
        queue = client.get("/ui/queue").text
        own = client.get(f"/ui/jobs/{history.finished_lab[0]}")
        other = client.get(f"/ui/jobs/{history.finished_hosp[0]}")
        missing = client.get("/ui/jobs/999999")
    shown = {int(j) for j in re.findall(r'data-job="(\d+)"', queue)}
    lab = {history.waiting_lab, history.unconsidered, history.running[1], *history.finished_lab}
    assert shown == lab
    assert own.status_code == 200 and "train" in own.text
    assert other.status_code == missing.status_code == 404
    assert f"no job with id {history.finished_hosp[0]}" in other.text
    denied = [r for r in audit_rows(server.db, actor="bob") if r.outcome == "denied"]
    assert f"job {history.finished_hosp[0]}" in {r.target for r in denied}


def test_an_agent_sees_the_jobs_placed_at_its_site(board):
    server, history = board
    with _as(server, AGENT) as client:  # the agent of Beijing, where p-a100 is
        queue = client.get("/ui/queue").text
        on_h100 = client.get(f"/ui/jobs/{history.hostile}")  # ran on p-h100 in Shanghai
    shown = {int(j) for j in re.findall(r'data-job="(\d+)"', queue)}
    at_beijing = {*history.running, *history.finished_lab, *history.finished_hosp} - {
        history.finished_hosp[1],  # mri: H100
        history.hostile,  # H100
    }
    assert shown == at_beijing
    assert on_h100.status_code == 403


def test_a_jobs_page_explains_its_pool_price_and_subsidy(board):
    server, history = board
    with _as(server, "hana") as client:
        page = _text(client.get(f"/ui/jobs/{history.finished_hosp[0]}").text)
    # ct-scan: 8 A100 for 4 h at 10.00 per GPU-hour; health pays half
    assert "p-a100 at Beijing: A100 (speed 1.0), 10.00 per GPU-hour" in page
    assert "cost 320.00, subsidy 160.00, the organisation pays 160.00" in page
    assert "160.00 from health" in page
    assert "the only GPU type it can use here: A100" in page


def test_usage_charts_and_tables_add_up_to_the_ledger(board):
    server, _ = board
    with _as(server, "root") as client:
        by_domain = client.get("/ui/usage?by=domain").text
        by_type = client.get("/ui/usage?by=gpu-type").text
    with httpx.Client(base_url=server.url, timeout=30) as api:
        api.headers["Authorization"] = f"Bearer {server.tokens['root']}"
        report = api.get("/api/v1/reports/usage", params={"by": "domain"}).json()
    expected = {}
    for row in report:
        expected[row["domain"]] = expected.get(row["domain"], 0.0) + row["gpu_hours"]
    drawn = {}
    for series, value in re.findall(
        r'class="bar"[^>]*data-series="([^"]+)" data-value="([\d.]+)"', by_domain
    ):
        drawn[series] = drawn.get(series, 0.0) + float(value)
    assert drawn == pytest.approx(expected) and drawn["medical"] == pytest.approx(72.0)
    assert len(set(re.findall(r'data-category="([^"]+)"', by_domain))) >= 3  # several days
    assert set(re.findall(r'data-series="([^"]+)"', by_type)) == {"A100", "H100"}


def test_a_submitter_sees_its_own_usage_and_subsidy_only(board):
    server, _ = board
    with _as(server, "hana") as client:
        usage = client.get("/ui/usage?by=org").text
        programmes = client.get("/ui/programmes").text
    with _as(server, "bob") as client:
        bob_programmes = client.get("/ui/programmes").text
    assert set(re.findall(r'data-series="([^"]+)"', usage)) == {"hosp"}
    assert "Subsidy paid" not in programmes  # the platform-wide spending is not hers
    points = re.findall(
        r'class="point"[^>]*data-series="subsidy to hosp"[^>]*data-value="([\d.]+)"', programmes
    )
    assert [float(p) for p in points][-1] == SUBSIDY_PAID
    assert 'data-programme="health"' not in bob_programmes  # medical only; lab is general
    assert "No programme is open to your organisation" in bob_programmes


def test_the_burn_down_steps_down_with_each_payment(board):
    server, _ = board
    with _as(server, "audrey") as client:  # auditors read every programme's spending
        page = client.get("/ui/programmes").text
    values = [float(v) for v in re.findall(r'class="point"[^>]*data-value="([\d.]+)"', page)]
    assert values[0] == BUDGET and len(values) == 5  # the start and four payments
    assert values == sorted(values, reverse=True)
    assert values[-1] == BUDGET - SUBSIDY_PAID
    assert "even spending" in page and "budget left now <strong>560.00</strong>" in page


def test_pools_show_free_gpus_per_site_and_type(board):
    server, _ = board
    with _as(server, AGENT) as client:
        page = client.get("/ui/pools")
    assert page.status_code == 200
    rows = dict(re.findall(r'<th scope="row">(\w+)</th>\s*(.*?)</tr>', page.text, re.S))
    assert _text(rows["Beijing"]) == "0 / 16 - 0 / 16"  # both A100 nodes held
    assert _text(rows["Shanghai"]) == "- 8 / 8 8 / 8"
    assert re.search(r'id="free-total">8</strong> of 24', page.text)


def test_a_role_refused_a_page_gets_a_403_page_and_an_audit_row(board):
    server, _ = board
    with _as(server, AGENT) as client:
        usage = client.get("/ui/usage")
        programmes = client.get("/ui/programmes")
    assert usage.status_code == programmes.status_code == 403
    assert "otto may not read accounting reports" in usage.text
    actions = {r.action for r in audit_rows(server.db, actor=AGENT) if r.outcome == "denied"}
    assert {"read accounting reports", "list subsidy programmes"} <= actions


def test_policy_history_shows_each_versions_changes_and_diff(board):
    server, _ = board
    with _as(server, "hana") as client:
        page = client.get("/ui/policy").text
    v2 = page.split('id="v2"')[1].split('id="v1"')[0]
    assert "kind: fifo -&gt; priority" in v2 and "domain medical weight: 1 -&gt; 3" in v2
    assert '<span class="removed">-kind: fifo</span>' in v2
    assert '<span class="added">+kind: priority</span>' in v2
    assert "medical first" in v2 and "active" in v2


def test_stored_names_are_escaped(board):
    server, history = board
    with _as(server, "root") as client:
        queue = client.get("/ui/queue").text
        job = client.get(f"/ui/jobs/{history.hostile}").text
    for page in (queue, job):
        assert HOSTILE_NAME not in page
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page


def test_bad_input_gets_an_html_error_page(board):
    server, _ = board
    with _as(server, "root") as client:
        by = client.get("/ui/usage?by=<b>site</b>")
        word = client.get("/ui/jobs/abc")
        huge = client.get("/ui/jobs/99999999999")
        nowhere = client.get("/ui/nowhere")
    assert by.status_code == 422 and "by: must be one of domain, org, gpu-type" in by.text
    assert "<b>site</b>" not in by.text
    assert word.status_code == huge.status_code == nowhere.status_code == 404
    for response in (by, word, huge, nowhere):
        assert response.headers["content-type"].startswith("text/html")


def test_the_dashboard_is_not_in_the_openapi_document(board):
    server, _ = board
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert not [path for path in spec["paths"] if path.startswith("/ui")]

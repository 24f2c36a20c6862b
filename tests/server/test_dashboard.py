"""The dashboard in a real headless Chromium (Playwright driving Debian's chromium).

One browser for the module and the SQLite `gpupool serve` (the history of
tests/server/dashboard_history.py) that test_dashboard_pages.py shares. Each
test logs in through the form, walks the pages a person would, and writes a
screenshot of each page under its tmp_path (``screenshots/``). Rendering does not depend on the
database backend; test_dashboard_pages.py covers both backends over HTTP.

Chromium comes from Debian (scripts/ensure-chromium.sh, run by `make test`);
Playwright cannot download browsers here. Without it these tests are skipped,
unless GPUPOOL_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.server.dashboard_history import (
    BUDGET,
    HOSTILE_NAME,
    SUBSIDY_PAID,
)

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("GPUPOOL_CHROMIUM", "/usr/bin/chromium")


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (bash scripts/ensure-chromium.sh)"
    return None


@pytest.fixture(scope="module")
def browser():
    problem = _unavailable()
    if problem is not None:
        if os.environ.get("GPUPOOL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI and developers run as root, where Chromium's sandbox refuses to start
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def board(browser, dashboard_server):
    return dashboard_server("sqlite")


class Visit:
    """One browser context (its own cookies) that records problems and screenshots."""

    def __init__(self, browser, server, folder) -> None:
        self.server = server
        self.folder = folder / "screenshots"
        self.folder.mkdir()
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def go(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def shot(self, name: str) -> None:
        path = self.folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5_000  # a rendered page, not an empty image

    def log_in(self, user: str) -> None:
        self.page.fill("#token", self.server.tokens[user])
        self.page.click("form.login button[type=submit]")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, board, tmp_path):
    server, _ = board
    session = Visit(browser, server, tmp_path)
    yield session
    session.close()


def test_an_admin_logs_in_sees_the_queue_opens_a_job_and_the_burn_down(visit, board):
    _, history = board
    page = visit.page
    visit.go("/ui/queue")
    assert page.url.startswith(f"{visit.server.url}/ui/login?next=")
    visit.shot("login")
    visit.log_in("root")
    page.wait_for_url("**/ui/queue")
    assert page.locator("#waiting-total").inner_text() == "3"
    medical = page.locator('section.domain[data-domain="medical"]')
    assert medical.locator(f'tr[data-job="{history.waiting_hosp}"] td.reason').inner_text() == (
        "no capacity of an allowed GPU type"
    )
    assert page.locator(f'tr[data-job="{history.hostile}"] td').nth(1).inner_text() == (
        HOSTILE_NAME  # shown as text, never run
    )
    assert page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    visit.shot("queue")

    page.click(f'table.ended tr[data-job="{history.finished_hosp[0]}"] a.job')
    page.wait_for_url(f"**/ui/jobs/{history.finished_hosp[0]}")
    assert page.locator("h1").inner_text() == f"Job {history.finished_hosp[0]}"
    assert page.locator("#placements tbody tr").count() == 1
    assert page.locator("#price .subsidy").inner_text() == "160.00"
    assert page.locator("#price ul.sources").inner_text() == "160.00 from health"
    visit.shot("job")

    page.click("nav >> text=Programmes")
    page.wait_for_url("**/ui/programmes")
    chart = page.locator('section[data-programme="health"] svg.chart')
    assert chart.is_visible()
    values = [
        float(v)
        for v in chart.locator("circle.point").evaluate_all(
            "points => points.map(p => p.dataset.value)"
        )
    ]
    assert values[0] == BUDGET and values[-1] == BUDGET - SUBSIDY_PAID and len(values) == 5
    assert chart.locator("polyline.reference").count() == 1  # the even-spending line
    box = chart.bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 150  # drawn, not collapsed
    visit.shot("programmes")

    for path, name in (
        ("/ui/pools", "pools"),
        ("/ui/usage?by=org", "usage"),
        ("/ui/policy", "policy"),
    ):
        visit.go(path)
        assert page.locator("h1").is_visible()
        visit.shot(name)
    assert page.locator("pre.diff .added").count() > 0
    assert visit.errors == [] and visit.dialogs == []  # no script error, no CSP violation, no alert


def test_a_submitter_sees_only_its_organisation_and_logs_out(visit, board):
    _, history = board
    page = visit.page
    visit.go("/ui/login")
    visit.log_in("bob")
    page.wait_for_url("**/ui/pools")  # the home page
    visit.go("/ui/queue")
    orgs = page.locator("table.jobs tbody tr td:nth-child(3)").all_inner_texts()
    assert orgs and set(orgs) == {"lab"}
    visit.shot("queue-bob")

    visit.go(f"/ui/jobs/{history.finished_hosp[0]}")  # hosp's job: as if it did not exist
    assert page.locator("h1").inner_text() == "Not found"
    visit.shot("other-org-job")
    assert [e for e in visit.errors if "404" not in e] == []  # Chromium logs the page's 404
    visit.errors.clear()

    visit.go("/ui/usage?by=org")
    series = page.locator("svg.chart rect.bar").evaluate_all(
        "bars => [...new Set(bars.map(b => b.dataset.series))]"
    )
    assert series == ["lab"]
    visit.shot("usage-bob")

    page.click("form.logout button")
    page.wait_for_url("**/ui/login")
    visit.go("/ui/queue")
    assert "/ui/login" in page.url  # the session is gone
    assert visit.errors == [] and visit.dialogs == []

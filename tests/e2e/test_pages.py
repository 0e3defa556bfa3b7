"""The support agents' and reviewers' pages in a real browser: a real uvicorn process on real
Redis and SQLite, the models of tests/integration/conftest.py, and Debian's Chromium driven
headless by Playwright. An account suspended for SMS pumping (a decision with a score and
contributions), an objection opened and acknowledged; the decision page shows the reasons, the
waterfall and the case's history, the queue lists the case. Screenshots go to the test's
temporary folder; `make screenshots` (ARBITER_TEST_SCREENSHOTS=docs/img) refreshes the ones
docs/objections.md shows."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.integration.test_service_e2e import pump
from tests.server import Server

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SHOTS_DIR = os.environ.get("ARBITER_TEST_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: install Debian's package (`apt-get install "
            "chromium`, or scripts/ensure-chromium.sh); the page tests never download one.",
            pytrace=False,
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory, redis_server):
    live = Server(
        tmp_path_factory.mktemp("pages"), tracking_uri=models.tracking_uri, model_name=NAME,
        redis_url=TEST_REDIS_URL, account_model_name=ACCOUNT_NAME,
    ).wait("/healthz")  # fmt: skip
    yield live
    live.stop()


def test_the_decision_page_and_the_queue_show_a_case_in_a_browser(server, browser, tmp_path):
    shots = Path(SHOTS_DIR) if SHOTS_DIR else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    agent_key, reviewer_key = server.key("agent-ann", "support"), server.key("rev-bob", "reviewer")
    AGENT = {"Authorization": f"Bearer {agent_key}"}
    with server.client("admin") as api:
        account_id = f"acct-page-{uuid.uuid4().hex[:6]}"
        [decision] = pump(api, account_id)["decisions"]
        assert decision["action"] == "suspend_account"
        decision_id = decision["decision_id"]
        opened = api.post(f"/v1/decisions/{decision_id}/objections", headers=AGENT, json={
            "statement": "These were my customers' one-time passwords.", "channel": "email",
            "jurisdiction": "GDPR"})  # fmt: skip
        assert opened.status_code == 201, opened.text
        case_id = opened.json()["objection_id"]
        step = {"action": "acknowledge", "note": "acknowledged by email"}
        moved = api.post(f"/v1/objections/{case_id}/transitions", headers=AGENT, json=step)
        assert moved.status_code == 200, moved.text
        reasons = api.get(f"/v1/decisions/{decision_id}/rationale", headers=AGENT).json()[
            "customer"]["reasons"]  # fmt: skip
        nobody = httpx.get(f"{server.url}/ui/decisions/{decision_id}")
        assert nobody.status_code == 401 and nobody.json()["error"]["code"] == "unauthenticated"
        unknown = api.get("/ui/decisions/no-such-decision", headers=AGENT)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "decision_not_found"

    page = signed_in(browser, server, agent_key)
    page.goto(f"{server.url}/ui/decisions/{decision_id}")
    assert decision_id in page.title()
    text = page.inner_text("body")
    for reason in reasons:
        assert reason["text"] in text
    assert "What would have changed the outcome" in text
    assert page.locator("svg.waterfall rect").count() > 3
    case = page.locator(".case")
    assert case.count() == 1
    assert case.locator(".status").inner_text() == "acknowledged"
    assert "acknowledged by email" in case.inner_text()
    page.screenshot(path=str(shots / "decision-page.png"), full_page=True)

    page.close()
    page = signed_in(browser, server, reviewer_key)  # lands on the queue
    row = page.locator("tr", has_text=decision_id)
    assert row.count() == 1 and "acknowledged" in row.inner_text()
    page.screenshot(path=str(shots / "objections-queue.png"), full_page=True)
    row.locator("a").click()  # the queue links to the decision page
    assert decision_id in page.title() and "reading as rev-bob" in page.inner_text("header")

    page.goto(f"{server.url}/ui/objections?status=closed")
    assert page.locator("tr", has_text=decision_id).count() == 0
    page.close()
    with server.client("privacy") as api:
        export = api.get(f"/v1/accounts/{account_id}/export").json()
    readers = [e["actor"] for e in export["audit_events"] if e["action"] == "rationale.read"]
    assert "rev-bob" in readers  # the page's reads are audited under the reader's name


def signed_in(browser, server, key: str):
    """A new browser session signed in through the login form (the key kept in a cookie)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/ui/login")
    page.fill("input[name=key]", "arb_000000000000_" + "x" * 43)
    page.click("button")
    assert "unknown or revoked" in page.inner_text("body")
    page.fill("input[name=key]", key)
    page.click("button")
    page.wait_for_url("**/ui/objections")
    return page

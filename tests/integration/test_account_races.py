"""Account decisions made at once for one account: one suspension, one notice. In one process
they are decided one at a time (the second finds the account suspended); across processes the
store records the second decision without a second suspension or notice."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from api.app import create_app
from engine.database import reading
from engine.records import Reason
from tests.conftest import ROOT
from tests.integration import test_decision_store as stores
from tests.integration.test_authorization import settings_for
from tests.integration.test_decision_store import decision
from tests.server import running

pytestmark = pytest.mark.integration
new_database, url, store = stores.new_database, stores.url, stores.store


def deny_app(tmp_path) -> Any:
    """The app in process, its policy deny-listing the destination range +88216."""
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["lists"]["deny"]["destination_prefix"] = ["+88216"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return create_app(settings_for(tmp_path, policy_path=path))


def sms(account_id: str, i: int, ts: int) -> dict:
    """An SMS of `account_id` to the deny-listed range."""
    return {"event_id": f"sms-{account_id}-{i}", "type": "sms", "ts": ts,
            "account_id": account_id, "dest_number": f"+88216{i:07d}", "dest_prefix": "+88216",
            "dest_country": "ZZ", "segments": 1, "cost": 0.25, "verified": False}  # fmt: skip


def test_concurrent_batches_suspend_an_account_once_and_notify_once(tmp_path, redis_client):
    app = deny_app(tmp_path)

    async def body(client) -> None:
        account_id, ts = f"acct-race-{uuid.uuid4().hex[:6]}", int(time.time() * 1000) - 60_000
        assert (await client.get("/v1/accounts/warm-up")).status_code == 200  # key known
        answers = await asyncio.gather(*[
            client.post("/v1/events", json={"events": [sms(account_id, i, ts + i)]})
            for i in range(4)
        ])  # fmt: skip
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        decisions = [d for a in answers for d in a.json()["decisions"]]
        with app.state.runtime.store.database.connect() as conn:
            suspends = conn.execute(sa.text(
                "SELECT count(*) FROM decisions WHERE account_id = :a"
                " AND action = 'suspend_account'"
            ), {"a": account_id}).scalar()  # fmt: skip
            notices = conn.execute(
                sa.text("SELECT count(*) FROM outbox WHERE account_id = :a"), {"a": account_id}
            ).scalar()
        assert len(app.state.runtime.store.suspension_events(account_id)) == 1
        assert (len(decisions), suspends, notices) == (1, 1, 1)

    running(app, body)


def test_a_second_account_suspension_is_recorded_without_a_second_notice(store):
    # Two processes decided one account at once: the store keeps both decisions, one
    # suspension and one notice. A payment's decision always gets its own notice.
    notice = {"type": "adverse_decision"}
    for n in (1, 2):
        record = decision(n, account="acct-twice", action="suspend_account",
                          subject_type="account")  # fmt: skip
        store.append_decision(record, suspend=True, notification=notice)
    payment = decision(3, account="acct-twice", action="suspend_account")
    store.append_decision(payment, suspend=True, notification=notice)
    assert len(store.suspension_events("acct-twice")) == 1
    with reading(store.database) as conn:
        query = sa.text("SELECT d.subject_type FROM outbox o JOIN decisions d ON d.decision_id ="
                        " o.decision_id WHERE o.account_id = :a ORDER BY o.id")  # fmt: skip
        kinds = conn.execute(query, {"a": "acct-twice"}).scalars().all()
    assert kinds == ["account", "payment"]


def test_an_account_kept_under_review_is_told_once_a_day(store):
    # Re-decided after each trigger's cooldown with the same review: one notice a day; other
    # reasons, or a payment's review, are news and are told.
    notice = {"type": "adverse_decision"}
    hour, same = 3_600_000, (Reason("HIGH_RISK_SCORE", "The risk score is high."),)
    other = (Reason("SMS_PUMPING", "Texts to many numbers."),)
    for n, at, reasons in [(1, 0, same), (2, hour, same), (3, 2 * hour, same),
                           (4, 3 * hour, other), (5, 27 * hour, same)]:  # fmt: skip
        record = decision(n, account="acct-review", action="review", subject_type="account",
                          reasons=reasons, created_at=1_700_000_000_000 + at)  # fmt: skip
        store.append_decision(record, suspend=False, notification=notice)
    payment = decision(6, account="acct-review", action="review",
                       created_at=1_700_000_000_000 + 3 * hour)  # fmt: skip
    store.append_decision(payment, suspend=False, notification=notice)
    with reading(store.database) as conn:
        query = sa.text("SELECT decision_id FROM outbox WHERE account_id = :a ORDER BY id")
        told = conn.execute(query, {"a": "acct-review"}).scalars().all()
    assert [t.split("-")[1] for t in told] == ["0001", "0004", "0005", "0006"]

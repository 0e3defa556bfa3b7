"""While the decision store is down, activity of an account suspended already is skipped as
it is when the store is up: the rest of the batch is decided (into the journal), and the
on-demand score answers 409, not 503."""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest

from api.app import create_app
from tests.integration.test_authorization import settings_for
from tests.server import running

pytestmark = pytest.mark.integration


def sms(account_id: str, i: int, ts: int) -> dict:
    return {"event_id": f"sms-{account_id}-{i}", "type": "sms", "ts": ts,
            "account_id": account_id, "dest_number": f"+88216{i:07d}", "dest_prefix": "+88216",
            "dest_country": "ZZ", "segments": 1, "cost": 0.25, "verified": False}  # fmt: skip


def test_a_suspended_accounts_activity_does_not_block_the_batch_while_the_store_is_down(
    tmp_path, redis_client
):
    app = create_app(settings_for(tmp_path))

    async def body(client) -> None:
        t0 = int(time.time() * 1000) - 60 * 60_000
        x, y = f"acct-x-{uuid.uuid4().hex[:4]}", f"acct-y-{uuid.uuid4().hex[:4]}"
        pumped = [sms(x, i, t0 + i * 1000) for i in range(120)]
        first = (await client.post("/v1/events", json={"events": pumped})).json()
        assert [d["action"] for d in first["decisions"]] == ["suspend_account"]
        db = sqlite3.connect(tmp_path / "arbiter.db")  # the store goes away ("no such table")
        db.execute("ALTER TABLE account_status RENAME TO account_status_away")
        db.execute("ALTER TABLE decisions RENAME TO decisions_away")
        db.commit()
        t1 = t0 + 30 * 60_000  # past x's cooldown
        batch = [sms(x, 1000 + i, t1 + i * 1000) for i in range(120)]
        batch += [sms(y, i, t1 + i * 1000) for i in range(120)]
        answer = await client.post("/v1/events", json={"events": batch})
        assert answer.status_code == 200, answer.text
        assert [d["account_id"] for d in answer.json()["decisions"]] == [y]
        refused = await client.post(f"/v1/accounts/{x}/score")
        assert refused.status_code == 409, refused.text

    running(app, body)

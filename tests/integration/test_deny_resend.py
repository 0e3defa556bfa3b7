"""Resending a batch is safe (docs/api.md): a deny-listed destination acts once per event.
A resend after a reviewer reinstated the account does not suspend it again nor notify again;
a resend after a decision that failed decides."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa

from engine.errors import StoreUnavailable
from tests.integration.test_account_races import deny_app, sms
from tests.server import running

pytestmark = pytest.mark.integration


def test_a_resent_batch_does_not_undo_a_reinstatement(tmp_path, redis_client):
    app = deny_app(tmp_path)

    async def body(client) -> None:
        account_id = f"acct-resend-{uuid.uuid4().hex[:6]}"
        batch = {"events": [sms(account_id, 1, int(time.time() * 1000) - 60_000)]}
        first = (await client.post("/v1/events", json=batch)).json()
        assert [d["action"] for d in first["decisions"]] == ["suspend_account"]
        lifted = await client.post(
            f"/v1/accounts/{account_id}/reinstate",
            json={"reason": "checked by a reviewer: a false positive"},
        )
        assert lifted.status_code == 200 and lifted.json()["status"] == "active"
        again = (await client.post("/v1/events", json=batch)).json()  # the pipeline's resend
        assert again["applied"] == 0
        status = (await client.get(f"/v1/accounts/{account_id}")).json()
        with app.state.runtime.store.database.connect() as conn:
            notices = conn.execute(
                sa.text("SELECT count(*) FROM outbox WHERE account_id = :a"), {"a": account_id}
            ).scalar()
        assert again["decisions"] == [] and status["status"] == "active"
        assert notices == 2  # the suspension's and the reinstatement's

    running(app, body)


def test_a_resend_after_a_failed_decision_decides(tmp_path, redis_client):
    app = deny_app(tmp_path)

    async def body(client) -> None:
        account_id = f"acct-failed-{uuid.uuid4().hex[:6]}"
        batch = {"events": [sms(account_id, 1, int(time.time() * 1000) - 60_000)]}
        service = app.state.runtime.service
        append = service._append

        def failing(record, amount=None):  # the store refuses this once
            service._append = append
            raise StoreUnavailable("the disk is full")

        service._append = failing
        assert (await client.post("/v1/events", json=batch)).status_code == 503
        again = (await client.post("/v1/events", json=batch)).json()
        assert again["applied"] == 0
        assert [d["action"] for d in again["decisions"]] == ["suspend_account"]
        status = (await client.get(f"/v1/accounts/{account_id}")).json()
        assert status["status"] == "suspended"

    running(app, body)

"""Hostile input against the app in process (real Redis and SQLite): a card number anywhere is
refused before any route runs, named by field, never echoed, never stored or logged; oversized
bodies are refused; every 4xx has the one error body."""

from __future__ import annotations

import logging

import httpx
import pytest

from api.app import create_app
from tests.integration.test_authorization import settings_for
from tests.server import running

pytestmark = pytest.mark.integration
CARD = "4111 1111 1111 1111"


def payment(**changes: object) -> dict:
    body = {"payment_id": "pay-hostile-1", "account_id": "acct-h", "amount": 25.0,
            "currency": "USD", "card_fp": "fp-1", "bin_country": "US", "billing_country": "US",
            "ip": "73.12.40.9"}  # fmt: skip
    return {**body, **changes}


def test_a_card_number_anywhere_is_refused_named_and_kept_nowhere(tmp_path, caplog):
    app = create_app(settings_for(tmp_path))
    caplog.set_level(logging.DEBUG)

    async def body(client: httpx.AsyncClient) -> None:
        answer = await client.post("/v1/payments/score", json=payment(card_fp=CARD))
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("card_number", "card_fp")
        assert error["request_id"] and CARD.replace(" ", "") not in answer.text
        events = [{"event_id": "e-1", "type": "login", "ts": 1764412345678,
                   "account_id": "acct-h", "ip": "73.12.40.9", "success": True,
                   "country": "US", "user_agent": f"card {CARD}"}]  # fmt: skip
        refused = await client.post("/v1/events", json={"events": events})
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == "events[0].user_agent"
        assert (await client.get("/v1/decisions/x")).status_code == 404  # nothing stored
        store = app.state.runtime.store
        assert store.get_by_payment("pay-hostile-1") is None
        big = await client.post("/v1/events", content=b"[" + b" " * (9 * 1024 * 1024) + b"]",
                                headers={"content-type": "application/json"})  # fmt: skip
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        unknown = await client.post("/v1/payments/score", json=payment(coupon="X"))
        assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "coupon"

    running(app, body)
    assert CARD.replace(" ", "") not in caplog.text and CARD not in caplog.text

"""Hostile input against the app in process (real Redis and SQLite): a card number anywhere is
refused before any route runs, named by field, never echoed, never stored or logged; oversized
bodies are refused; every 4xx has the one error body."""

from __future__ import annotations

import json
import logging
import time
import uuid

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


def sms_event(**changes: object) -> dict:
    body = {"event_id": f"e-odd-{uuid.uuid4().hex[:8]}", "type": "sms",
            "ts": int(time.time() * 1000),
            "account_id": "acct-odd", "dest_number": "+447700900123", "dest_prefix": "+44",
            "dest_country": "GB", "segments": 1, "cost": 0.05, "verified": True}  # fmt: skip
    return {**body, **changes}


HOUR_MS = 3_600_000
# (door, raw body, field named, words in the message): each answered 422 `invalid_request` or
# `invalid_event`, never a 500, the field named as the docs name it.
ODD = [
    ("score", lambda: payment(ts=int(time.time() * 1000) + 2 * HOUR_MS), "ts", "ahead"),
    ("score", lambda: payment(account_id=" "), "account_id", "non-empty"),
    ("score", lambda: payment(payment_id="p\u0000x"), "payment_id", "control characters"),
    ("score", lambda: payment(card_fp="fp-\ud800"), "card_fp", None),
    ("score", lambda: b'{"payment_id": 025}', "body", "not JSON"),
    ("events", lambda: {"events": [sms_event(cost=10**400)]}, "events[0].cost", "finite"),
    (
        "events",
        lambda: {"events": [sms_event(account_id="acct-\ud800")]},
        "events[0].account_id",
        "surrogate",
    ),
    (
        "events",
        lambda: {"events": [sms_event(ts=int(time.time() * 1000) + 46 * 24 * HOUR_MS)]},
        "events[0].ts",
        "ahead of this server's clock",
    ),
    ("events", lambda: {"events": [sms_event(event_id=" ")]}, "events[0].event_id", "non-empty"),
    (
        "events",
        lambda: {"events": [sms_event(type=4111111111111111.0)]},
        "events[0].type",
        "must be a string",
    ),
    ("events", lambda: {"events": [sms_event(type=["sms"])]}, "events[0].type", "must be a string"),
    ("events", lambda: {"events": [sms_event(type={"sms": 1})]}, "events[0].type", "a string"),
    ("events", lambda: b'{"events": [}', "body", "not JSON"),
    ("events", lambda: {"events": [sms_event(), 5]}, "events[1]", "valid dictionary"),
    ("events", lambda: twice(cost=9.0), "events[1].event_id", "twice with different content"),
]


def twice(**other: object) -> dict:
    """One event_id for two different events in a batch (the same one twice is a retry)."""
    event = sms_event()
    return {"events": [event, {**event, **other}]}


def test_the_same_event_twice_in_a_batch_is_applied_once(tmp_path):
    app = create_app(settings_for(tmp_path))

    async def body(client: httpx.AsyncClient) -> None:
        answer = await client.post("/v1/events", json=twice())
        assert answer.status_code == 200, answer.text
        assert (answer.json()["received"], answer.json()["applied"]) == (2, 1)

    running(app, body)


@pytest.mark.parametrize(("door", "raw", "field", "words"), ODD)
def test_odd_input_is_refused_naming_the_field_and_nothing_is_applied(
    tmp_path, door, raw, field, words
):
    app = create_app(settings_for(tmp_path))
    path = "/v1/payments/score" if door == "score" else "/v1/events"
    made = raw()
    # JSON as the standard library writes it: a lone surrogate as its `\ud800` escape.
    content = made if isinstance(made, bytes) else json.dumps(made).encode()

    async def body(client: httpx.AsyncClient) -> None:
        answer = await client.post(path, content=content,
                                   headers={"content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] in ("invalid_request", "invalid_event"), error
        assert error["field"] == field, error
        assert words is None or words in error["message"], error
        assert "4111111111111111" not in answer.text
        # Nothing half-written: the same event or payment, made valid, is new.
        if door == "events":
            sent = made["events"][0]["event_id"] if isinstance(made, dict) else " "
            again = sms_event(**({} if sent.isspace() else {"event_id": sent}))
            answered = await client.post(path, json={"events": [again]})
            assert answered.status_code == 200, answered.text
            assert answered.json()["applied"] == 1, answered.text
        else:
            assert app.state.runtime.store.get_by_payment("pay-hostile-1") is None

    running(app, body)

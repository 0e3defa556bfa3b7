"""The scoring service end to end: small real models trained into a temporary MLflow store and
promoted (tests/integration/conftest.py), the real uvicorn server process
(`api.app:create_app --factory`) on real Redis and SQLite, spoken to over HTTP. A second server
whose Redis is unreachable decides degraded."""

from __future__ import annotations

import time
import uuid

import pytest

from engine.store import DecisionStore
from features.spec import load_spec
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory, redis_server):
    common = {"tracking_uri": models.tracking_uri, "model_name": NAME,
              "account_model_name": ACCOUNT_NAME}  # fmt: skip
    live = Server(tmp_path_factory.mktemp("server"), redis_url=TEST_REDIS_URL, **common)
    cut_off = Server(tmp_path_factory.mktemp("degraded"), redis_url="redis://127.0.0.1:1/0",
                     flag_sync_seconds="0.5", **common)  # fmt: skip
    try:
        live.wait("/healthz")
        cut_off.wait("/healthz")
        yield live, cut_off
    finally:
        live.stop()
        cut_off.stop()


@pytest.fixture
def api(servers, redis_client):
    with servers[0].client() as client:
        yield client


def payment(**changes) -> dict:
    body = {
        "payment_id": f"pay-{uuid.uuid4().hex[:12]}",
        "account_id": f"acct-{uuid.uuid4().hex[:8]}",
        "amount": 25.0,
        "currency": "USD",
        "card_fp": f"card-{uuid.uuid4().hex[:8]}",
        "bin_country": "US",
        "billing_country": "US",
        "ip": "73.12.40.9",
    }
    return {**body, **changes}


def test_readyz_reports_every_check_with_its_detail(api):
    response = api.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["model"] == {"ok": True, "name": NAME, "version": "1"}
    assert checks["redis"]["ok"] and checks["store"]["ok"] and checks["policy"]["ok"]
    assert api.get("/healthz").json() == {"status": "ok"}


def test_a_benign_payment_is_decided_and_recorded(api):
    response = api.post("/v1/payments/score", json=payment())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["action"] in ("allow", "review") and not body["degraded"]
    assert 0.0 <= body["score"] <= 1.0 and body["model_version"] == "1"
    record = api.get(f"/v1/decisions/{body['decision_id']}").json()
    assert record["action"] == body["action"] and record["policy_version"] == body["policy_version"]
    assert record["model_name"] == NAME and record["seq"] >= 1 and len(record["hash"]) == 64


def test_a_retry_returns_the_first_decision_and_the_payment_counts_once(api):
    ts = int(time.time() * 1000) - 60_000
    first = payment(ts=ts)
    one = api.post("/v1/payments/score", json=first).json()
    again = api.post("/v1/payments/score", json=first).json()
    assert again == one
    later = payment(account_id=first["account_id"], card_fp=first["card_fp"], ts=ts + 1000)
    decided = api.post("/v1/payments/score", json=later).json()
    features = api.get(f"/v1/decisions/{decided['decision_id']}").json()["features"]
    assert features["account_payments_24h"] == 1


def test_a_payment_id_sent_again_for_another_payment_is_a_409_not_its_decision(api):
    # An idempotency key names one payment: billing reusing it for another account or amount
    # must not have the first payment's `allow` charge the second.
    ts = int(time.time() * 1000) - 60_000
    first = payment(ts=ts)
    one = api.post("/v1/payments/score", json=first).json()
    for field, value, when in [
        ("account_id", "acct-someone-else", ts),  # the same hour: the dedupe marker finds it
        ("amount", 999_999.0, ts),
        ("account_id", "acct-someone-else", ts - 5 * 3_600_000),  # another hour: the store does
    ]:
        other = {**first, field: value, "ts": when}
        answer = api.post("/v1/payments/score", json=other)
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("payment_conflict", field), error
        assert first["payment_id"] in error["message"]
    assert api.post("/v1/payments/score", json=first).json() == one  # a true retry still is


def test_a_suspended_account_is_declined_without_scoring(api, servers):
    store = DecisionStore(servers[0].database_url)
    try:
        store.set_account_status("acct-suspended", "suspended", actor="test", reason="e2e")
    finally:
        store.close()
    body = api.post("/v1/payments/score", json=payment(account_id="acct-suspended")).json()
    assert body["action"] == "decline" and body["score"] is None
    assert [r["code"] for r in body["reasons"]] == ["ACCOUNT_SUSPENDED"]
    assert api.get("/v1/accounts/acct-suspended").json()["status"] == "suspended"


def test_a_deny_listed_ip_is_declined_with_its_reason(api):
    body = api.post("/v1/payments/score", json=payment(ip="199.10.4.7")).json()
    assert body["action"] in ("decline", "suspend_account")
    assert "DENY_LISTED_IP" in [r["code"] for r in body["reasons"]]
    assert all(r["text"] for r in body["reasons"])


def test_a_payment_arbiter_declines_counts_as_declined_for_the_next_one(api):
    ts = int(time.time() * 1000) - 60_000
    first = payment(ts=ts, amount=40.0)
    allowed = api.post("/v1/payments/score", json=first).json()
    assert allowed["action"] == "allow", allowed
    refused = payment(account_id=first["account_id"], card_fp=first["card_fp"], ts=ts + 1000,
                      ip="199.10.4.7", amount=900.0)  # fmt: skip
    declined = api.post("/v1/payments/score", json=refused).json()
    assert declined["action"] in ("decline", "suspend_account"), declined
    assert api.post("/v1/payments/score", json=refused).json() == declined  # a retry
    later = payment(account_id=first["account_id"], card_fp=first["card_fp"], ts=ts + 2000)
    decided = api.post("/v1/payments/score", json=later).json()
    features = api.get(f"/v1/decisions/{decided['decision_id']}").json()["features"]
    assert features["account_payments_24h"] == 2  # both counted, once each
    assert features["account_declines_24h"] == 1 and features["card_declines_24h"] == 1
    assert features["account_amount_24h"] == 40.0  # the declined 900 was never charged
    assert features["account_decline_share_7d"] == 0.5


def test_billing_reports_an_issuer_decline_and_it_is_counted_once(api):
    ts = int(time.time() * 1000) - 60_000
    first = payment(ts=ts, amount=40.0)
    assert api.post("/v1/payments/score", json=first).json()["action"] == "allow"
    report = {**first, "status": "declined"}
    done = api.post("/v1/payments/outcome", json=report)
    assert done.status_code == 200, done.text
    assert done.json()["counted"] == "restated" and done.json()["status"] == "declined"
    assert api.post("/v1/payments/outcome", json=report).json()["counted"] == "unchanged"
    approved = api.post("/v1/payments/outcome", json={**first, "status": "approved"})
    assert approved.json()["counted"] == "unchanged"
    later = payment(account_id=first["account_id"], card_fp=first["card_fp"], ts=ts + 1000)
    decided = api.post("/v1/payments/score", json=later).json()
    features = api.get(f"/v1/decisions/{decided['decision_id']}").json()["features"]
    assert features["account_declines_24h"] == 1 and features["card_declines_24h"] == 1
    assert features["account_amount_24h"] == 0.0  # the refused 40.00 was never charged


def test_an_outcome_names_what_does_not_match_the_scored_payment(api):
    ts = int(time.time() * 1000) - 60_000
    scored = payment(ts=ts)
    declined = api.post("/v1/payments/score", json={**scored, "ip": "199.10.4.7"}).json()
    assert declined["action"] in ("decline", "suspend_account")
    report = {**scored, "ip": "199.10.4.7", "status": "declined"}
    assert api.post("/v1/payments/outcome", json=report).json()["counted"] == "unchanged"
    for changes, status, field in [
        ({"payment_id": "pay-never-scored"}, 404, None),
        ({"account_id": "acct-someone-else"}, 422, "account_id"),
        ({"amount": 26.0}, 422, "amount"),
        ({"ts": ts - 3 * 3_600_000}, 422, "ts"),  # not when it was counted
        ({"ts": ts + 1}, 422, "ts"),  # the same hour, not the same time
        ({"status": "refunded"}, 422, "status"),
    ]:
        answer = api.post("/v1/payments/outcome", json={**report, **changes})
        assert answer.status_code == status, (changes, answer.text)
        assert answer.json()["error"].get("field") == field, answer.text


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": -5}, "amount"),
        ({"amount": True}, "amount"),  # not read as 1
        ({"amount": "49"}, "amount"),  # a number, not text
        ({"coupon": "X"}, "coupon"),
    ],
)
def test_an_invalid_body_is_refused_naming_the_field(api, changes, field):
    response = api.post("/v1/payments/score", json=payment(**changes))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field
    assert field in error["message"] and error["request_id"]


def test_an_unknown_decision_is_a_404_with_the_error_body(api):
    response = api.get("/v1/decisions/no-such-decision", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "decision_not_found",
            "message": "no decision no-such-decision",
            "request_id": "req-42",
        }
    }


def test_without_redis_payments_are_decided_degraded(servers):
    with servers[1].client() as client:
        sent = payment()
        response = client.post("/v1/payments/score", json=sent)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["degraded"] is True and body["action"] == "review" and body["score"] is None
        assert [r["code"] for r in body["reasons"]] == ["FEATURES_UNAVAILABLE"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["redis"]["ok"]
        assert ready.json()["error"]["code"] == "not_ready"
        # A retry gets its first decision (the store keeps one per payment).
        again = client.post("/v1/payments/score", json=sent).json()
        assert again["decision_id"] == body["decision_id"]


def test_without_redis_a_suspended_account_is_still_declined(servers):
    account_id = f"acct-susp-{uuid.uuid4().hex[:6]}"
    store = DecisionStore(servers[1].database_url)
    try:
        store.set_account_status(account_id, "suspended", actor="tests", reason="tests")
    finally:
        store.close()
    time.sleep(1.5)  # the service's flag sync (every 0.5 s here) reads it from the store
    with servers[1].client() as client:
        body = client.post("/v1/payments/score", json=payment(account_id=account_id)).json()
    assert body["action"] == "decline" and body["degraded"] is False
    assert [r["code"] for r in body["reasons"]] == ["ACCOUNT_SUSPENDED"]


def test_the_echo_endpoint_returns_its_body(api):
    # The floor the scoring benchmark compares with: the same app, no work.
    response = api.post("/v1/echo", json={"ping": 1})
    assert (response.status_code, response.json()) == (200, {"echo": {"ping": 1}})


def test_an_allow_decision_gets_its_contributions_on_first_read(api):
    # Found by scoring honest payments until one is allowed (most are).
    for i in range(20):
        body = api.post("/v1/payments/score", json=payment(payment_id=f"deferred-{i}")).json()
        if body["action"] == "allow":
            break
    assert body["action"] == "allow"
    first = api.get(f"/v1/decisions/{body['decision_id']}").json()
    contributions, base = first["contributions"], first["base_value"]
    model_features = load_spec(ROOT / "config" / "features.yaml").output
    assert set(contributions) == set(model_features) <= set(first["features"])
    assert abs(base + sum(contributions.values()) - first["raw_margin"]) <= 1e-9
    # Stored beside the record: the next read serves the same numbers, the record unchanged.
    second = api.get(f"/v1/decisions/{body['decision_id']}").json()
    assert (second["contributions"], second["hash"]) == (contributions, first["hash"])

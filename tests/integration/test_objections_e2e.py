"""The right to object end to end, as support, reviewers and the customer meet it: a real uvicorn
process on real Redis and SQLite, the models of tests/integration/conftest.py in a real MLflow
store, a webhook receiver standing in for the customer's inbox.

* an account suspended by its activity (SMS pumping, no payment involved) -> objection ->
  acknowledged -> review -> overturned -> the account active again and its payments scored ->
  a not-fraud label for retraining, with the deadlines and the notices checked;
* a declined payment -> objection -> upheld: the customer told the rationale applied and the
  remedies left;
* the rationale: at most four customer reasons, no internals, what would have changed the
  outcome, verified against the exact model version; every read audited; the audit trail and
  the decision chain verify through the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid

import httpx
import pytest

from tests.conftest import ROOT, TEST_REDIS_URL
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.integration.test_service_e2e import payment, pump
from tests.receiver import Receiver
from tests.server import Server

pytestmark = pytest.mark.integration

# Each person has a key of their own: its name is the actor the case and the audit record.
PEOPLE = {"agent-ann": "support", "rev-bob": "reviewer", "rev-cy": "reviewer", "dpo": "privacy"}


@pytest.fixture(scope="module")
def inbox():
    receiver = Receiver()
    receiver.start(status=200)
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory, redis_server, inbox):
    live = Server(
        tmp_path_factory.mktemp("objections"), tracking_uri=models.tracking_uri,
        model_name=NAME, redis_url=TEST_REDIS_URL, account_model_name=ACCOUNT_NAME,
        webhook_url=inbox.url, notify_backoff_seconds="0.2",
    ).wait("/healthz")  # fmt: skip
    yield live
    live.stop()


@pytest.fixture
def api(server):
    with server.client("scorer") as client:
        yield client


@pytest.fixture(scope="module")
def keys(server) -> dict[str, dict[str, str]]:
    """Headers per person (PEOPLE)."""
    return {name: {"Authorization": f"Bearer {server.key(name, role)}"}
            for name, role in PEOPLE.items()}  # fmt: skip


def act(api: httpx.Client, objection_id: str, who: dict, action: str, note: str, **more):
    response = api.post(f"/v1/objections/{objection_id}/transitions", headers=who,
                        json={"action": action, "note": note, **more})  # fmt: skip
    return response


def delivered(inbox: Receiver, account_id: str, kind: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, _, body in list(inbox.requests):
            if body.get("account_id") == account_id and body.get("type") == kind:
                return body
        time.sleep(0.1)
    seen = [(b.get("account_id"), b.get("type")) for _, _, b in inbox.requests]
    raise AssertionError(f"no {kind} notice for {account_id} reached the receiver: {seen}")


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_a_suspended_account_objects_and_is_reinstated(api, server, inbox, keys):
    AGENT, REVIEWER = keys["agent-ann"], keys["rev-bob"]
    account_id = f"acct-obj-{uuid.uuid4().hex[:6]}"
    with server.client("ingest") as pipeline:
        [decision] = pump(pipeline, account_id)["decisions"]
    assert decision["action"] == "suspend_account"
    decision_id = decision["decision_id"]
    delivered(inbox, account_id, "adverse_decision")

    read = api.get(f"/v1/decisions/{decision_id}/rationale", headers=AGENT)
    assert read.status_code == 200, read.text
    rationale = read.json()
    customer = rationale["customer"]
    assert 1 <= len(customer["reasons"]) <= 4
    assert customer["reasons"][0]["code"] == "SMS_PUMPING"  # the rule that fired comes first
    assert customer["object_by"] and customer["how_to_object"]
    assert customer["data_categories"]
    text = json.dumps(customer)
    assert "threshold" not in text.lower() and NAME not in text and "account_sms" not in text
    assert rationale["internal"]["thresholds"]["suspend_account"] > 0
    assert api.get(f"/v1/decisions/{decision_id}/rationale").status_code == 403  # billing

    opened = api.post(f"/v1/decisions/{decision_id}/objections", headers=AGENT, json={
        "statement": "These were my customers' one-time passwords.", "channel": "email",
        "jurisdiction": "GDPR"})  # fmt: skip
    assert opened.status_code == 201, opened.text
    case = opened.json()
    received = parse(case["received_at"])
    assert parse(case["deadline"]).date() in {
        (received + dt.timedelta(days=d)).date() for d in (28, 29, 30, 31)
    }
    assert 12 <= (parse(case["acknowledge_by"]) - received).days <= 16  # 10 business days
    oid = case["objection_id"]
    assert (
        act(
            api, oid, REVIEWER, "decide", "x", outcome="overturned", departed_from_model=True
        ).status_code
        == 409
    )  # not under review yet
    assert act(api, oid, AGENT, "acknowledge", "acknowledged by email").status_code == 200
    assert "answer by" in delivered(inbox, account_id, "objection_acknowledged")["message"]
    assert act(api, oid, REVIEWER, "start_review", "reviewing").status_code == 200
    support = act(api, oid, AGENT, "decide", "ok", outcome="overturned", departed_from_model=True)
    assert support.status_code == 403 and support.json()["error"]["code"] == "forbidden"
    decided = act(api, oid, REVIEWER, "decide", "The messages were the customer's own codes.",
                  outcome="overturned", departed_from_model=True)  # fmt: skip
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "notified"
    assert "active again" in delivered(inbox, account_id, "objection_overturned")["message"]

    status = api.get(f"/v1/accounts/{account_id}").json()  # billing may read the status
    assert status["status"] == "active"
    later = api.post("/v1/payments/score", json=payment(account_id=account_id)).json()
    assert "ACCOUNT_SUSPENDED" not in [r["code"] for r in later["reasons"]]
    assert act(api, oid, REVIEWER, "close", "closed").json()["status"] == "closed"

    env = server.env
    labels = subprocess.run([str(ROOT / ".venv" / "bin" / "arbiter"), "labels", "export"],
                            env=env, capture_output=True, text=True, check=True)  # fmt: skip
    exported = [json.loads(line) for line in labels.stdout.splitlines()]
    mine = next(e for e in exported if e["account_id"] == account_id)
    assert {"label": "not_fraud", "source": "objection", "type": "label"}.items() <= mine.items()
    trail = subprocess.run([str(ROOT / ".venv" / "bin" / "arbiter"), "audit", "verify"],
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert trail.returncode == 0, trail.stdout + trail.stderr
    assert api.get(f"/v1/accounts/{account_id}/export", headers=AGENT).status_code == 403
    export = api.get(f"/v1/accounts/{account_id}/export", headers=keys["dpo"]).json()
    actions = [e["action"] for e in export["audit_events"]]
    assert "rationale.read" in actions and "objection.decide" in actions
    actors = {(e["action"], e["actor"]) for e in export["audit_events"]}
    assert {("rationale.read", "agent-ann"), ("objection.decide", "rev-bob")} <= actors
    assert actions.count("account.status") == 2
    assert export["online_features"]["values"]["account_sms_24h"] >= 120  # what Redis holds


def test_a_declined_payment_objection_is_upheld_with_the_remedies(api, inbox, keys):
    AGENT, REVIEWER = keys["agent-ann"], keys["rev-bob"]
    account_id = f"acct-up-{uuid.uuid4().hex[:6]}"
    declined = api.post(
        "/v1/payments/score", json=payment(account_id=account_id, ip="199.10.4.4")
    ).json()  # a deny-listed network
    assert declined["action"] == "decline", declined
    rationale = api.get(f"/v1/decisions/{declined['decision_id']}/rationale?verify=true",
                        headers=AGENT).json()  # fmt: skip
    assert rationale["customer"]["reasons"][0]["code"] == "DENY_LISTED_IP"
    assert rationale["internal"]["decided_by"] == "rule"
    assert rationale["verification"]["status"] in ("match", "not_scored")
    oid = api.post(f"/v1/decisions/{declined['decision_id']}/objections", headers=REVIEWER, json={
        "statement": "I was travelling.", "channel": "chat", "jurisdiction": "CPRA"}).json()[
        "objection_id"]  # fmt: skip
    for who, action in ((AGENT, "acknowledge"), (REVIEWER, "start_review")):
        assert act(api, oid, who, action, action).status_code == 200
    same = act(api, oid, REVIEWER, "decide", "x", outcome="upheld", departed_from_model=False)
    assert same.status_code == 403 and same.json()["error"]["code"] == "same_reviewer"
    upheld = act(api, oid, keys["rev-cy"], "decide", "The address belongs to a known card-testing "
                 "network.", outcome="upheld", departed_from_model=False)  # fmt: skip
    assert upheld.json()["outcome"] == "upheld"
    notice = delivered(inbox, account_id, "objection_upheld")
    assert "card-testing network" in notice["message"]
    assert "California Privacy Protection Agency" in notice["message"]
    queue = api.get("/v1/objections", params={"status": ["notified"]}, headers=AGENT).json()
    assert oid in [c["objection_id"] for c in queue]


def test_a_reviewer_reinstates_a_suspended_account_without_an_objection(api, server, inbox, keys):
    account_id = f"acct-rein-{uuid.uuid4().hex[:6]}"
    with server.client("ingest") as pipeline:
        [decision] = pump(pipeline, account_id)["decisions"]
    assert decision["action"] == "suspend_account"
    url = f"/v1/accounts/{account_id}/reinstate"
    reason = {"reason": "Verified by phone: the traffic was the customer's own campaign."}

    assert api.post(url, json=reason).status_code == 403  # billing's key
    assert api.post(url, headers=keys["agent-ann"], json=reason).status_code == 403  # support
    missing = api.post(url, headers=keys["rev-cy"], json={})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "reason"
    assert api.get(f"/v1/accounts/{account_id}").json()["status"] == "suspended"

    done = api.post(url, headers=keys["rev-cy"], json=reason)
    assert done.status_code == 200, done.text
    assert done.json() | {"since": None} == {
        "account_id": account_id, "status": "active", "since": None,
        "decision_id": decision["decision_id"],  # the decision whose suspension was lifted
    }  # fmt: skip
    notice = delivered(inbox, account_id, "account_reinstated")
    assert notice["decision_id"] == decision["decision_id"] and "active again" in notice["message"]
    later = api.post("/v1/payments/score", json=payment(account_id=account_id)).json()
    assert "ACCOUNT_SUSPENDED" not in [r["code"] for r in later["reasons"]]

    again = api.post(url, headers=keys["rev-cy"], json=reason)
    assert again.status_code == 409 and again.json()["error"]["code"] == "account_not_suspended"
    export = api.get(f"/v1/accounts/{account_id}/export", headers=keys["dpo"]).json()
    changes = [e for e in export["audit_events"] if e["action"] == "account.status"]
    assert [(e["actor"], e["details"]["to"]) for e in changes] == [
        ("engine", "suspended"), ("rev-cy", "active"),
    ]  # fmt: skip
    assert changes[1]["details"]["reason"] == reason["reason"]

"""Objection cases, the audit trail and retention on the real decision store (SQLite and
PostgreSQL), with a clock the test moves: deadlines per jurisdiction, extensions, the overdue
queue, four eyes, what an overturn and an upheld outcome do, tamper-evident audit, purges that
keep the chains verifiable, legal holds, exports."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from engine import audit, privacy
from engine.cases import Step
from engine.database import reading
from engine.deadlines import load_deadlines
from engine.errors import DecisionPurged, InvalidTransition, ObjectionConflict, SameReviewer
from engine.objections import ObjectionDesk
from engine.outbox import CUSTOMER_NOTIFICATION
from engine.store import DecisionStore
from tests.conftest import ROOT
from tests.integration import test_decision_store as stores
from tests.integration.test_decision_store import decision, execute

pytestmark = pytest.mark.integration
# The decision store's fixtures: a fresh SQLite file and a fresh PostgreSQL schema per test.
new_database, url, store = stores.new_database, stores.url, stores.store

DAY = 86_400_000
# Friday 2026-01-30 12:00 UTC: ten business days later is Friday 2026-02-13.
T0 = int(dt.datetime(2026, 1, 30, 12, tzinfo=dt.UTC).timestamp() * 1000)


def ms(year: int, month: int, day: int) -> int:
    return int(dt.datetime(year, month, day, 12, tzinfo=dt.UTC).timestamp() * 1000)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def desk(store: DecisionStore, clock: Clock) -> Iterator[ObjectionDesk]:
    lifted: list[str] = []
    desk = ObjectionDesk(store.database, load_deadlines(ROOT / "config" / "objections.yaml"),
                         clock=clock, on_reinstated=lifted.append)  # fmt: skip
    desk.lifted = lifted  # type: ignore[attr-defined]
    yield desk


def suspended(store: DecisionStore, n: int, account: str) -> str:
    record = decision(n, account=account, action="suspend_account")
    store.append_decision(record, suspend=True, notification={"type": "adverse_decision"})
    return record.decision_id


def notices(store: DecisionStore, account: str) -> list[dict[str, Any]]:
    with reading(store.database) as conn:
        rows = conn.execute(
            sa.text("SELECT kind, payload FROM outbox WHERE account_id = :a ORDER BY id"),
            {"a": account},
        )
        return [{"kind": r.kind, **(json.loads(r.payload) if isinstance(r.payload, str)
                                    else r.payload)} for r in rows]  # fmt: skip


def test_an_overturned_suspension_is_lifted_notified_labelled_and_audited(store, desk, clock):
    decision_id = suspended(store, 1, "acct-o")
    case = desk.open(decision_id, actor="agent-ann", statement="I was sending OTPs to my users",
                     channel="email", jurisdiction="GDPR")  # fmt: skip
    assert case.status == "received"
    assert case.deadline_at == ms(2026, 2, 28)  # one calendar month (February is short)
    assert case.ack_due_at == ms(2026, 2, 13)  # ten business days
    with pytest.raises(ObjectionConflict, match="already has an open objection"):
        desk.open(decision_id, actor="agent-ann", statement="again", channel="web",
                  jurisdiction="GDPR")  # fmt: skip
    with pytest.raises(InvalidTransition, match="is received: decide is possible only from"):
        desk.act(case.objection_id, Step("decide", "rev-bob", "no", "overturned", None, True))

    clock.now += DAY
    desk.act(case.objection_id, Step("acknowledge", "agent-ann", "told the customer"))
    desk.act(case.objection_id, Step("start_review", "rev-bob", "taking it"))
    desk.act(case.objection_id, Step("request_info", "rev-bob", "asked for the OTP provider"))
    desk.act(case.objection_id, Step("customer_replied", "agent-ann", "provider named"))
    with pytest.raises(SameReviewer, match=r"agent-ann opened objection .* may not decide"):
        desk.act(case.objection_id, Step("decide", "agent-ann", "ok", "overturned", None, True))
    with pytest.raises(InvalidTransition, match="departed_from_model"):
        desk.act(case.objection_id, Step("decide", "rev-bob", "ok", "overturned"))
    done = desk.act(case.objection_id, Step(
        "decide", "rev-bob", "The traffic was the customer's own verification codes.",
        "overturned", None, True))  # fmt: skip
    assert done.status == "notified" and done.outcome == "overturned"
    assert done.decided_by == "rev-bob" and done.departed_from_model is True
    assert [e.action for e in done.events] == [
        "open", "acknowledge", "start_review", "request_info", "customer_replied", "decide",
        "notify",
    ]  # fmt: skip
    state = store.account_status("acct-o")
    assert (state.status, state.decision_id) == ("active", decision_id)  # by what it lifted
    assert desk.lifted == ["acct-o"]  # the Redis flag is cleared after the commit
    [change] = [e for e in store.suspension_events("acct-o") if e.to_status == "active"]
    assert (change.actor, change.objection_id) == ("rev-bob", case.objection_id)
    assert change.decision_id == decision_id
    [label] = privacy.labels_since(store.database)
    assert label == {
        "event_id": f"label:objection:{case.objection_id}", "type": "label",
        "ts": clock.now, "account_id": "acct-o", "label": "not_fraud", "source": "objection",
        "target_event_id": "pay:pay-1",
        "reason": "The traffic was the customer's own verification codes.",
    }  # fmt: skip
    sent = notices(store, "acct-o")
    assert [n["kind"] for n in sent] == [CUSTOMER_NOTIFICATION] + ["objection_notice"] * 3
    assert sent[1]["type"] == "objection_acknowledged" and "2026-02-28" in sent[1]["message"]
    assert sent[2]["type"] == "objection_information_requested"
    assert "asked for the OTP provider" in sent[2]["message"]
    assert sent[3]["type"] == "objection_overturned"
    assert "active again" in sent[3]["message"]
    closed = desk.act(case.objection_id, Step("close", "rev-bob", "done"))
    assert closed.status == "closed"
    with reading(store.database) as conn:
        trail = list(audit.walk(conn))
    assert audit.first_break(trail) is None
    actions = [e.action for e in trail]
    assert actions.count("account.status") == 2  # suspended by the engine, lifted by rev-bob
    assert "objection.decide" in actions and "objection.close" in actions


def test_an_upheld_objection_keeps_the_suspension_and_names_the_remedies(store, desk, clock):
    decision_id = suspended(store, 2, "acct-u")
    case = desk.open(decision_id, actor="agent-ann", statement="not me", channel="phone",
                     jurisdiction="CPRA")  # fmt: skip
    assert case.deadline_at == T0 + 45 * DAY
    desk.act(case.objection_id, Step("acknowledge", "agent-ann", "ack"))
    extended = desk.act(case.objection_id, Step("extend", "rev-cy", "We await the card issuer."))
    assert extended.deadline_at == T0 + 90 * DAY and extended.status == "acknowledged"
    with pytest.raises(InvalidTransition, match="extended already"):
        desk.act(case.objection_id, Step("extend", "rev-cy", "again"))
    desk.act(case.objection_id, Step("start_review", "rev-cy", "taking it"))
    with pytest.raises(InvalidTransition, match="new_action goes with a modified outcome"):
        desk.act(case.objection_id, Step("decide", "rev-cy", "x", "upheld", "allow", False))
    upheld = desk.act(case.objection_id, Step(
        "decide", "rev-cy", "The messages went to premium numbers the account never used before.",
        "upheld", None, False))  # fmt: skip
    assert upheld.status == "notified" and upheld.outcome == "upheld"
    assert store.account_status("acct-u").status == "suspended"
    assert privacy.labels_since(store.database) == []
    last = notices(store, "acct-u")[-1]
    assert last["type"] == "objection_upheld"
    assert "premium numbers" in last["message"]
    assert "California Privacy Protection Agency" in last["message"]
    assert [n["type"] for n in notices(store, "acct-u")[1:]] == [
        "objection_acknowledged",
        "objection_extended",
        "objection_upheld",
    ]


def test_deadlines_extensions_and_the_overdue_queue(store, desk, clock):
    early = desk.open(suspended(store, 3, "acct-a"), actor="agent", statement="a",
                      channel="web", jurisdiction="GDPR")  # fmt: skip
    clock.now += 2 * DAY
    late = desk.open(suspended(store, 4, "acct-b"), actor="agent", statement="b",
                     channel="web", jurisdiction="CPRA")  # fmt: skip
    assert [c.objection_id for c in desk.queue()] == [early.objection_id, late.objection_id]
    assert desk.queue(overdue=True) == []
    clock.now = ms(2026, 2, 16)  # past both acknowledgement deadlines, before any answer's
    assert {c.objection_id for c in desk.queue(overdue=True)} == {
        early.objection_id,
        late.objection_id,
    }
    desk.act(late.objection_id, Step("acknowledge", "agent", "ack"))
    assert [c.objection_id for c in desk.queue(overdue=True)] == [early.objection_id]
    desk.act(early.objection_id, Step("acknowledge", "agent", "ack"))
    clock.now = ms(2026, 3, 1)  # past GDPR's month
    assert [c.objection_id for c in desk.queue(overdue=True)] == [early.objection_id]
    with pytest.raises(InvalidTransition, match="has passed; an extension must be notified"):
        desk.act(early.objection_id, Step("extend", "rev", "too late"))
    desk.act(late.objection_id, Step("withdraw", "agent", "the customer withdrew"))
    assert [c.status for c in desk.queue(statuses=["withdrawn"])] == ["withdrawn"]
    with pytest.raises(ObjectionConflict, match="no adverse decision to object to"):
        allowed = decision(9, account="acct-c")
        store.append_decision(allowed, suspend=False, notification=None)
        desk.open(allowed.decision_id, actor="agent", statement="?", channel="web",
                  jurisdiction="GDPR")  # fmt: skip


def test_a_modified_decision_must_be_milder_and_lifts_a_suspension(store, desk):
    case = desk.open(suspended(store, 5, "acct-m"), actor="agent", statement="m",
                     channel="chat", jurisdiction="GDPR")  # fmt: skip
    for step in ("acknowledge", "start_review"):
        desk.act(case.objection_id, Step(step, "agent", step))
    with pytest.raises(InvalidTransition, match="new_action milder than suspend_account"):
        desk.act(case.objection_id, Step("decide", "rev", "x", "modified", None, True))
    done = desk.act(case.objection_id, Step("decide", "rev", "decline the payment only",
                                            "modified", "decline", True))  # fmt: skip
    assert done.new_action == "decline" and store.account_status("acct-m").status == "active"
    assert privacy.labels_since(store.database) == []


def test_the_audit_trail_names_the_first_tampered_event(store, desk, url):
    case = desk.open(suspended(store, 6, "acct-t"), actor="agent", statement="t",
                     channel="web", jurisdiction="GDPR")  # fmt: skip
    desk.act(case.objection_id, Step("acknowledge", "agent", "ack"))
    with reading(store.database) as conn:
        trail = list(audit.walk(conn))
    assert len(trail) == 3 and audit.first_break(trail) is None
    execute(url, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    with reading(store.database) as conn:
        broken = audit.first_break(audit.walk(conn))
    assert broken is not None and broken.seq == 2 and "content" in broken.why


def test_retention_purges_closed_accounts_keeps_held_ones_and_the_chains(store, desk, clock, url):
    gone, held, active, back = "acct-gone", "acct-held", "acct-live", "acct-back"
    for n, account in enumerate((gone, held, active, back)):
        suspended(store, 10 + n, account)
    store.append_decision(decision(14, account=gone), suspend=False, notification=None)
    case = desk.open(store.decisions_of_account(gone)[0].record.decision_id, actor="agent",
                     statement="please", channel="web", jurisdiction="GDPR")  # fmt: skip
    desk.act(case.objection_id, Step("acknowledge", "agent", "ack"))
    later = T0 + 8 * 365 * DAY  # the purge runs eight years after the closures
    for account in (gone, held, back):
        privacy.close_account(store.database, account, T0)
    privacy.close_account(store.database, active, later - 365 * DAY)  # within retention
    privacy.set_hold(store.database, held, hold=True, reason="litigation", actor="dpo", at=T0)
    # Active again after its closure: a decision later than it.
    store.append_decision(decision(15, account=back, created_at=T0 + DAY), suspend=False,
                          notification=None)  # fmt: skip
    report = privacy.purge(store.database, now=later, actor="dpo")
    assert report.to_json() == {"accounts": 1, "decisions": 2, "objections": 1,
                                "notifications": 2, "audit_events": 3, "held": 1}  # fmt: skip
    assert store.decisions_of_account(gone) == []
    assert len(store.decisions_of_account(held)) == 1
    assert len(store.decisions_of_account(active)) == 1
    assert len(store.decisions_of_account(back)) == 2
    assert store.verify_chain() is None  # tombstones keep their links
    with reading(store.database) as conn:
        assert audit.first_break(audit.walk(conn)) is None
        purged = (
            conn.execute(sa.text("SELECT decision_id FROM decisions WHERE purged_at IS NOT NULL"))
            .scalars()
            .all()
        )
    assert len(purged) == 2
    # What a tombstone kept is sealed by the purge: changing it breaks the chain.
    execute(url, "UPDATE decisions SET action = 'allow' WHERE decision_id = :d", d=purged[0])
    broken = store.verify_chain()
    assert broken is not None and broken.why == "a tombstone changed after its purge"
    execute(url, "UPDATE decisions SET action = 'suspend_account' WHERE decision_id = :d",
            d=purged[0])  # fmt: skip
    assert store.verify_chain() is None
    with pytest.raises(DecisionPurged, match="purged under the retention policy"):
        store.get_decision(purged[0])
    with pytest.raises(DecisionPurged, match="no case can be opened"):
        desk.open(purged[0], actor="agent", statement="?", channel="web", jurisdiction="GDPR")
    document = privacy.export_account(
        store.database, gone, decisions_of=store.decisions_of_account,
        rationale_of=lambda s: None, data_categories=[], actor="dpo", at=T0,
    )  # fmt: skip
    assert document["decisions"] == [] and document["objections"] == []


def test_activity_after_a_closure_reopens_the_account(store):
    suspended(store, 60, "acct-again")
    privacy.close_account(store.database, "acct-again", T0)
    assert privacy.reopen_if_active(store.database, {"acct-again": T0 - DAY}) == 0
    assert privacy.reopen_if_active(store.database, {"acct-again": T0 + DAY}) == 1
    # The closing batch sent again (a retry): the account stays open.
    privacy.close_account(store.database, "acct-again", T0)
    report = privacy.purge(store.database, now=T0 + 8 * 365 * DAY, actor="dpo")
    assert report.accounts == 0 and len(store.decisions_of_account("acct-again")) == 1
    # A closure after that activity is a new one, and counts.
    privacy.close_account(store.database, "acct-again", T0 + 2 * DAY)
    assert privacy.reopen_if_active(store.database, {"acct-again": T0 + DAY}) == 0


def test_a_retried_closing_batch_does_not_close_an_account_active_since(store):
    # Without a decision after the closure, purge would take the account: only its activity
    # (events) reopened it, and a resend of the closure closed it again.
    privacy.close_account(store.database, "acct-events", T0)
    assert privacy.reopen_if_active(store.database, {"acct-events": T0 + DAY}) == 1
    privacy.close_account(store.database, "acct-events", T0)
    assert privacy.reopen_if_active(store.database, {"acct-events": T0 + 2 * DAY}) == 0


def test_a_record_emptied_by_hand_breaks_the_chain(store, url):
    ids = [suspended(store, 40 + n, f"acct-t{n}") for n in range(3)]
    execute(url, "UPDATE decisions SET purged_at = 1 WHERE decision_id = :d", d=ids[1])
    broken = store.verify_chain()
    assert broken is not None and broken.decision_id == ids[1] and "still holds" in broken.why
    execute(url, "UPDATE decisions SET subject_id = 'purged', account_id = 'purged', "
            "payment_id = NULL, score = NULL, raw_margin = NULL, features = '{}', "
            "reasons = '[]', contributions = NULL, base_value = NULL, timings = '{}' "
            "WHERE decision_id = :d", d=ids[1])  # fmt: skip
    broken = store.verify_chain()
    assert broken is not None and broken.decision_id == ids[1]
    assert broken.why == "a tombstone that no purge recorded in the audit trail"


def test_an_overturn_lifts_only_the_suspension_its_decision_made(store, desk):
    first = suspended(store, 50, "acct-r")
    store.set_account_status("acct-r", "active", actor="rev", reason="reinstated")
    later = suspended(store, 51, "acct-r")
    case = desk.open(first, actor="agent", statement="s", channel="web", jurisdiction="GDPR")
    for action in ("acknowledge", "start_review", "request_info"):
        desk.act(case.objection_id, Step(action, "agent", action))
    assert notices(store, "acct-r")[-1]["type"] == "objection_information_requested"
    done = desk.act(case.objection_id, Step("decide", "rev", "first was wrong", "overturned",
                                            None, True))  # from awaiting_customer  # fmt: skip
    assert done.outcome == "overturned"
    state = store.account_status("acct-r")
    assert (state.status, state.decision_id) == ("suspended", later)
    assert desk.lifted == []
    # The customer is not told the account is active: it is not.
    told = notices(store, "acct-r")[-1]["message"]
    assert "active again" not in told and "make the payment again" not in told
    assert f"remains suspended by decision {later}" in told


def test_an_overturned_payment_decline_of_a_suspended_account_says_it_stays_suspended(store, desk):
    lock = suspended(store, 60, "acct-p")
    declined = decision(61, account="acct-p", action="decline")
    store.append_decision(declined, suspend=False, notification={"type": "adverse_decision"})
    case = desk.open(declined.decision_id, actor="agent", statement="p", channel="web",
                     jurisdiction="GDPR")  # fmt: skip
    for action in ("acknowledge", "start_review"):
        desk.act(case.objection_id, Step(action, "agent", action))
    desk.act(case.objection_id, Step("decide", "rev", "not fraud", "overturned", None, True))
    told = notices(store, "acct-p")[-1]["message"]
    assert "make the payment again" not in told
    assert (
        f"The payment decision is withdrawn. Your account remains suspended by decision {lock}"
        in told
    )


def test_an_export_holds_decisions_cases_notifications_and_audit(store, desk):
    decision_id = suspended(store, 20, "acct-x")
    case = desk.open(decision_id, actor="agent", statement="x", channel="web",
                     jurisdiction="GDPR")  # fmt: skip
    desk.act(case.objection_id, Step("acknowledge", "agent", "ack"))
    document = privacy.export_account(
        store.database, "acct-x", decisions_of=store.decisions_of_account,
        rationale_of=lambda s: {"reasons": [r.code for r in s.record.reasons]},
        data_categories=["payment data"], actor="dpo", at=T0,
    )  # fmt: skip
    assert [d["decision_id"] for d in document["decisions"]] == [decision_id]
    assert document["decisions"][0]["rationale"] == {"reasons": ["HIGH_RISK_SCORE"]}
    assert document["status"]["status"] == "suspended"
    assert [o["objection_id"] for o in document["objections"]] == [case.objection_id]
    assert [e["action"] for e in document["objections"][0]["events"]] == ["open", "acknowledge"]
    assert len(document["notifications"]) == 2 and document["purposes"]
    assert {e["action"] for e in document["audit_events"]} >= {"account.status", "objection.open"}
    with reading(store.database) as conn:
        last = list(audit.walk(conn))[-1]
    assert (last.action, last.actor, last.subject_id) == ("account.export", "dpo", "acct-x")


def test_the_privacy_commands_verify_purge_and_export_labels(tmp_path, monkeypatch, clock):
    url = f"sqlite:///{tmp_path / 'arbiter.db'}"
    store = DecisionStore(url)
    store.migrate()
    desk = ObjectionDesk(store.database, load_deadlines(ROOT / "config" / "objections.yaml"),
                         clock=clock)  # fmt: skip
    case = desk.open(suspended(store, 30, "acct-cli"), actor="agent", statement="s",
                     channel="web", jurisdiction="GDPR")  # fmt: skip
    for action in ("acknowledge", "start_review"):
        desk.act(case.objection_id, Step(action, "agent", action))
    desk.act(case.objection_id, Step("decide", "rev", "own codes", "overturned", None, True))
    privacy.close_account(store.database, "acct-cli", T0 + DAY)
    store.close()
    monkeypatch.setenv("ARBITER_DATABASE_URL", url)
    from cli.main import app

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, " ".join(result.output.split())

    assert run("audit", "verify") == (0, "the audit trail of 7 events is intact")
    code, out = run("labels", "export")
    assert code == 0 and json.loads(out)["target_event_id"] == "pay:pay-30"
    code, out = run("retention", "purge", "--actor", "dpo", "--days", "1")
    assert code == 0 and out.startswith("purged 1 account(s): 1 decision(s) tombstoned"), out
    assert run("labels", "export") == (0, "")
    # Tombstones keep their links: the trail still verifies, and the purge is in it.
    assert run("audit", "verify") == (0, "the audit trail of 9 events is intact")
    execute(url, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 9")
    code, out = run("audit", "verify")
    assert code == 1 and "seq 9: hash does not match" in out, out

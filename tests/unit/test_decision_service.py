"""The decision service with small fake collaborators: the order of its steps and what it
records (the real Redis, model and store are exercised in tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from engine.accounts import AccountState
from engine.errors import ModelNotLoaded
from engine.policy import load_policy
from engine.records import StoredDecision
from engine.service import DecisionService
from features.errors import FeatureStoreUnavailable, InvalidEvent
from models.scorer import Contributions, Score
from tests.conftest import ROOT

POLICY = load_policy(ROOT / "config" / "policy.yaml")
PAYMENT = {
    "payment_id": "p1", "account_id": "a1", "amount": 10.0, "currency": "USD",
    "card_fp": "c1", "bin_country": "US", "billing_country": "US", "ip": "73.1.2.3",
    "ts": 1_790_000_000_000,
}  # fmt: skip


class Features:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.events: list[dict] = []

    def read_and_apply(self, event):
        if self.down:
            raise FeatureStoreUnavailable("Redis: connection refused")
        self.events.append(dict(event))
        return {"amount": event["amount"], "account_cards_24h": 1, "account_age": 86_400.0}, True


class Scorer:
    def __init__(self, probability: float) -> None:
        self.probability = probability

    def vector(self, values):
        return [values["amount"]]

    def score(self, row):
        return Score(self.probability, 1.5)

    def contributions(self, row):
        return Contributions({"amount": 0.9, "account_age": 0.4, "account_cards_24h": -0.2}, -3.0)


@dataclass(frozen=True)
class Model:
    scorer: Scorer
    name: str = "m"
    version: str = "7"
    run_id: str = "r"


class Store:
    def __init__(self, suspended: bool = False) -> None:
        self.suspended = suspended
        self.appended: list[tuple] = []

    def get_by_payment(self, payment_id):
        return next(
            (replace(s, replayed=True) for s, *_ in self.appended
             if s.record.payment_id == payment_id), None,
        )  # fmt: skip

    def account_status(self, account_id):
        status = "suspended" if self.suspended else "active"
        return AccountState(account_id, status, None, None, None)

    def append_decision(self, record, *, suspend, notification):
        stored = StoredDecision(record, len(self.appended) + 1, "0" * 64, "f" * 64)
        self.appended.append((stored, suspend, notification))
        return stored


def service(probability=0.01, *, down=False, suspended=False, model=True):
    return DecisionService(
        features=Features(down), store=Store(suspended), policy=POLICY,
        model=Model(Scorer(probability)) if model else None, feature_spec_version="spec1",
    )  # fmt: skip


def test_a_low_score_is_allowed_without_contributions_or_notification():
    svc = service(0.01)
    decision = svc.score_payment(PAYMENT)
    assert decision.action == "allow" and decision.reasons == ()
    stored, suspend, notification = svc.store.appended[0]
    assert not suspend and notification is None and stored.record.contributions is None
    assert svc.features.events[0]["event_id"] == "pay:p1"


def test_a_retry_returns_the_stored_decision_without_reading_features_again():
    svc = service(0.01)
    first = svc.score_payment(PAYMENT)
    again = svc.score_payment(PAYMENT)
    assert again.decision_id == first.decision_id and again.replayed
    assert len(svc.features.events) == 1 and len(svc.store.appended) == 1


def test_a_very_high_score_suspends_with_the_strongest_features_as_reasons():
    svc = service(0.99)
    decision = svc.score_payment(PAYMENT)
    assert decision.action == "suspend_account"
    assert [r.code for r in decision.reasons] == ["FEATURE:amount", "FEATURE:account_age"]
    stored, suspend, notification = svc.store.appended[0]
    assert suspend and stored.record.base_value == -3.0
    assert notification["action"] == "suspend_account" and "object" in notification["how_to_object"]
    assert notification["reasons"][0]["code"] == "FEATURE:amount"


def test_a_suspended_account_is_declined_without_features_or_model():
    svc = service(0.01, suspended=True, model=False)
    decision = svc.score_payment(PAYMENT)
    assert decision.action == "decline" and decision.score is None
    assert [r.code for r in decision.reasons] == ["ACCOUNT_SUSPENDED"]
    assert svc.features.events == []


def test_redis_down_gives_the_policys_degraded_action_recorded_as_degraded():
    svc = service(0.01, down=True)
    decision = svc.score_payment({**PAYMENT, "ip": "199.10.0.1"})
    assert decision.degraded and decision.action == "decline"  # the deny list still applies
    assert [r.code for r in decision.reasons] == ["DENY_LISTED_IP", "FEATURES_UNAVAILABLE"]
    assert svc.score_payment({**PAYMENT, "payment_id": "p2"}).action == "review"


def test_without_a_model_scoring_is_refused():
    with pytest.raises(ModelNotLoaded, match="no model is loaded"):
        service(model=False).score_payment(PAYMENT)


def test_an_invalid_payment_names_its_field():
    with pytest.raises(InvalidEvent, match=r"field 'amount' must be >= 0\.01"):
        service().score_payment({**PAYMENT, "amount": -5.0})


def test_facts_come_from_the_online_features_as_stored():
    from engine.service import facts_of

    facts = facts_of(
        {"account_id": "a1", "ip": "31.10.0.1"},
        {"account_is_trial": "1", "account_plan": "enterprise", "account_age": 3 * 86_400.0},
    )
    assert (facts.trial, facts.plan, facts.account_age_days) == (True, "enterprise", 3.0)
    assert facts_of({}, {"account_is_trial": "0"}).trial is False
    assert facts_of({}, {"account_is_trial": None}).trial is None


class BrokenScorer(Scorer):
    def score(self, row):
        raise RuntimeError("the challenger is broken")


def test_a_shadow_model_is_recorded_and_never_changes_the_action():
    svc = service(0.01)
    svc.shadow = Model(Scorer(0.99), version="8")
    decision = svc.score_payment(PAYMENT)
    record = svc.store.appended[0][0].record
    assert decision.action == "allow" and decision.model_version == "7"
    assert record.shadow == {"version": "8", "score": 0.99}
    assert "shadow_ms" in record.timings


def test_a_failing_shadow_model_is_left_out_of_the_record():
    svc = service(0.01)
    svc.shadow = Model(BrokenScorer(0.5), version="8")
    assert svc.score_payment(PAYMENT).action == "allow"
    assert svc.store.appended[0][0].record.shadow is None


def test_metrics_count_new_decisions_by_action_and_redis_failures():
    svc = service(0.99)
    svc.score_payment(PAYMENT)
    svc.score_payment(PAYMENT)  # a retry is not a new decision
    assert svc.metrics.decisions.value("suspend_account") == 1
    assert svc.metrics.score_seconds.count == 1
    down = service(0.01, down=True)
    down.score_payment(PAYMENT)
    assert down.metrics.dependency_errors.value("redis") == 1

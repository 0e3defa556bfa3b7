"""The decision service with small fake collaborators: the order of its steps and what it
records (the real Redis, model and store are exercised in tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import yaml

from engine.accounts import AccountState
from engine.errors import ModelNotLoaded
from engine.flags import FlagSync
from engine.intake import ingest
from engine.policy import load_policy, parse_policy
from engine.reasons import reasons_of
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


@dataclass(frozen=True)
class Reading:
    features: dict
    applied: bool
    flags: tuple
    unknown: frozenset


class Features:
    """An in-memory stand-in for the online store: events applied once per event_id, string
    flags, an account "known" once one of its events was applied."""

    def __init__(self, down: bool = False, values: dict | None = None) -> None:
        self.down = down
        self.events: list[dict] = []
        self.strings: dict[str, str] = {}
        self.index: set[str] = set()
        self.values = values or {"account_cards_24h": 1, "account_age": 86_400.0}
        self.restated: list[tuple[str, str]] = []
        self.restate_fails = False

    def key(self, entity, value):
        return f"arb:{{{entity}:{value}}}"

    def _check(self):
        if self.down:
            raise FeatureStoreUnavailable("Redis: connection refused")

    def read_for_decision(self, event, flags=(), *, apply=True):
        self._check()
        known = any(e.get("account_id") == event.get("account_id") for e in self.events)
        features = {"amount": event.get("amount"), **self.values}
        applied = False
        if apply and all(e["event_id"] != event["event_id"] for e in self.events):
            self.events.append(dict(event))
            applied = True
        found = tuple(self.strings.get(k) for k in flags)
        return Reading(features, applied, found, frozenset() if known else frozenset({"account"}))

    def read_many(self, events):
        self._check()
        return [dict(self.values) for _ in events]

    def apply_many(self, events, *, dedupe=True):
        self._check()
        new = [e for e in events if all(x["event_id"] != e["event_id"] for x in self.events)]
        self.events += [dict(e) for e in new]
        return len(new)

    def set_strings(self, values, *, index=None):
        self._check()
        for key, value in values.items():
            if value is None:
                self.strings.pop(key, None)
                self.index.discard(key)
            else:
                self.strings[key] = value
                self.index.add(key)

    def claim(self, key, ts, gap_ms):
        self._check()
        last = self.strings.get(key)
        if last is not None and ts - int(last) < gap_ms:
            return False
        self.strings[key] = str(ts)
        return True

    def held(self, keys):
        return [k in self.strings for k in keys]

    def unclaim(self, key, ts):
        if self.strings.get(key) == str(ts):
            del self.strings[key]

    def members(self, index):
        self._check()
        return sorted(self.index)

    restatable = True

    def counted_at(self, event):  # a marker keeps the time its event was counted at
        self._check()
        hour = 3_600_000
        found = [x["ts"] for x in self.events if x["event_id"] == event["event_id"]
                 and x["ts"] // hour == event["ts"] // hour]  # fmt: skip
        return found[0] if found else None

    def count_as(self, event, status):
        counted = self.apply_many([{**event, "status": status}]) == 1
        if counted and status == "declined":
            self.restated.append((event["event_id"], status))
        return counted

    def restate_status(self, event, status):
        if self.restate_fails:
            raise FeatureStoreUnavailable("Redis: connection reset")
        if (event["event_id"], status) in self.restated:  # its marker: once
            return False
        self.restated.append((event["event_id"], status))
        return True

    async def restate_status_async(self, event, status):
        return self.restate_status(event, status)


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
        self.status_reads = 0

    def suspended_accounts(self):
        return {"a1": "d0"} if self.suspended else {}

    def get_by_payment(self, payment_id):  # as the real store: `replayed` is the append's
        return next(
            (s for s, *_ in self.appended if s.record.payment_id == payment_id), None,
        )  # fmt: skip

    def account_status(self, account_id):
        self.status_reads += 1
        status = "suspended" if self.suspended else "active"
        since = 1 if self.suspended else None
        return AccountState(account_id, status, since, "d0" if self.suspended else None, None)

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


def test_a_retry_returns_the_stored_decision_and_counts_the_payment_once():
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


def test_a_suspended_account_is_declined_without_the_model():
    svc = service(0.01, suspended=True, model=False)
    decision = svc.score_payment(PAYMENT)
    assert decision.action == "decline" and decision.score is None
    assert [r.code for r in decision.reasons] == ["ACCOUNT_SUSPENDED"]
    # Redis did not know the account: the store answered, and the flag is back in Redis.
    assert svc.store.status_reads == 1 and svc.features.strings[svc.flags.key("a1")] == "d0"


def test_a_suspension_sets_the_flag_that_declines_later_payments_without_the_store():
    svc = service(0.99)
    assert svc.score_payment(PAYMENT).action == "suspend_account"
    suspended_by = svc.store.appended[0][0].record.decision_id
    assert svc.features.strings[svc.flags.key("a1")] == suspended_by
    reads = svc.store.status_reads
    later = svc.score_payment({**PAYMENT, "payment_id": "p2"})
    assert later.action == "decline" and later.score is None
    assert [r.code for r in later.reasons] == ["ACCOUNT_SUSPENDED"]
    assert svc.store.status_reads == reads  # the flag decided, in the features' round trip


def test_flag_sync_sets_missing_flags_and_clears_stale_ones():
    svc = service(0.01, suspended=True)
    svc.features.set_strings({svc.flags.key("gone"): "d9"}, index="i")
    assert svc.flags.flagged() == ["gone"]
    assert svc.flags.sync(stale=svc.flags.flagged()) == 2
    assert svc.features.strings == {svc.flags.key("a1"): "d0"}
    assert svc.flags.flagged() == ["a1"]


def test_redis_down_still_declines_a_suspended_account_from_the_store():
    svc = service(0.01, down=True, suspended=True)
    decision = svc.score_payment(PAYMENT)
    assert decision.action == "decline" and not decision.degraded
    assert [r.code for r in decision.reasons] == ["ACCOUNT_SUSPENDED"]


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
    from engine.policy import facts_of

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


# --- account decisions and the event pipeline -----------------------------------------------

PUMPING = {"account_sms_10m": 300, "account_sms_numbers_10m": 280,
           "account_sms_verified_share_24h": 0.01, "account_age": 86_400.0}  # fmt: skip


def sms(i, account="a1"):
    return {"event_id": f"s{i}", "type": "sms", "ts": 1_790_000_000_000 + i, "account_id": account,
            "dest_number": f"+2547000{i:04d}", "dest_country": "KE", "dest_prefix": "+2547",
            "verified": False, "cost": 0.05, "segments": 1}  # fmt: skip


def test_an_account_decision_without_an_account_model_uses_the_account_rules():
    svc = service(0.01)
    svc.features.values = PUMPING
    svc.features.events.append({"event_id": "e0", "account_id": "a1"})  # Redis knows a1
    decision = svc.score_account("a1")
    assert decision.action == "suspend_account" and decision.score is None
    assert [r.code for r in decision.reasons] == ["SMS_PUMPING"]
    stored, suspend, notification = svc.store.appended[0]
    assert stored.record.subject_type == "account" and stored.record.payment_id is None
    assert suspend and notification["what_happened"].startswith("Your account was suspended")
    assert stored.record.rules_fired == ("sms_pumping",)


def test_an_account_decision_with_an_account_model_scores_and_explains():
    svc = service(0.01)
    svc.features.events.append({"event_id": "e0", "account_id": "a1"})  # Redis knows a1
    svc.account_model = Model(Scorer(0.3), name="acct", version="3")
    decision = svc.score_account("a1")
    assert decision.action == "review" and decision.model_version == "3"
    record = svc.store.appended[0][0].record
    assert record.model_name == "acct" and record.contributions is not None
    assert [r.code for r in decision.reasons] == ["FEATURE:amount", "FEATURE:account_age"]


def test_an_account_suspended_already_is_not_decided_again():
    from engine.errors import AccountSuspended

    svc = service(0.01, suspended=True)
    with pytest.raises(AccountSuspended, match="suspended already"):
        svc.score_account("a1")
    assert svc.store.appended == []


def test_a_batch_crossing_a_trigger_rescores_the_account_once_per_cooldown():
    svc = service(0.01)
    svc.features.values = PUMPING
    result = ingest(svc, [sms(i) for i in range(5)])
    assert (result.received, result.applied) == (5, 5)
    [(decision, triggers)] = result.decisions
    assert decision.action == "suspend_account" and triggers == ("account_sms_10m>60.0",)
    record = svc.store.appended[0][0].record
    assert record.rules_fired == ("trigger:account_sms_10m>60.0", "sms_pumping")
    again = ingest(svc, [sms(i) for i in range(5, 8)])
    assert again.decisions == () and again.cooling_down == ("a1",)
    retried = ingest(svc, [sms(i) for i in range(5)])
    assert retried.applied == 0


def test_traffic_to_a_deny_listed_destination_suspends_the_account_without_a_trigger():
    raw = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    raw["lists"]["deny"]["destination_prefix"] = ["+88216"]
    raw["triggers"] = []  # no trigger: the list alone decides
    svc = service(0.01)
    svc.policy = parse_policy(raw)
    calls = [sms(1), {**sms(2), "type": "call", "dest_number": "+882160009999",
                      "dest_prefix": "+88216", "duration_s": 60}]  # fmt: skip
    for key in ("verified", "segments"):
        calls[1].pop(key)
    result = ingest(svc, [*calls, sms(3, account="a2")])
    [(decision, triggers)] = result.decisions
    assert decision.action == "suspend_account" and triggers == ("deny:+88216",)
    record = svc.store.appended[0][0].record
    assert record.account_id == "a1" and [r.code for r in record.reasons] == [
        "DENY_LISTED_DESTINATION"
    ]
    assert "+882160009999" not in repr(record.rules_fired)  # the number itself is not kept
    # Traffic elsewhere decides nothing.
    assert ingest(svc, [sms(i, account="a3") for i in range(4, 8)]).decisions == ()


def test_a_deny_listed_destination_decides_within_a_triggers_cooldown():
    raw = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    raw["lists"]["deny"]["destination_prefix"] = ["+88216"]
    svc = service(0.01)
    svc.policy = parse_policy(raw)
    svc.features.values = {**PUMPING, "account_sms_verified_share_24h": 0.9}  # triggers, allowed
    [(first, _)] = ingest(svc, [sms(i) for i in range(5)]).decisions
    assert first.action == "allow"
    assert ingest(svc, [sms(i) for i in range(5, 8)]).cooling_down == ("a1",)
    # Minutes later, inside the cooldown, the account calls a deny-listed range.
    [(decision, triggers)] = ingest(
        svc,
        [
            sms(
                9,
            )
            | {"dest_number": "+88216000123"}
        ],
    ).decisions
    assert decision.action == "suspend_account" and "deny:+88216" in triggers


def test_a_batch_below_every_trigger_decides_nothing():
    svc = service(0.01)
    result = ingest(svc, [sms(1), sms(2, account="a2")])
    assert result.applied == 2 and result.decisions == () and svc.store.appended == []


def test_one_bad_event_refuses_the_whole_batch_naming_its_place():
    svc = service(0.01)
    with pytest.raises(InvalidEvent) as caught:
        ingest(svc, [sms(1), {**sms(2), "type": "fax"}])
    assert caught.value.field == "events[1].type"
    assert svc.features.events == []


def test_the_event_loop_path_decides_and_stores_as_the_plain_one():
    import asyncio

    svc = service(0.99)
    decision = asyncio.run(svc.score_payment_async(PAYMENT))
    assert decision.action == "suspend_account"
    assert svc.store.appended[0][1] is True  # suspended in the decision's transaction
    assert svc.features.strings[svc.flags.key("a1")] == decision.decision_id
    again = asyncio.run(svc.score_payment_async(PAYMENT))
    assert again.replayed and again.decision_id == decision.decision_id


def test_an_account_decision_that_fails_leaves_the_account_unclaimed_for_the_resend():
    from engine.errors import StoreUnavailable

    svc = service(0.01)
    svc.features.values = PUMPING
    calls = []

    def failing(record):
        calls.append(record)
        raise StoreUnavailable("the decision store is locked")

    svc._append = failing
    with pytest.raises(StoreUnavailable):
        ingest(svc, [sms(i) for i in range(5)])
    del svc._append  # the store is back: the resent batch decides the account
    result = ingest(svc, [sms(i) for i in range(5)])
    assert result.applied == 0 and len(result.decisions) == 1 and len(calls) == 1


def test_an_account_nobody_has_seen_gets_no_record():
    from engine.errors import AccountNotFound

    svc = service(0.01)
    with pytest.raises(AccountNotFound, match="no activity and no status"):
        svc.score_account("made-up")
    assert svc.store.appended == []


def test_redis_down_goes_by_the_synced_suspensions_without_reading_the_store():
    svc = service(0.01, down=True)
    svc.flags.known = {"a1": "d0"}  # as the flag sync leaves it
    decision = svc.score_payment(PAYMENT)
    assert [r.code for r in decision.reasons] == ["ACCOUNT_SUSPENDED"]
    assert svc.store.status_reads == 0
    svc.flags.known = {}
    assert svc.score_payment({**PAYMENT, "payment_id": "p2"}).degraded
    assert svc.store.status_reads == 0


def test_the_flag_sync_keeps_the_memory_fresh_while_redis_is_down():
    svc = service(0.01, down=True, suspended=True)
    assert FlagSync(svc.flags, interval_s=3600)._check() is None  # Redis down: nothing written
    assert svc.flags.known == {"a1": "d0"}  # but payments go by what the store says


def test_a_suspension_made_while_the_store_is_read_survives_the_refresh():
    svc = service(0.01)
    flags, read = svc.flags, svc.store.suspended_accounts

    def slow_read():
        found = read()  # the store's answer, without what follows
        flags.set({"a9": "d9"})  # meanwhile this process suspends a9
        return found

    svc.store.suspended_accounts = slow_read
    flags.refresh()
    assert flags.known_suspended("a9") is True
    flags.set({"a9": None})  # lifted
    svc.store.suspended_accounts = read
    flags.refresh()
    assert flags.known_suspended("a9") is False


def test_a_feature_reason_names_the_feature_and_a_flag_says_whether_it_held():
    # The customer's notice copies these texts: a flag pushes the score up in either state, so
    # "the account passed phone or KYC verification" was false of an unverified account.
    words = {
        "account_strongly_verified": "your account being verified by phone or identity check",
        "account_age": "the age of your account",
    }
    flags = {"account_strongly_verified"}
    codes = ["FEATURE:account_strongly_verified", "FEATURE:account_age"]
    unverified = reasons_of(codes, words, {"account_strongly_verified": 0.0}, flags)
    assert [r.text for r in unverified] == [
        "This weighed towards fraud: your account being verified by phone or identity check (no).",
        "This weighed towards fraud: the age of your account.",
    ]
    verified = reasons_of(codes[:1], words, {"account_strongly_verified": "1"}, flags)
    assert verified[0].text.endswith("identity check (yes).")
    assert reasons_of(["FEATURE:odd_name"])[0].text == "This weighed towards fraud: odd name."


@pytest.mark.parametrize("on_the_loop", [False, True])
@pytest.mark.parametrize(
    ("probability", "action", "restated"),
    [(0.01, "allow", False), (0.5, "review", False), (0.8, "decline", True),
     (0.99, "suspend_account", True)],
)  # fmt: skip
def test_a_payment_decided_not_to_be_charged_is_restated_declined_once(
    probability, action, restated, on_the_loop
):
    import asyncio

    svc = service(probability)

    def score():
        return asyncio.run(svc.score_payment_async(PAYMENT)) if on_the_loop else (
            svc.score_payment(PAYMENT))  # fmt: skip

    assert score().action == action
    assert score().replayed  # a retry restates nothing, and is not a new decision
    assert svc.features.restated == ([("pay:p1", "declined")] if restated else [])
    assert svc.metrics.decisions.value(action) == 1


def test_a_failed_restatement_leaves_the_decision_and_counts_a_redis_error():
    svc = service(0.8)
    svc.features.restate_fails = True
    decision = svc.score_payment(PAYMENT)
    assert decision.action == "decline" and len(svc.store.appended) == 1
    assert svc.metrics.dependency_errors.value("redis") == 1


def test_a_degraded_payment_is_not_restated_and_a_suspended_accounts_payment_is():
    down = service(0.8, down=True)
    assert down.score_payment(PAYMENT).degraded
    assert down.features.restated == []
    suspended = service(0.01, suspended=True, model=False)
    assert suspended.score_payment(PAYMENT).action == "decline"
    assert suspended.features.restated == [("pay:p1", "declined")]  # counted, then not charged


class RacedStore(Store):
    """A concurrent request for the same payment stored its decision (allow) first."""

    def append_decision(self, record, *, suspend, notification):
        won = replace(record, action="allow", decision_id="d-first", reasons=())
        return StoredDecision(won, 1, "0" * 64, "f" * 64, replayed=True)


class DownStore(Store):
    def append_decision(self, record, *, suspend, notification):
        from engine.errors import StoreUnavailable

        raise StoreUnavailable("the decision store does not answer")


@pytest.mark.parametrize("on_the_loop", [False, True])
def test_what_is_restated_is_the_stored_answer_not_the_computed_one(on_the_loop):
    import asyncio

    from engine.errors import StoreError

    for store, answered in ((RacedStore(), "allow"), (DownStore(), None)):
        svc = service(0.8)  # computes a decline
        svc.store = store
        call = svc.score_payment_async if on_the_loop else None
        try:
            decision = asyncio.run(call(PAYMENT)) if call else svc.score_payment(PAYMENT)
        except StoreError:
            decision = None
        assert (decision.action if decision else None) == answered
        assert svc.features.restated == []  # charged (allow), or nothing was answered


def test_an_outcome_counts_a_degraded_payment_now_and_refuses_a_time_it_was_not_counted_at():
    svc = service(0.01, down=True)
    assert svc.score_payment(PAYMENT).degraded  # Redis down: not counted
    svc.features.down = False
    assert svc.report_outcome(PAYMENT, "declined").counted == "counted"
    assert [(e["event_id"], e["status"]) for e in svc.features.events] == [("pay:p1", "declined")]
    assert svc.report_outcome(PAYMENT, "declined").counted == "unchanged"  # counted, restated
    assert svc.features.restated == [("pay:p1", "declined")]
    live = service(0.01)
    live.score_payment(PAYMENT)
    for later in (1, 7_200_000):  # the same hour, another hour: not when it was counted
        with pytest.raises(InvalidEvent) as refused:
            live.report_outcome({**PAYMENT, "ts": PAYMENT["ts"] + later}, "declined")
        assert refused.value.field == "ts"
    assert live.report_outcome(PAYMENT, "approved").counted == "unchanged"
    assert live.report_outcome(PAYMENT, "declined").counted == "restated"
    assert live.features.restated == [("pay:p1", "declined")]

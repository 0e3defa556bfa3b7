"""Restating a payment's status in the real Redis online store (features.restate): a payment
counted approved, then restated declined, reads exactly as if it had been counted declined."""

from __future__ import annotations

import yaml

from features.online import OnlineStore
from features.spec import load_spec, parse_spec
from tests.conftest import ROOT
from tests.integration.test_online_store import HOUR, T0, payment

PLATFORM = load_spec(ROOT / "config" / "features.yaml")
MINUTE = 60_000
DAY = 24 * HOUR
# The features that depend on a payment's status.
STATUS_FEATURES = (
    "account_declines_24h", "account_decline_share_7d", "card_declines_24h",
    "account_amount_24h", "account_amount_mean_30d", "amount_vs_account_mean",
)  # fmt: skip


def history() -> list[dict]:
    """Payments of one account over two days: two cards, different amounts."""
    events = []
    for i in range(8):
        card = "c0ffee00c0ffee00" if i % 2 else "badcafe0badcafe0"
        events.append(payment(i, T0 + i * 5 * HOUR, amount=20.0 + 10 * i, card_fp=card))
    return events


def probes() -> list[dict]:
    """Reads at times where the restated payment is in the 1 h, 24 h, 7 d and 30 d windows."""
    last = T0 + 7 * 5 * HOUR
    times = [last + 1, last + MINUTE, last + 2 * HOUR, last + 20 * HOUR, last + 3 * DAY]
    return [payment(100 + i, t, amount=55.0) for i, t in enumerate(times)]


def reads(store: OnlineStore) -> list[dict]:
    return [store.read(p) for p in probes()]


def declined(events: list[dict], index: int) -> list[dict]:
    return [dict(e, status="declined") if i == index else e for i, e in enumerate(events)]


def test_a_restated_payment_reads_as_if_it_had_been_counted_declined(redis_client):
    events = history()
    reference = OnlineStore(redis_client, PLATFORM, prefix="ref")
    reference.apply_many(declined(events, 7))  # the last: restated while it is the head
    reference_late = OnlineStore(redis_client, PLATFORM, prefix="late")
    reference_late.apply_many(declined(events, 3))  # restated after later payments
    store = OnlineStore(redis_client, PLATFORM, prefix="arb")
    store.apply_many(events[:4])
    assert store.restatable
    before = store.read(payment(99, T0 + 3 * 5 * HOUR + 1))
    assert store.restate_status(events[3], "declined") is True
    after = store.read(payment(99, T0 + 3 * 5 * HOUR + 1))
    assert after["account_declines_24h"] == before["account_declines_24h"] + 1
    assert after["account_amount_24h"] == before["account_amount_24h"] - events[3]["amount"]
    store.apply_many(events[4:])
    late = OnlineStore(redis_client, PLATFORM, prefix="late2")
    late.apply_many(events)
    assert late.restate_status(events[3], "declined") is True  # its bucket, not the head
    assert reads(late) == reads(reference_late)
    assert store.restate_status(events[7], "declined") is True
    assert reads(store) != reads(reference)  # payment 3 too is declined in `store`
    head = OnlineStore(redis_client, PLATFORM, prefix="head")
    head.apply_many(events)
    assert head.restate_status(events[7], "declined") is True
    got, want = reads(head), reads(reference)
    assert got == want
    assert got[0]["account_declines_24h"] == 1 and got[0]["card_declines_24h"] == 1
    untouched = OnlineStore(redis_client, PLATFORM, prefix="plain")
    untouched.apply_many(events)
    plain = reads(untouched)
    for name in STATUS_FEATURES:
        assert got[0][name] != plain[0][name], name
    others = sorted(set(got[0]) - set(STATUS_FEATURES))
    assert [got[0][n] for n in others] == [plain[0][n] for n in others]  # counts, cards, times


def test_a_restatement_counts_once_and_a_declined_payment_is_left_alone(redis_client):
    events = history()
    store = OnlineStore(redis_client, PLATFORM)
    store.apply_many(events)
    assert store.restate_status(events[7], "declined") is True
    once = reads(store)
    assert store.restate_status(events[7], "declined") is False  # a retry of the restatement
    assert store.restate_status(dict(events[7], status="declined"), "declined") is False
    assert reads(store) == once


def test_a_restatement_leaves_entities_without_state_alone(redis_client):
    events = history()
    store = OnlineStore(redis_client, PLATFORM)
    store.apply_many(events)
    card = store.key("card", events[7]["card_fp"])
    redis_client.delete(card)  # expired, or lost with a Redis restart
    assert store.restate_status(events[7], "declined") is True
    assert not redis_client.exists(card)  # no card with a negative count appears
    assert store.read(probes()[0])["account_declines_24h"] == 1


def test_a_spec_whose_maximum_filters_on_status_cannot_be_restated(redis_client):
    raw = yaml.safe_load((ROOT / "config" / "features.yaml").read_text())
    raw["features"].append(
        {"name": "account_approved_max_24h", "kind": "max", "entity": "account",
         "field": "amount", "window": "24h", "where": {"type": "payment", "status": "approved"}}
    )  # fmt: skip
    store = OnlineStore(redis_client, parse_spec(raw))
    assert not store.restatable
    events = history()
    store.apply_many(events)
    before = reads(store)
    assert store.restate_status(events[7], "declined") is False
    assert reads(store) == before


def test_an_entity_that_started_again_is_not_taken_below_what_it_holds(redis_client):
    events = history()
    store = OnlineStore(redis_client, PLATFORM)
    store.apply(events[0])
    redis_client.delete(store.key("account", events[0]["account_id"]))  # evicted, or lost
    store.apply(events[1])  # the account starts again without payment 0
    probe = payment(99, events[1]["ts"] + MINUTE)
    before = store.read(probe)
    assert store.restate_status(events[0], "declined") is True  # the card still holds it
    after = store.read(probe)
    for name in ("account_amount_24h", "account_declines_24h", "account_decline_share_7d"):
        assert after[name] == before[name], name  # nothing taken back, nothing added
    assert after["account_amount_24h"] == events[1]["amount"]
    fields = redis_client.hgetall(store.key("account", events[0]["account_id"]))
    assert not any(b"=-" in value for value in fields.values())
    card = store.read(dict(probe, card_fp=events[0]["card_fp"]))
    assert card["card_declines_24h"] == 1  # the card of payment 0 did hold it: restated


def test_a_payment_never_counted_is_counted_with_its_outcome_once(redis_client):
    events = history()
    store = OnlineStore(redis_client, PLATFORM)
    store.apply_many(events[:7])
    reference = OnlineStore(redis_client, PLATFORM, prefix="ref")
    reference.apply_many(declined(events, 7))
    assert store.counted_at(events[7]) is None  # decided without Redis: not counted
    assert store.count_as(events[7], "declined") is True
    assert store.counted_at(events[7]) == events[7]["ts"]  # the marker keeps the time
    assert store.restate_status(events[7], "declined") is False  # marked restated too
    assert store.apply(events[7]) is False  # a retry of the payment: counted already
    assert reads(store) == reads(reference)


def test_counting_a_payment_a_late_round_trip_counted_meanwhile_restates_it_instead(redis_client):
    events = history()
    store = OnlineStore(redis_client, PLATFORM)
    store.apply_many(events)  # payment 7 counted, as approved, after all
    reference = OnlineStore(redis_client, PLATFORM, prefix="ref")
    reference.apply_many(declined(events, 7))
    assert store.count_as(events[7], "declined") is True
    assert store.count_as(events[7], "declined") is False
    assert reads(store) == reads(reference)

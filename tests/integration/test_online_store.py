"""The Redis online store: one round trip per read, idempotent writes, bounded memory, ttls,
Redis Cluster-ready keys, and a clear error when Redis is gone."""

from __future__ import annotations

import time

import pytest
import redis
from redis.crc import key_slot

from engine.policy import load_policy
from engine.service import DecisionService
from engine.store import DecisionStore
from features.errors import FeatureStoreUnavailable
from features.online import OnlineStore
from features.spec import load_spec
from features.state import parse_state
from tests.conftest import DATA, ROOT
from tests.unit.test_decision_service import Model, Scorer

PLATFORM = load_spec(ROOT / "config" / "features.yaml")
CARD = load_spec(DATA / "card_payments_spec.yaml")
POLICY = load_policy(ROOT / "config" / "policy.yaml")
T0 = 1_790_000_000_000
HOUR = 3_600_000


class CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one send is one round trip."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def payment(i: int, ts: int, **extra) -> dict:
    event = {
        "event_id": f"ev{i}", "type": "payment", "ts": ts, "account_id": "acct_1",
        "payment_id": f"pay{i}", "amount": 25.0, "currency": "USD", "card_fp": "c0ffee00c0ffee00",
        "bin_country": "US", "billing_country": "US", "ip": "31.10.0.7", "status": "approved",
    }  # fmt: skip
    event.update(extra)
    return event


def test_a_read_and_a_read_with_write_each_take_one_round_trip(redis_client):
    kwargs = redis_client.connection_pool.connection_kwargs
    pool = redis.ConnectionPool(connection_class=CountingConnection, **kwargs)
    store = OnlineStore(redis.Redis(connection_pool=pool), PLATFORM)
    store.apply(payment(0, T0))  # loads the script
    CountingConnection.sends = 0
    features = store.read(payment(1, T0 + 1000))
    assert CountingConnection.sends == 1
    assert features["account_payments_1h"] == 1.0
    CountingConnection.sends = 0
    features, applied = store.read_and_apply(payment(2, T0 + 2000))
    assert CountingConnection.sends == 1
    assert applied and features["account_payments_1h"] == 1.0
    assert store.read(payment(3, T0 + 3000))["account_payments_1h"] == 2.0


def test_a_replayed_event_is_not_counted_twice(redis_client):
    store = OnlineStore(redis_client, PLATFORM)
    assert store.apply(payment(0, T0)) is True
    assert store.apply(payment(0, T0)) is False
    assert store.apply_many([payment(1, T0 + 5), payment(1, T0 + 5), payment(0, T0)]) == 1
    features = store.read(payment(9, T0 + 60_000))
    assert features["account_payments_1h"] == 2.0
    assert features["account_amount_24h"] == 50.0


def test_an_event_sent_again_in_the_next_hour_or_the_one_before_is_a_duplicate(redis_client):
    # Markers are kept per hour of event time. A payment without `ts` takes the clock's time,
    # so its retry can fall in the next hour, or, on a process whose clock is behind, in the
    # one before: it must still be counted once.
    store = OnlineStore(redis_client, PLATFORM)
    boundary = (T0 // HOUR + 1) * HOUR
    assert store.apply(payment(0, boundary - 100)) is True
    reading = store.read_for_decision(payment(0, boundary + 100), ["flag"])
    assert reading.applied is False  # the service then asks the store for the first decision
    assert store.apply(payment(1, boundary + 100)) is True
    assert store.apply(payment(1, boundary - 100)) is False
    assert store.apply_many([payment(2, boundary - 1), payment(2, boundary + 1)]) == 1
    features = store.read(payment(9, boundary + 60_000))
    assert features["account_payments_1h"] == 3.0
    assert features["account_amount_24h"] == 75.0
    # Its marker stays where it was first counted.
    assert store.seen([payment(0, boundary - 100), payment(0, boundary + 100)]) == [True, False]


def test_a_retry_without_ts_across_the_hour_gets_its_decision_and_counts_once(
    redis_client, tmp_path
):
    # The service on the real online store and decision store: billing sends no `ts`, its
    # first attempt is decided 100 ms before the hour, the retry 100 ms after it.
    boundary = (T0 // HOUR + 1) * HOUR
    now = [boundary - 100]
    store = DecisionStore(f"sqlite:///{tmp_path / 'arbiter.db'}")
    store.migrate()
    try:
        svc = DecisionService(
            features=OnlineStore(redis_client, PLATFORM), store=store, policy=POLICY,
            model=Model(Scorer(0.01)), feature_spec_version=PLATFORM.version,
            clock=lambda: now[0],
        )  # fmt: skip
        sent = {k: v for k, v in payment(0, 0).items() if k not in ("event_id", "type", "ts")}
        del sent["status"]
        first = svc.score_payment(sent)
        now[0] = boundary + 100
        again = svc.score_payment(sent)
        assert again.replayed and again.decision_id == first.decision_id
        now[0] = boundary + 60_000
        later = svc.score_payment({**sent, "payment_id": "pay-later"})
        features = store.get_decision(later.decision_id).record.features
        assert features["account_payments_1h"] == 1.0
    finally:
        store.close()


def test_a_cooldown_claim_holds_in_event_time_however_long_the_wall_clock_took(redis_client):
    # A pipeline running behind: a second of wall time passes, a tenth of it in event time.
    # The claim must still stand (it expired with the cooldown in wall time before).
    store = OnlineStore(redis_client, PLATFORM)
    key = store.key("account", "acct-cool") + ":claim"
    assert store.claim(key, T0, 200) is True
    time.sleep(0.5)
    assert store.claim(key, T0 + 100, 200) is False  # 100 ms of event time: cooling down
    assert store.claim(key, T0 + 250, 200) is True  # past the cooldown in event time
    assert redis_client.pttl(key) > 23 * HOUR


def test_keys_are_hash_tagged_per_entity_and_expire(redis_client):
    store = OnlineStore(redis_client, PLATFORM, dedupe_ttl_ms=HOUR)
    store.apply(payment(0, T0))
    keys = sorted(k.decode() for k in redis_client.keys("arb:{*"))
    assert keys == ["arb:{account:acct_1}", "arb:{card:c0ffee00c0ffee00}", "arb:{ip:31.10.0.7}"]
    for key in keys:
        tag = key[key.index("{") + 1 : key.index("}")]
        assert key_slot(key.encode()) == key_slot(tag.encode())
        assert 0 < redis_client.pttl(key) <= PLATFORM.entity_ttl[tag.split(":")[0]]
    seen = redis_client.keys("arb:seen:*")
    assert len(seen) == 1 and 0 < redis_client.pttl(seen[0]) <= HOUR


def test_an_active_account_keeps_a_bounded_hash(redis_client):
    store = OnlineStore(redis_client, PLATFORM)
    events = []
    for i in range(24 * 60):  # one payment an hour for 60 days, a new card every day
        events.append(payment(i, T0 + i * HOUR, card_fp=f"{i // 24:016x}"))
    store.apply_many(events)
    raw = redis_client.hgetall("arb:{account:acct_1}")
    state = parse_state(raw)
    for pid, buckets in state.buckets.items():
        p = PLATFORM.primitives[pid]
        assert len(buckets) <= p.horizon // p.hop + 2, p
    assert len(raw) < 150
    features = store.read(payment(99_999, T0 + 24 * 60 * HOUR))
    assert features["account_cards_30d"] in (30.0, 31.0, 32.0, 33.0)
    assert features["account_payments_24h"] >= 24.0


def test_redis_losing_its_scripts_is_survived(redis_client):
    store = OnlineStore(redis_client, PLATFORM)
    store.apply(payment(0, T0))
    redis_client.script_flush()
    assert store.apply(payment(1, T0 + 1000)) is True
    assert store.read(payment(2, T0 + 2000))["account_payments_1h"] == 2.0
    redis_client.script_flush()
    features, applied = store.read_and_apply(payment(3, T0 + 3000))
    assert applied and features["account_payments_1h"] == 2.0
    assert store.read(payment(4, T0 + 4000))["account_payments_1h"] == 3.0


def test_an_unreachable_redis_raises_feature_store_unavailable():
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    store = OnlineStore(client, PLATFORM)
    with pytest.raises(FeatureStoreUnavailable, match=r"Redis: .*(refused|connect)"):
        store.read(payment(0, T0))


def test_the_generic_spec_works_online_too(redis_client):
    store = OnlineStore(redis_client, CARD)
    store.apply({"event_id": "s", "type": "signup", "ts": T0, "customer_id": "c1",
                 "country": "DE", "device_id": "d1"})  # fmt: skip
    features, _ = store.read_and_apply(
        {
            "event_id": "a",
            "type": "authorization",
            "ts": T0 + HOUR,
            "customer_id": "c1",
            "merchant_id": "m1",
            "amount": 90.0,
            "country": "RU",
            "channel": "online",
            "approved": True,
            "device_id": "d1",
        }
    )
    assert features["foreign_payment"] == 1.0
    assert features["customer_tenure"] == 3600.0
    assert features["card_not_present"] == 1.0

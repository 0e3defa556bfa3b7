"""The online store on a real Redis Cluster (three masters on loopback, started here): the same
events give the same features and the same entity hashes as on a single Redis, keys spread over
every master, an event is applied at most once per entity, suspension flags and cooldown claims
work, and a decision costs at most one round trip per node (counted on the connections)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
import redis.asyncio.connection
import redis.cluster

from engine.accounts import AccountState
from engine.flags import SuspensionFlags
from engine.metrics import Metrics
from engine.settings import Settings
from engine.store import DecisionStore
from features.bulk import BulkLoader
from features.cluster import ClusterOnlineStore
from features.connect import redis_client, redis_clients
from features.errors import FeatureStoreUnavailable
from features.log import frame_records
from features.online import OnlineStore
from features.parity import compare, replay
from features.spec import load_spec
from tests.conftest import ROOT
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.integration.test_cli import arbiter
from tests.own_servers import OwnRedisCluster
from tests.server import Server
from training.simulator import SimConfig, simulate

PLAN = load_spec(ROOT / "config" / "features.yaml")
T0 = 1_790_000_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisCluster]:
    with OwnRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


@pytest.fixture
def cluster_client(cluster: OwnRedisCluster) -> Iterator[redis.cluster.RedisCluster]:
    client = redis_client(cluster.url, 10)
    assert isinstance(client, redis.cluster.RedisCluster)
    client.flushall()  # every master
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="module")
def log():
    return simulate(SimConfig(accounts=60, days=4, seed=5)).events


def payment(i: int, ts: int, account: str = "acct_1", ip: str = "31.10.0.7", card: str = "c0ffee"):
    return {
        "event_id": f"ev{i}", "type": "payment", "ts": ts, "account_id": account,
        "payment_id": f"pay{i}", "amount": 25.0, "currency": "USD", "card_fp": card,
        "bin_country": "US", "billing_country": "US", "ip": ip, "status": "approved",
    }  # fmt: skip


def spread_payment(client: redis.cluster.RedisCluster, store: OnlineStore, i: int, ts: int):
    """A payment whose account, IP and card live on three different masters."""
    for n in range(1000):
        event = payment(i, ts, account=f"acct_{n}", ip=f"31.10.{n % 250}.7", card=f"card{n}")
        keys = [store.key("account", event["account_id"]), store.key("ip", event["ip"]),
                store.key("card", event["card_fp"])]  # fmt: skip
        if len({client.get_node_from_key(k).port for k in keys}) == 3:
            return event
    raise AssertionError("no payment spread over three masters")


def entity_hashes(client, prefix: str = "arb") -> dict[str, dict[bytes, bytes]]:
    """Every entity hash (on a cluster: of every master)."""
    if isinstance(client, redis.cluster.RedisCluster):
        keys = client.keys(f"{prefix}:{{*}}", target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    else:
        keys = client.keys(f"{prefix}:{{*}}")
    return {k.decode(): client.hgetall(k) for k in keys}


def test_a_cluster_url_makes_a_cluster_store_and_bad_urls_are_refused(cluster, cluster_client):
    assert isinstance(OnlineStore(cluster_client, PLAN), ClusterOnlineStore)
    assert Settings(redis_url=cluster.url).redis_url == cluster.url
    with pytest.raises(ValueError, match=r"(?s)redis_url.*cluster node 'nohost' is not host:port"):
        Settings(redis_url="redis+cluster://nohost")
    with pytest.raises(ValueError, match=r"(?s)redis_url.*only database 0"):
        Settings(redis_url="redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(ValueError, match=r"(?s)redis_url.*must be a redis://"):
        Settings(redis_url="http://127.0.0.1:6379")


def test_replayed_events_give_the_single_node_features_and_state(redis_client, cluster_client, log):
    single = OnlineStore(redis_client, PLAN)
    on_cluster = OnlineStore(cluster_client, PLAN)
    expected, got = replay(single, log), replay(on_cluster, log)
    assert compare(expected, got, tolerance=0.0) == []
    assert entity_hashes(cluster_client) == entity_hashes(redis_client)
    # The keys really are spread: every master holds entity hashes and dedupe hashes.
    masters = cluster_client.get_primaries()
    assert len(masters) == 3
    for node in masters:
        holder = cluster_client.get_redis_connection(node)
        assert holder.keys("arb:{*}"), node
        assert holder.keys("arb:seen:*"), node


def test_a_restated_payment_spread_over_three_masters_reads_as_on_one_node(
    redis_client, cluster_client
):
    on_cluster = OnlineStore(cluster_client, PLAN)
    event = spread_payment(cluster_client, on_cluster, 1, T0)
    single = OnlineStore(redis_client, PLAN)
    probe = dict(event, event_id="ev2", payment_id="pay2", ts=T0 + 60_000)
    for store in (single, on_cluster):
        store.apply(event)
        assert store.counted_at(event) == event["ts"]  # the counting share's marker
        assert store.restate_status(event, "declined") is True
        assert store.restate_status(event, "declined") is False  # once, on every master
    features = on_cluster.read(probe)
    assert features == single.read(probe)
    assert features["account_declines_24h"] == 1 and features["card_declines_24h"] == 1
    assert entity_hashes(cluster_client) == entity_hashes(redis_client)


def test_streamed_batches_and_a_bulk_load_read_like_the_single_node_store(
    redis_client, cluster_client, log
):
    single = OnlineStore(redis_client, PLAN)
    streamed = OnlineStore(cluster_client, PLAN, prefix="stream", batch_size=64)
    bulk = OnlineStore(cluster_client, PLAN, prefix="bulk")
    events = list(frame_records(log))
    assert single.apply_many(events) == len(events)
    assert streamed.apply_many(events[: len(events) // 2]) == len(events) // 2
    assert streamed.seen(events) == [i < len(events) // 2 for i in range(len(events))]
    assert streamed.send(streamed.prepare(events)) == len(events) - len(events) // 2
    loader = BulkLoader(bulk)
    assert loader.is_fresh(log)
    assert loader.load(log.copy()) == len(log)
    assert not loader.is_fresh(log)
    # The markers a bulk load leaves are the ones replay checks, slot by slot.
    assert bulk.apply_many(events) == 0
    assert all(bulk.seen(events))
    end = int(log["ts"].max())
    probes = [{**e, "event_id": f"probe{i}", "ts": end + (i % 5) * 3_600_000}
              for i, e in enumerate(events[:: max(1, len(events) // 150)])]  # fmt: skip
    for probe in probes:
        want = single.read(probe)
        for store in (streamed, bulk):
            assert compare_one(want, store.read(probe)), probe["event_id"]


def compare_one(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def test_an_event_is_applied_at_most_once_per_entity(cluster_client):
    store = OnlineStore(cluster_client, PLAN)
    event = spread_payment(cluster_client, store, 0, T0)
    assert store.apply(event) is True
    assert store.apply(event) is False
    assert store.apply_many([event, event]) == 0
    # Lost halfway (a node went down): only the IP's and card's slots applied the event. The
    # replay applies it on the account's slot alone, and counts it once.
    second = {**event, "event_id": "ev1", "ts": T0 + 1000}
    calls = store.prepare([second])
    assert len(calls) == 3
    assert store.send(calls[1:]) == 0  # applied there, counted by the account's slot only
    assert store.seen([second]) == [False]
    assert store.apply(second) is True
    assert store.seen([second]) == [True]
    later = {**event, "event_id": "probe", "ts": T0 + 60_000}
    features = store.read(later)
    assert features["account_payments_1h"] == 2.0
    assert features["card_accounts_7d"] == 1.0
    assert features["ip_payments_1h"] == 2.0
    # Sent again in the next hour (a retry without `ts`): a duplicate still, on every slot.
    next_hour = (T0 // 3_600_000 + 1) * 3_600_000
    assert store.apply({**event, "ts": next_hour + 10}) is False
    features = store.read({**event, "event_id": "probe", "ts": next_hour + 60_000})
    assert (features["account_payments_1h"], features["ip_payments_1h"]) == (2.0, 2.0)


class Decisions:
    """The decision store's word on suspended accounts (a small real class)."""

    def __init__(self, suspended: dict[str, str]) -> None:
        self.suspended = suspended

    def suspended_accounts(self) -> dict[str, str | None]:
        return dict(self.suspended)

    def account_status(self, account_id: str) -> AccountState:
        decision = self.suspended.get(account_id)
        status = "suspended" if decision else "active"
        return AccountState(account_id, status, None, decision, None)  # type: ignore[arg-type]


def test_suspension_flags_and_cooldown_claims_work_on_the_cluster(cluster_client):
    store = OnlineStore(cluster_client, PLAN)
    decisions = Decisions({"acct_7": "dec7"})
    flags = SuspensionFlags(store, decisions, Metrics(), "account")  # type: ignore[arg-type]
    flags.set({f"acct_{n}": f"dec{n}" for n in range(20)})
    assert sorted(flags.flagged()) == sorted(f"acct_{n}" for n in range(20))
    assert flags.sync(stale=flags.flagged()) == 20  # acct_7 kept, the others cleared
    assert flags.flagged() == ["acct_7"]
    for account, want in (("acct_7", "dec7"), ("acct_3", None)):
        event = payment(int(account[5:]), T0, account=account)
        reading = store.read_for_decision(event, [flags.key(account)])
        assert reading.flags == (want,)
        assert reading.applied
    key = f"{store.key('account', 'acct_7')}:rescored"
    assert store.claim(key, T0, 60_000) is True
    assert store.claim(key, T0 + 1000, 60_000) is False
    store.unclaim(key, T0)
    assert store.claim(key, T0 + 2000, 60_000) is True
    assert store.claim(key, T0 + 62_000, 60_000) is True


@pytest.fixture
def sends(monkeypatch) -> Counter:
    """Writes per server port, on every real connection (blocking and asyncio): one write of
    pipelined commands is one round trip."""
    counts: Counter = Counter()
    blocking = redis.connection.Connection.send_packed_command
    awaiting = redis.asyncio.connection.Connection.send_packed_command

    def counted(self, command, check_health=True):
        counts[int(self.port)] += 1
        return blocking(self, command, check_health)

    async def counted_async(self, command, check_health=True):
        counts[int(self.port)] += 1
        return await awaiting(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    monkeypatch.setattr(redis.asyncio.connection.Connection, "send_packed_command", counted_async)
    return counts


def test_a_decision_costs_one_round_trip_per_node(cluster, cluster_client, sends):
    store = OnlineStore(cluster_client, PLAN)
    event = spread_payment(cluster_client, store, 0, T0)
    flag = f"{store.key('account', event['account_id'])}:suspended"
    cluster_client.set(flag, "dec0")
    store.apply(payment(99, T0 - 1000, account=event["account_id"]))  # the script is loaded
    ports = {n.port for n in cluster_client.get_primaries()}

    sends.clear()
    reading = store.read_for_decision(event, [flag])
    assert dict(sends) == dict.fromkeys(ports, 1)
    assert reading.applied and reading.flags == ("dec0",)
    assert reading.features["account_payments_1h"] == 1.0

    async def decide_async():
        _, async_client = redis_clients(cluster.url, 10)
        store.async_client = async_client
        try:
            await store.read_for_decision_async(
                {**event, "event_id": "warm", "ts": T0 + 1}, [flag], apply=False
            )  # the asyncio client learns the slot map at its first command
            sends.clear()
            return await store.read_for_decision_async({**event, "event_id": "ev2", "ts": T0 + 5})
        finally:
            await async_client.aclose()

    reading = asyncio.run(decide_async())
    assert dict(sends) == dict.fromkeys(ports, 1)
    assert reading.applied and reading.features["account_payments_1h"] == 2.0
    # A read that touches only the account's master costs that master alone.
    sends.clear()
    store.read_for_decision({"event_id": "a", "ts": T0 + 9, "type": "login",
                             "account_id": event["account_id"]}, [flag], apply=False)  # fmt: skip
    assert dict(sends) == {cluster_client.get_node_from_key(flag).port: 1}


def test_a_lost_script_is_loaded_again_on_every_master(cluster_client):
    store = OnlineStore(cluster_client, PLAN)
    event = spread_payment(cluster_client, store, 0, T0)
    assert store.apply(event)
    cluster_client.script_flush()  # what a restart of every master does to the script cache
    second = {**event, "event_id": "ev1", "ts": T0 + 10}
    reading = store.read_for_decision(second)
    assert reading.applied and reading.features["account_payments_1h"] == 1.0
    assert store.read({**event, "event_id": "p", "ts": T0 + 99})["account_payments_1h"] == 2.0
    assert all(cluster_client.script_exists(store._sha))


def test_the_blocking_client_names_the_cluster_when_it_does_not_answer(tmp_path: Path):
    with pytest.raises(redis.exceptions.RedisClusterException):
        redis_client("redis+cluster://127.0.0.1:1", 0.5)


def test_arbiter_ingest_loads_the_cluster_and_a_replay_changes_nothing(cluster, tmp_path):
    out = tmp_path / "world"
    done = arbiter("simulate", "--accounts", "30", "--days", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    events = pd.read_parquet(out / "events.parquet")
    client = redis_client(cluster.url, 10)
    client.flushall()
    try:
        first = arbiter("ingest", str(out / "events.parquet"), ARBITER_REDIS_URL=cluster.url)
        assert first.returncode == 0, first.stderr
        assert f"{len(events):,} events applied, 0 already known" in first.stdout
        assert "bulk load" in first.stdout
        again = arbiter("ingest", str(out / "events.jsonl"), "--mode", "stream",
                        ARBITER_REDIS_URL=cluster.url)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert f"0 events applied, {len(events):,} already known" in again.stdout
        account = events.loc[events["type"] == "payment", "account_id"].iloc[0]
        end = pd.Timestamp(events["ts"].max()) + pd.Timedelta(minutes=1)
        shown = arbiter("features", "show", "--account", account, "--at", end.isoformat(),
                        ARBITER_REDIS_URL=cluster.url)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert f"features of {account}" in shown.stdout
    finally:
        client.flushall()
        client.close()


def test_the_service_decides_payments_on_the_cluster(models, cluster, cluster_client, tmp_path):
    """The real server process configured with the cluster URL: payments are decided with
    features (not degraded), a retry counts once, a suspended account's flag lands beside its
    features on the cluster."""
    server = Server(tmp_path, redis_url=cluster.url, tracking_uri=models.tracking_uri,
                    model_name=NAME, account_model_name=ACCOUNT_NAME)  # fmt: skip
    try:
        server.wait("/readyz")
        with server.client() as api:
            checks = api.get("/readyz").json()["checks"]
            assert checks["redis"]["ok"], checks
            ts = T0 + 10**9
            first = {"payment_id": "pay-c1", "account_id": "acct-c1", "amount": 25.0,
                     "currency": "USD", "card_fp": "card-c1", "bin_country": "US",
                     "billing_country": "US", "ip": "73.12.40.9", "ts": ts}  # fmt: skip
            one = api.post("/v1/payments/score", json=first)
            assert one.status_code == 200, one.text
            assert one.json()["degraded"] is False and one.json()["score"] is not None
            assert api.post("/v1/payments/score", json=first).json() == one.json()
            later = {**first, "payment_id": "pay-c2", "ts": ts + 1000}
            decided = api.post("/v1/payments/score", json=later).json()
            assert decided["degraded"] is False
            features = api.get(f"/v1/decisions/{decided['decision_id']}").json()["features"]
            assert features["account_payments_24h"] == 1
            store = DecisionStore(server.database_url)
            try:
                store.set_account_status("acct-c9", "suspended", actor="test", reason="e2e")
            finally:
                store.close()
            suspended = {**first, "payment_id": "pay-c9", "account_id": "acct-c9"}
            body = api.post("/v1/payments/score", json=suspended).json()
            assert body["action"] == "decline" and body["degraded"] is False
            assert [r["code"] for r in body["reasons"]] == ["ACCOUNT_SUSPENDED"]
        assert cluster_client.get("arb:{account:acct-c9}:suspended") is not None
    finally:
        server.stop()


def test_moved_slots_are_followed_on_both_clients(tmp_path):
    with OwnRedisCluster(tmp_path) as own:
        client, async_client = redis_clients(own.url, 10)
        store = OnlineStore(client, PLAN, async_client=async_client)
        event = spread_payment(client, store, 0, T0)
        account = store.key("account", event["account_id"])

        async def read_async(ts: int):
            return await store.read_for_decision_async({**event, "event_id": f"a{ts}", "ts": ts})

        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(read_async(T0)).applied  # both maps learnt
            source = client.get_node_from_key(account).port
            target = next(p for p in own.ports if p != source)
            own.move_slots(source, target)  # the keys move; neither client knows yet
            reading = store.read_for_decision({**event, "event_id": "s1", "ts": T0 + 1000})
            assert reading.applied and not reading.unknown
            assert reading.features["account_payments_1h"] == 1.0
            assert client.get_node_from_key(account).port == target
            reading = loop.run_until_complete(read_async(T0 + 2000))
            assert reading.applied and reading.features["account_payments_1h"] == 2.0
            assert async_client.get_node_from_key(account).port == target
            loop.run_until_complete(async_client.aclose())
        finally:
            loop.close()
            client.close()


def test_after_a_failover_the_store_follows_the_new_slot_map(tmp_path):
    with OwnRedisCluster(tmp_path, node_timeout_ms=1000) as own:
        client = redis_client(own.url, 2)
        store = OnlineStore(client, PLAN)
        event = spread_payment(client, store, 0, T0)
        assert store.apply(event)
        dead = client.get_node_from_key(store.key("card", event["card_fp"])).port
        own.kill(dead)
        probe = {**event, "event_id": "ev1", "ts": T0 + 1000}
        with pytest.raises(FeatureStoreUnavailable, match="Redis: Error 111 connecting"):
            store.read_for_decision(probe, apply=False)
        own.cover_lost_slots(next(p for p in own.ports if p != dead))
        deadline = time.monotonic() + 30  # the map is asked for again at most once a second
        while True:
            try:
                store.read_for_decision(probe, apply=False)  # reads only: nothing half applied
                break
            except FeatureStoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        reading = store.read_for_decision(probe)
        assert reading.applied
        assert reading.unknown == {"card"}  # lost with its master (no replicas here)
        assert reading.features["account_payments_1h"] == 1.0
        assert reading.features["ip_payments_1h"] == 1.0
        client.close()

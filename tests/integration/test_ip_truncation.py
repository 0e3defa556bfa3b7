"""Stored IPs follow the feature spec's setting (docs/features.md, `enrich: keep`): with
`keep: truncated` no full address reaches Redis, in keys or values, while the country and
network type still come from the full address; the online and offline sides agree on the
truncated features (parity); with `keep: full` the addresses are kept in their one text form,
so one address written two ways (by the score door, the events door or a log) is one entity."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from features.bulk import BulkLoader
from features.geoip import canonical, truncate
from features.offline import build_features
from features.online import OnlineStore
from features.parity import compare, replay
from features.spec import InvalidSpec, load_spec
from tests.conftest import ROOT
from tests.integration.test_parity_world import log_with_every_scenario  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def spec_keeping(tmp_path, keep: str, **more):
    spec = yaml.safe_load((ROOT / "config" / "features.yaml").read_text())
    spec["enrich"][0].update(keep=keep, **more)
    path = tmp_path / f"features-{keep}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_spec(path)


def everything_in(client) -> str:
    """Every key and value of the Redis database, as one text."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        parts.append(key.decode())
        kind = client.type(key).decode()
        if kind == "hash":
            parts += [x.decode() for pair in client.hgetall(key).items() for x in pair]
        elif kind == "string":
            parts.append(client.get(key).decode())
        elif kind == "set":
            parts += [m.decode() for m in client.smembers(key)]
        elif kind == "zset":
            parts += [m.decode() for m in client.zrange(key, 0, -1)]
    return "\n".join(parts)


def test_truncated_ips_never_reach_redis_and_both_sides_agree(
    redis_client,
    tmp_path,
    log_with_every_scenario,  # noqa: F811
):
    log, _ = log_with_every_scenario
    log = log.iloc[:4000].reset_index(drop=True)
    full_ips = {ip for ip in log["ip"].dropna().unique() if not str(ip).endswith(".0")}
    assert len(full_ips) > 20
    plan = spec_keeping(tmp_path, "truncated")
    assert plan.version != load_spec(ROOT / "config" / "features.yaml").version

    offline = build_features(plan, log.copy())
    online = replay(OnlineStore(redis_client, plan), log)
    assert compare(offline, online, tolerance=1e-9) == []
    stored = everything_in(redis_client)
    tokens = set(stored.replace("{", " ").replace("}", " ").replace(":", " ").split())
    assert full_ips.isdisjoint(tokens), sorted(full_ips & tokens)[:5]
    assert any(truncate(ip) in stored for ip in full_ips)  # the /24s are what is kept

    # Countries and networks still come from the full address.
    full = build_features(load_spec(ROOT / "config" / "features.yaml"), log.copy())
    for name in ("card_ip_country_mismatch", "ip_is_hosting", "ip_is_anonymous"):
        assert offline[name].equals(full[name]), name


def test_full_ips_are_kept_as_given(redis_client, tmp_path, log_with_every_scenario):  # noqa: F811
    log, _ = log_with_every_scenario
    log = log.iloc[:1000].reset_index(drop=True)
    replay(OnlineStore(redis_client, spec_keeping(tmp_path, "full")), log)
    stored = everything_in(redis_client)
    assert all(str(ip) in stored for ip in log["ip"].dropna().unique()[:20])


def test_truncation_cuts_to_the_configured_networks(tmp_path):
    assert truncate("31.38.189.237") == "31.38.189.0"
    assert truncate("31.38.189.237", 16) == "31.38.0.0"
    assert truncate("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert truncate("not-an-ip") == "not-an-ip"
    assert truncate("::ffff:31.38.189.237") == "31.38.189.0"  # an IPv4 address, mapped
    assert truncate("2001:db8::1:1", 24, 64) == "2001:db8::"
    with pytest.raises(InvalidSpec, match=r"ipv4_prefix"):
        spec_keeping(tmp_path, "truncated", ipv4_prefix=40)
    with pytest.raises(InvalidSpec, match=r"keep"):
        spec_keeping(tmp_path, "hashed")


def test_one_address_written_two_ways_is_one_entity_online_and_offline(redis_client, tmp_path):
    # IPv6 in capitals or uncompressed, IPv4 written as IPv6 (a dual-stack socket's form):
    # each is the same address as its usual text, on both sides.
    assert canonical("2001:DB8:0:0::1") == "2001:db8::1" == canonical("2001:db8::1")
    assert canonical("::FFFF:31.10.0.7") == "31.10.0.7"
    assert canonical("not-an-ip") == "not-an-ip"
    t0 = 1_790_000_000_000
    ips = ["2001:DB8::1", "2001:db8:0::1", "2001:db8::1", "::ffff:31.10.0.7", "31.10.0.7"]
    log = pd.DataFrame([
        {"event_id": f"e{i}", "type": "payment", "ts": t0 + i * 1000, "account_id": f"a{i}",
         "payment_id": f"p{i}", "amount": 10.0, "currency": "USD", "card_fp": f"c{i}",
         "bin_country": "US", "billing_country": "US", "ip": ip, "status": "approved"}
        for i, ip in enumerate(ips)
    ])  # fmt: skip
    for keep in ("full", "truncated"):
        redis_client.flushdb()
        plan = spec_keeping(tmp_path, keep)
        online = replay(OnlineStore(redis_client, plan), log)
        offline = build_features(plan, log.copy())
        assert compare(offline, online) == [], keep
        # The third payment from the IPv6 address sees the first two; the IPv4 one, its twin.
        assert list(online["ip_payments_1h"]) == [0, 1, 2, 0, 1], keep
        assert list(online["ip_accounts_24h"]) == [0, 1, 2, 0, 1], keep
    # A bulk load looks for the address as it is keyed: Redis holds it, so this log is not new.
    later = log.iloc[:1].assign(event_id="e9", ts=t0 + 5 * 3_600_000, account_id="a9",
                                payment_id="p9", card_fp="c9", ip="2001:DB8:0:0:0::1")  # fmt: skip
    assert BulkLoader(OnlineStore(redis_client, plan)).is_fresh(later) is False
    assert BulkLoader(OnlineStore(redis_client, plan)).is_fresh(later.assign(ip="2001:db9::1"))

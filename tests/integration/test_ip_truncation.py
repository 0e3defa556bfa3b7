"""Stored IPs follow the feature spec's setting (docs/features.md, `enrich: keep`): with
`keep: truncated` no full address reaches Redis, in keys or values, while the country and
network type still come from the full address; the online and offline sides agree on the
truncated features (parity); with `keep: full` the addresses are kept as given."""

from __future__ import annotations

import pytest
import yaml

from features.geoip import truncate
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

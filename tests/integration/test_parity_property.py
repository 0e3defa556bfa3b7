"""Property: for any event sequence the online store and the offline builder agree exactly.

Random sequences stress what breaks naive implementations: ties in timestamps, events exactly on
window and bucket edges, late labels (counted only from their own arrival), entities idle past
their ttl, missing keys and fields.
"""

from __future__ import annotations

import pandas as pd
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.offline import build_features
from features.online import OnlineStore
from features.parity import compare, replay
from features.spec import load_spec
from tests.conftest import DATA

PLAN = load_spec(DATA / "property_spec.yaml")
T0 = 1_790_000_000_000  # a multiple of every hop in the spec, so edges line up

event = st.fixed_dictionaries(
    {
        # Steps on a 500 ms grid: windows and hops are multiples of it, so many events fall
        # exactly on edges and many share a timestamp; some pauses are exactly a window or a
        # ttl (20 s, 30 s) or just either side of one.
        "step": st.one_of(
            st.integers(0, 24).map(lambda k: k * 500),
            st.sampled_from([10_000, 19_500, 20_000, 20_500, 29_500, 30_000, 30_500, 60_000]),
        ),
        "type": st.sampled_from(["a", "b", "label"]),
        "user": st.one_of(st.none(), st.sampled_from(["u1", "u2", "u3"])),
        "merchant": st.one_of(st.none(), st.sampled_from(["m1", "m2"])),
        "amount": st.one_of(st.none(), st.integers(0, 100_000).map(lambda c: c / 100)),
        "flag": st.one_of(st.none(), st.booleans()),
        "category": st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    }
)


def as_log(events: list[dict]) -> pd.DataFrame:
    rows, ts = [], T0
    for i, e in enumerate(events):
        ts += e["step"]
        row = {"event_id": f"e{i}", "type": e["type"], "ts": ts}
        row.update({k: e[k] for k in ("user", "merchant", "amount", "flag", "category")})
        rows.append(row)
    return pd.DataFrame(rows)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(event, min_size=1, max_size=45))
def test_online_equals_offline_for_any_sequence(redis_client: redis.Redis, events: list[dict]):
    redis_client.flushdb()
    log = as_log(events)
    store = OnlineStore(redis_client, PLAN, dedupe_ttl_ms=60_000)
    online = replay(store, log)
    offline = build_features(PLAN, log.copy())
    assert compare(offline, online) == []

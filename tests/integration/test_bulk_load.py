"""A bulk-loaded store reads exactly like one that applied the same log event by event."""

from __future__ import annotations

import numpy as np
import pytest

from features.bulk import BulkLoader
from features.log import frame_records
from features.online import OnlineStore
from features.spec import load_spec
from tests.conftest import DATA, ROOT
from training.simulator import SimConfig, simulate

PLATFORM = load_spec(ROOT / "config" / "features.yaml")
CARD = load_spec(DATA / "card_payments_spec.yaml")


def probes(log, offsets):
    """Requests after the log, keyed like its events, at its last instant (ties), just after,
    and later (window edges, expiry)."""
    rng = np.random.default_rng(1)
    sample = log.iloc[rng.choice(len(log), size=min(400, len(log)), replace=False)]
    end = int(log["ts"].max())
    out = []
    for i, event in enumerate(frame_records(sample)):
        event["ts"] = end + offsets[i % len(offsets)]
        event["event_id"] = f"probe{i}"
        out.append(event)
    return out


def assert_same_reads(replayed, bulk, requests):
    for request in requests:
        a, b = replayed.read(request), bulk.read(request)
        assert a.keys() == b.keys()
        for name in a:
            same = a[name] == b[name] or (a[name] != a[name] and b[name] != b[name])
            assert same, (request["event_id"], request["ts"], name, a[name], b[name])


@pytest.mark.parametrize("plan_name", ["platform", "card"])
def test_bulk_load_reads_like_replay(redis_client, plan_name):
    if plan_name == "platform":
        plan = PLATFORM
        log = simulate(SimConfig(accounts=150, days=6, seed=5)).events
    else:
        from features.log import read_log

        plan, log = CARD, read_log(DATA / "card_payments.jsonl")
    replayed = OnlineStore(redis_client, plan, prefix="replay")
    bulk = OnlineStore(redis_client, plan, prefix="bulk")
    replayed.apply_many(list(frame_records(log)))
    loader = BulkLoader(bulk)
    assert loader.is_fresh(log)
    assert loader.load(log.copy()) == len(log)
    assert not loader.is_fresh(log)
    hour, day = 3_600_000, 86_400_000
    requests = probes(log, [0, 0, 1, 7 * 60_000, 45 * 60_000, 3 * hour, day, 8 * day, 40 * day])
    assert_same_reads(replayed, bulk, requests)
    # A replay of the log into the bulk-loaded store changes nothing: every event is known.
    assert bulk.apply_many(list(frame_records(log.head(500)))) == 0

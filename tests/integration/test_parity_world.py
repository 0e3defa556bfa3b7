"""The heart of the foundation: a simulated log with every fraud scenario, replayed through the
real Redis online store (each event's features read just before it is applied), equals the
offline builder's matrix within 1e-9 for every feature of every event."""

from __future__ import annotations

import numpy as np
import pytest

from features.events import validate_frame
from features.offline import build_features
from features.online import OnlineStore
from features.parity import compare, replay
from features.spec import load_spec
from tests.conftest import ROOT
from training.simulator import SCENARIOS, SimConfig, simulate

PLAN = load_spec(ROOT / "config" / "features.yaml")


@pytest.fixture(scope="module")
def log_with_every_scenario():
    """All events of the three quietest accounts of each scenario and of 25 ordinary benign
    accounts: every scenario, every event type, shared IPs and prefixes, ~12k events."""
    world = simulate(SimConfig(accounts=1000, days=14, seed=3))
    sizes = world.events.groupby("account_id").size()
    chosen: list[str] = []
    for _, group in world.accounts.groupby("scenario"):
        chosen += list(sizes.reindex(group["account_id"]).fillna(0).sort_values().index[:3])
    benign = sizes.reindex(world.accounts.loc[world.accounts["scenario"].isna(), "account_id"])
    ordered = benign.fillna(0).sort_values()
    chosen += list(ordered.index[len(ordered) // 2 : len(ordered) // 2 + 25])
    log = world.events[world.events["account_id"].isin(chosen)].reset_index(drop=True)
    touched = world.truth[world.truth["event_id"].isin(log["event_id"])]
    return log, set(touched["scenario"])


def test_the_log_holds_every_scenario_and_event_type(log_with_every_scenario):
    log, scenarios = log_with_every_scenario
    validate_frame(log)
    assert scenarios == set(SCENARIOS)
    assert {"payment", "sms", "call", "login", "api_request", "label", "account_created"} <= set(
        log["type"]
    )


def test_online_features_equal_offline_features_for_every_event(
    redis_client, log_with_every_scenario
):
    log, _ = log_with_every_scenario
    offline = build_features(PLAN, log.copy())
    online = replay(OnlineStore(redis_client, PLAN), log)
    assert compare(offline, online, tolerance=1e-9) == []
    # Not vacuous: the features vary, and every feature is defined somewhere.
    values = offline[list(PLAN.output)]
    assert values.notna().any().all()
    assert (values.nunique() > 1).sum() >= len(PLAN.output) - 2
    assert np.isfinite(values.to_numpy(dtype=float)[~np.isnan(values.to_numpy(dtype=float))]).all()

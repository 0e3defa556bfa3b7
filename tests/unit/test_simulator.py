"""The simulator: deterministic, schema-valid, every scenario present, not trivially separable."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from cli import simulate as simulate_cli
from features.events import parse_ts, validate_frame
from features.geoip import IpResolver
from features.log import write_parquet
from training.simulator import (
    SCENARIOS,
    InvalidSimConfig,
    SimConfig,
    SimulatedWorld,
    addresses,
    geo,
    phones,
    simulate,
    write_world,
)
from training.simulator.addresses import AddressSpace
from training.simulator.config import DAY_MS


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(SimConfig(accounts=1500, days=21))


@pytest.fixture(scope="module")
def payments(world: SimulatedWorld) -> pd.DataFrame:
    frame = world.events[world.events["type"] == "payment"].copy()
    frame["fraud"] = frame["event_id"].isin(world.truth["event_id"])
    country, network = IpResolver.default().resolve_series(frame["ip"])
    frame["ip_country"], frame["ip_network"] = country, network
    return frame


def small(seed: int = 7) -> SimulatedWorld:
    return simulate(SimConfig(accounts=300, days=5, seed=seed))


def test_the_same_seed_gives_a_byte_identical_event_table(tmp_path):
    first, second = small(), small()
    pd.testing.assert_frame_equal(first.events, second.events)
    pd.testing.assert_frame_equal(first.accounts, second.accounts)
    pd.testing.assert_frame_equal(first.truth, second.truth)
    write_parquet(first.events, tmp_path / "a.parquet")
    write_parquet(second.events, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_a_different_seed_gives_a_different_world():
    assert not small(7).events.equals(small(8).events)


def test_every_event_is_valid_for_the_schema(world):
    validate_frame(world.events)


def test_events_are_sorted_by_time_with_unique_stable_ids(world):
    events = world.events
    assert events["ts"].is_monotonic_increasing
    assert events["event_id"].is_unique
    assert events["event_id"].iloc[0] == "ev_000000000"
    payment_ids = events.loc[events["type"] == "payment", "payment_id"]
    assert payment_ids.notna().all() and payment_ids.is_unique
    assert events.loc[events["type"] != "payment", "payment_id"].isna().all()


def test_every_scenario_has_accounts_and_events(world):
    assert set(world.accounts["scenario"].dropna()) == set(SCENARIOS)
    assert set(world.truth["scenario"]) == set(SCENARIOS)
    fraud_share = world.accounts["scenario"].notna().mean()
    assert 0.03 <= fraud_share <= 0.06


def test_truth_stays_out_of_the_event_log(world):
    assert "scenario" not in world.events.columns
    in_truth = world.events["event_id"].isin(world.truth["event_id"])
    assert in_truth.sum() == len(world.truth)
    assert "label" not in set(world.events.loc[in_truth, "type"])


def test_compromised_accounts_were_honest_before_the_compromise(world):
    accounts = world.accounts.set_index("account_id")
    compromised = accounts["compromised_at"].dropna()
    assert set(accounts.loc[compromised.index, "scenario"]) <= {
        "toll_fraud",
        "account_takeover",
        "sms_pumping",
    }
    fraud = world.events[world.events["event_id"].isin(world.truth["event_id"])]
    fraud = fraud[fraud["account_id"].isin(compromised.index)]
    first = fraud.groupby("account_id")["ts"].min()
    assert (first == compromised.loc[first.index].astype("int64")).all()


def test_labels_come_after_what_they_label_and_inside_the_window(world):
    events = world.events
    labels = events[events["type"] == "label"]
    assert set(labels["source"]) == {"chargeback", "review"}
    assert set(labels["label"]) == {"fraud", "not_fraud"}
    assert (labels["ts"] < world.config.end_ms).all()
    targeted = labels[labels["target_event_id"].notna()]
    target = events.set_index("event_id").loc[targeted["target_event_id"]]
    assert (targeted["ts"].to_numpy() > target["ts"].to_numpy()).all()
    assert (targeted["account_id"].to_numpy() == target["account_id"].to_numpy()).all()
    chargebacks = labels[labels["source"] == "chargeback"]
    assert chargebacks["target_event_id"].notna().all()
    assert (target.loc[chargebacks["target_event_id"], "status"] == "approved").all()


def test_no_event_precedes_its_account_or_follows_its_closure(world):
    events = world.events
    created = events[events["type"] == "account_created"].set_index("account_id")["ts"]
    assert created.index.is_unique and len(created) == len(world.accounts)
    later = events[events["type"] != "account_created"]
    assert (later["ts"].to_numpy() > created.loc[later["account_id"]].to_numpy()).all()
    assert (later["ts"] >= world.config.start_ms).all()
    closed = events[events["type"] == "account_closed"].set_index("account_id")["ts"]
    after = later[later["account_id"].isin(closed.index) & (later["type"] != "label")]
    assert (after["ts"].to_numpy() <= closed.loc[after["account_id"]].to_numpy()).all()


def test_payments_carry_fingerprints_never_card_numbers(world, payments):
    assert payments["card_fp"].str.fullmatch(r"[0-9a-f]{16}").all()
    card_number = re.compile(r"[\d -]{12,23}")
    for column in payments.columns:
        if payments[column].dtype == "str":
            assert not payments[column].dropna().str.fullmatch(card_number).any(), column


def test_drawn_addresses_resolve_to_the_intended_country_and_network():
    space, resolver = AddressSpace(), IpResolver.default()
    rng = np.random.default_rng(0)
    for network in ("residential", "mobile", "hosting", "vpn"):
        code = addresses.NETWORKS.index(network)
        countries = np.repeat(np.arange(geo.N_COUNTRIES), 5)
        drawn = addresses.dotted(space.draw(rng, countries, code))
        for ip, country in zip(drawn, geo.CODES[countries], strict=True):
            assert resolver.resolve(ip) == (country, network)


def test_honest_accounts_act_from_home_mostly(world):
    events = world.events[world.events["type"].isin(["account_created", "login"])]
    honest = world.accounts.loc[world.accounts["scenario"].isna()].set_index("account_id")
    events = events[events["account_id"].isin(honest.index)]
    country, network = IpResolver.default().resolve_series(events["ip"])
    assert set(network) <= {"residential", "mobile", "vpn"}
    home = honest.loc[events["account_id"], "country"].to_numpy()
    assert (country == home).mean() > 0.9  # travellers and VPN users make up the rest


@pytest.mark.parametrize(
    "signal",
    [
        "bin_mismatch",
        "bin_vs_ip",
        "hosting",
        "not_residential",
        "amount",
        "small_amount",
        "declined",
    ],
)
def test_no_obvious_payment_signal_separates_fraud_on_its_own(payments, signal):
    scores = {
        "bin_mismatch": payments["bin_country"] != payments["billing_country"],
        "bin_vs_ip": payments["bin_country"] != payments["ip_country"],
        "hosting": payments["ip_network"] == "hosting",
        "not_residential": ~payments["ip_network"].isin(["residential", "mobile"]),
        "amount": payments["amount"],
        "small_amount": -payments["amount"],
        "declined": payments["status"] == "declined",
    }[signal]
    assert 0.01 < payments["fraud"].mean() < 0.1
    precision = average_precision_score(payments["fraud"], scores.astype(float))
    assert precision < 0.8


def test_no_obvious_account_signal_separates_fraud_on_its_own(world):
    accounts = world.accounts.set_index("account_id")
    events = world.events
    kind = dict(zip(phones.PREFIX_LABELS, phones.KIND, strict=True))
    traffic = events[events["type"].isin(["sms", "call"])]
    expensive = (traffic["dest_prefix"].map(kind) != "standard").groupby(traffic["account_id"])
    created = events[events["type"] == "account_created"].set_index("account_id")
    _, network = IpResolver.default().resolve_series(created["ip"])
    payments = events[events["type"] == "payment"]
    declined = (payments["status"] == "declined").groupby(payments["account_id"])
    cards = payments.groupby("account_id")["card_fp"].nunique()
    signals = {
        "expensive_share": expensive.mean(),
        "expensive_count": expensive.sum(),
        "trial": accounts["trial"],
        "signup_not_residential": pd.Series(
            ~np.isin(network, ["residential", "mobile"]), index=created.index
        ),
        "decline_rate": declined.mean(),
        "cards": cards,
    }
    fraud = accounts["scenario"].notna()
    for name, values in signals.items():
        score = values.reindex(accounts.index).fillna(0).astype(float)
        assert average_precision_score(fraud, score) < 0.8, name


def test_honest_payments_include_the_risky_looking_kinds(payments):
    honest = payments[~payments["fraud"]]
    assert (honest["ip_network"] == "hosting").sum() > 10
    assert (honest["bin_country"] != honest["billing_country"]).sum() > 10
    assert (honest["status"] == "declined").sum() > 10
    assert (honest["amount"] <= 2).sum() > 10


def test_sms_pumping_goes_to_sequential_numbers_and_is_not_verified(world):
    pumped = world.truth.loc[world.truth["scenario"] == "sms_pumping", "event_id"]
    sms = world.events[world.events["event_id"].isin(pumped) & (world.events["type"] == "sms")]
    assert sms["verified"].astype(bool).mean() < 0.05
    digits = sms["dest_number"].str.slice(1).astype("int64")
    steps = digits.groupby([sms["account_id"], sms["dest_prefix"]]).diff().dropna()
    assert steps.between(1, 5).mean() > 0.9


def test_config_rejects_sizes_out_of_range():
    with pytest.raises(InvalidSimConfig, match="accounts must be between 10 and 2,000,000"):
        SimConfig(accounts=5)


def test_a_world_can_end_now():
    end = parse_ts("2026-11-29T06:00:00Z")
    config = SimConfig.ending_at(end, accounts=100, days=3, seed=1)
    assert config.end_ms == end and config.start_ms == end - 3 * DAY_MS


def test_write_world_writes_every_file(tmp_path):
    world = small()
    write_world(world, tmp_path, jsonl=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "events.parquet",
        "events.jsonl",
        "accounts.parquet",
        "truth.parquet",
        "summary.json",
    }
    accounts = pd.read_parquet(tmp_path / "accounts.parquet")
    assert list(accounts.columns[:8]) == [
        "account_id",
        "signup_ts",
        "country",
        "plan",
        "trial",
        "verification",
        "scenario",
        "compromised_at",
    ]
    assert list(pd.read_parquet(tmp_path / "truth.parquet").columns) == ["event_id", "scenario"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events"] == len(world.events)
    assert set(summary["scenarios"]) == set(SCENARIOS)


def _cli() -> typer.Typer:
    app = typer.Typer()
    simulate_cli.register(app)

    @app.callback()
    def main() -> None:
        """Test app."""

    return app


def test_the_simulate_command_writes_a_world_and_prints_a_summary(tmp_path):
    out = tmp_path / "world"
    args = ["simulate", "--accounts", "200", "--days", "3", "--out", str(out), "--no-jsonl"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "fraud scenarios" in result.output
    assert (out / "events.parquet").exists() and not (out / "events.jsonl").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["start"] == "2026-10-01T00:00:00.000Z"


def test_the_simulate_command_refuses_both_start_and_end(tmp_path):
    args = ["simulate", "--start", "2026-01-01T00:00:00Z", "--end", "now", "--out", str(tmp_path)]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code != 0
    assert "give --start or --end, not both" in result.output

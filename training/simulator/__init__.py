"""A seeded, deterministic simulator of a voice/SMS API platform, honest customers and fraud.

`simulate(SimConfig(...))` returns a `SimulatedWorld`: the event log (exactly the schema of
`features.events`), the accounts with their hidden scenario, and the ground truth per event.
The same config gives the same world, byte for byte.

Modules, one concept each, in the order a world is made:
    config        -- SimConfig, scenario base rates, the per-component random streams
    geo           -- countries: sign-up mix, time zones, currencies, card issuing
    addresses     -- IPv4 addresses drawn from the resolver's simulated ranges
    phones        -- dialling prefixes, their costs and kinds, destination numbers
    world         -- the accounts (Population): plans, habits, addresses, cards, trips
    rhythm        -- daily and weekly activity profiles in local time
    table         -- the columnar event table, sorted and given ids at the end
    benign        -- honest traffic: sign-ups, logins, API calls, SMS, calls, campaigns
    billing       -- honest payments: card checks, top-ups, invoices, declines and retries
    scenarios     -- which accounts fraud owns or compromises; runs the scenarios
    fraudster     -- the fraudster's toolkit: exit addresses, logins, cashing out
    card_fraud    -- stolen_card, card_testing, account_takeover, trial_abuse
    traffic_fraud -- sms_pumping, irsf, toll_fraud
    labels        -- chargebacks and review outcomes, delayed; unknown ones not emitted
    summary       -- counts and realised base rates
    output        -- writing the world's files

Errors: `InvalidSimConfig` (a ValueError) for parameters out of range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.simulator import benign, billing, labels, scenarios, summary
from training.simulator.addresses import AddressSpace
from training.simulator.config import (
    BENIGN,
    SCENARIO_RATES,
    SCENARIOS,
    InvalidSimConfig,
    SimConfig,
)
from training.simulator.output import write_world
from training.simulator.table import EventTable
from training.simulator.world import NEVER, PLANS, VERIFICATIONS, Population, populate

__all__ = [
    "SCENARIOS",
    "SCENARIO_RATES",
    "InvalidSimConfig",
    "SimConfig",
    "SimulatedWorld",
    "simulate",
    "write_world",
]


@dataclass(frozen=True)
class SimulatedWorld:
    config: SimConfig
    events: pd.DataFrame  # the event log, sorted by ts
    accounts: pd.DataFrame  # one row per account, with its (hidden) scenario
    truth: pd.DataFrame  # event_id, scenario of every event a fraud scenario drew
    summary: dict[str, Any]


def simulate(config: SimConfig) -> SimulatedWorld:
    space = AddressSpace()
    pop = populate(config, space)
    scenarios.cast(pop, config, space)
    table = EventTable(config.start_ms, config.end_ms, pop.signup_ms, pop.close_ms)
    benign.generate(pop, config, table)
    billing.generate(pop, config, table)
    scenarios.generate(pop, config, table, space)
    _mark_compromise(pop, table)
    labels.generate(pop, config, table)
    account_ids = _account_ids(pop)
    log = table.build(account_ids)
    fraud = log.scenario != BENIGN
    truth = pd.DataFrame(
        {
            "event_id": log.events["event_id"][fraud].to_numpy(),
            "scenario": np.array(SCENARIOS, dtype=object)[log.scenario[fraud]],
        }
    )
    accounts = _accounts_frame(pop, account_ids)
    return SimulatedWorld(
        config, log.events, accounts, truth, summary.describe(config, log, accounts)
    )


def _mark_compromise(pop: Population, table: EventTable) -> None:
    """`compromised_at` of a taken-over honest account: its first fraudulent event."""
    account, ts, _ = table.touched()
    first = np.full(pop.n, NEVER, dtype=np.int64)
    np.minimum.at(first, account, ts)
    victim = (pop.compromised_ms >= 0) & (first < NEVER)
    pop.compromised_ms[victim] = first[victim]


def _account_ids(pop: Population) -> np.ndarray:
    """`acct_` ids numbered in sign-up order, as a platform's sequence would hand them out."""
    rank = np.empty(pop.n, dtype=np.int64)
    rank[np.argsort(pop.signup_ms, kind="stable")] = np.arange(pop.n)
    width = max(6, len(str(pop.n)))
    return np.array([f"acct_{r:0{width}d}" for r in rank], dtype=object)


def _accounts_frame(pop: Population, account_ids: np.ndarray) -> pd.DataFrame:
    from training.simulator import geo

    order = np.argsort(pop.signup_ms, kind="stable")
    scenario = np.array([*SCENARIOS, None], dtype=object)[pop.scenario]
    compromised = pd.array(np.where(pop.compromised_ms >= 0, pop.compromised_ms, 0), dtype="Int64")
    compromised[pop.compromised_ms < 0] = pd.NA
    closed = pd.array(np.where(pop.close_ms < NEVER, pop.close_ms, 0), dtype="Int64")
    closed[pop.close_ms >= NEVER] = pd.NA
    frame = pd.DataFrame(
        {
            "account_id": account_ids,
            "signup_ts": pop.signup_ms,
            "country": geo.CODES[pop.country],
            "plan": np.array(PLANS, dtype=object)[pop.plan],
            "trial": pop.trial,
            "verification": np.array(VERIFICATIONS, dtype=object)[pop.verification],
            "scenario": scenario,
            "compromised_at": compromised,
            "closed_at": closed,
        }
    )
    return frame.iloc[order].reset_index(drop=True)

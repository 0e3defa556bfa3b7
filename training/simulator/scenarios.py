"""Fraud scenarios: who the fraudsters are, and the tools every scenario shares.

`cast` decides, before any event is drawn, which accounts each scenario owns (fraudsters' own
sign-ups: stolen_card, card_testing, irsf, trial_abuse, most sms_pumping) or compromises (existing
honest customers: toll_fraud, account_takeover, and apps whose passcode form gets pumped), at the
rates of `config.SCENARIO_RATES`. `generate` then runs each scenario; their behaviour lives in
`card_fraud` and `traffic_fraud`. Every event a scenario draws carries its scenario code, which
becomes `truth.parquet` and never reaches the event log.
"""

from __future__ import annotations

import numpy as np

from training.simulator import benign, card_fraud, geo, rhythm, traffic_fraud, world
from training.simulator.addresses import AddressSpace
from training.simulator.config import (
    DAY_MS,
    HOUR_MS,
    SCENARIO_RATES,
    SCENARIOS,
    SimConfig,
    scenario_code,
)
from training.simulator.fraudster import Toolkit, exits
from training.simulator.table import EventTable
from training.simulator.world import NEVER, PAYG, STARTUP, Population

OWNED_SHARE = {"sms_pumping": 0.6}  # the rest pump an honest app's passcode form
COMPROMISED = ("toll_fraud", "account_takeover")
SLEEPER_SHARE = {"stolen_card": 0.15, "irsf": 0.2}  # signed up long before, dormant since
TRIAL_SHARE = {"stolen_card": 0.2, "card_testing": 0.5, "irsf": 0.3, "sms_pumping": 0.3}
_FRAUD_LEAN = np.array(
    [3.0 if c in ("NG", "ID", "PH", "RU", "UA", "BR", "IN", "VN") else 1.0 for c in geo.CODES]
)
FRAUD_COUNTRY_P = geo.SIGNUP_P * _FRAUD_LEAN / (geo.SIGNUP_P * _FRAUD_LEAN).sum()


def count(name: str, accounts: int) -> int:
    """Accounts a scenario gets: its rate of the world, at least one ring or account once the
    world has 200 accounts, so that every scenario appears in small test worlds."""
    expected = SCENARIO_RATES[name] * accounts
    minimum = 3 if name == "trial_abuse" else 1
    return max(minimum, round(expected)) if accounts >= 200 else round(expected)


def cast(pop: Population, config: SimConfig, space: AddressSpace) -> None:
    """Assign scenarios to accounts, rewriting the owned accounts' sign-up attributes."""
    rng = config.rng("cast")
    start, end = config.start_ms, config.end_ms
    free = (pop.close_ms == NEVER).copy()
    for name in SCENARIOS:
        n = count(name, pop.n)
        owned = n if name not in COMPROMISED else 0
        if name in OWNED_SHARE:
            owned = round(n * OWNED_SHARE[name])
        if owned:
            chosen = rng.permutation(np.flatnonzero(free))[:owned]
            free[chosen] = False
            _own(rng, pop, config, space, chosen, name)
            if name == "trial_abuse":
                _rings(rng, pop, config, space, chosen)
        victims = n - owned
        if victims:
            # Victims are established, active customers; toll fraud needs a voice business.
            fit = free & (pop.signup_ms < end - 4 * DAY_MS) & (pop.volume > 0.5)
            if name == "toll_fraud":
                fit &= (pop.sms_share < 1.0) & (pop.plan > PAYG)
            elif name == "sms_pumping":
                fit &= (pop.sms_share > 0) & (pop.otp_share > 0.3)
            chosen = rng.permutation(np.flatnonzero(fit))[:victims]
            free[chosen] = False
            pop.scenario[chosen] = scenario_code(name)
            lo = np.maximum(pop.signup_ms[chosen] + 3 * DAY_MS, start)
            until = end - 12 * HOUR_MS - lo
            pop.compromised_ms[chosen] = lo + (rng.random(len(chosen)) * until).astype(np.int64)


def _own(
    rng: np.random.Generator,
    pop: Population,
    config: SimConfig,
    space: AddressSpace,
    chosen: np.ndarray,
    name: str,
) -> None:
    n, start, end = len(chosen), config.start_ms, config.end_ms
    pop.scenario[chosen] = scenario_code(name)
    pop.owned[chosen] = True
    country = geo.draw(rng, FRAUD_COUNTRY_P, n)
    pop.country[chosen] = country
    pop.billing_country[chosen] = country
    pop.plan[chosen] = np.where(rng.random(n) < 0.75, PAYG, STARTUP)
    pop.trial[chosen] = rng.random(n) < TRIAL_SHARE.get(name, 1.0)
    pop.verification[chosen] = rng.choice(4, size=n, p=[0.35, 0.48, 0.14, 0.03])
    signup = start + (rng.random(n) * (end - start - 6 * HOUR_MS)).astype(np.int64)
    sleeper = rng.random(n) < SLEEPER_SHARE.get(name, 0.0)
    signup[sleeper] = start - (rng.uniform(10, 300, int(sleeper.sum())) * DAY_MS).astype(np.int64)
    pop.signup_ms[chosen] = signup
    pop.profile[chosen] = rhythm.MACHINE
    pop.home_ips[chosen] = exits(rng, space, np.repeat(country, 3)).reshape(n, 3)
    pop.home_count[chosen] = rng.integers(1, 4, n)
    pop.api_ips[chosen, :3] = pop.home_ips[chosen]
    pop.api_count[chosen] = pop.home_count[chosen]
    pop.servers[chosen] = False
    pop.trip_start_ms[chosen] = NEVER
    pop.trip_end_ms[chosen] = NEVER


def _rings(
    rng: np.random.Generator,
    pop: Population,
    config: SimConfig,
    space: AddressSpace,
    chosen: np.ndarray,
) -> None:
    """Group trial abusers into rings of 3-8 sign-ups sharing addresses and cards."""
    order = rng.permutation(chosen)
    first = 0
    while first < len(order):
        size = int(rng.integers(3, 9))
        if len(order) - first - size < 3:
            size = len(order) - first
        ring = order[first : first + size]
        first += size
        country = int(geo.draw(rng, FRAUD_COUNTRY_P, 1)[0])
        window = config.end_ms - config.start_ms - 5 * DAY_MS
        t0 = config.start_ms + int(rng.random() * max(window, HOUR_MS))
        signup = t0 + np.sort(rng.uniform(0, 4, size) * DAY_MS).astype(np.int64)
        pop.signup_ms[ring] = np.minimum(signup, config.end_ms - HOUR_MS)
        pop.country[ring] = country
        pop.billing_country[ring] = country
        shared = exits(rng, space, np.full(3, country))
        pop.home_ips[ring] = shared
        pop.home_count[ring] = int(rng.integers(1, 4))
        pop.api_ips[ring, :3] = shared
        pop.api_count[ring] = pop.home_count[ring]
        cards = world.fingerprints(rng, 2)
        if rng.random() < 0.5:
            cards[1] = cards[0]
        pop.cards[ring, :2] = cards
        foreign = rng.random() < 0.25
        card_country = (
            geo.draw_other(rng, geo.CARD_P, np.array([country]))[0] if foreign else country
        )
        pop.card_bin[ring, :2] = card_country


def generate(pop: Population, config: SimConfig, table: EventTable, space: AddressSpace) -> None:
    owned = np.flatnonzero(pop.owned)
    tools = Toolkit(pop, config, table, space, config.rng("scenarios.signup"))
    benign.signups(pop, table, owned, tools.rng, pop.home_ips[owned, 0], pop.scenario[owned])
    runners = {
        "stolen_card": card_fraud.stolen_card,
        "card_testing": card_fraud.card_testing,
        "account_takeover": card_fraud.account_takeover,
        "trial_abuse": card_fraud.trial_abuse,
        "sms_pumping": traffic_fraud.sms_pumping,
        "irsf": traffic_fraud.irsf,
        "toll_fraud": traffic_fraud.toll_fraud,
    }
    for name in SCENARIOS:
        members = np.flatnonzero(pop.scenario == scenario_code(name))
        runners[name](Toolkit(pop, config, table, space, config.rng(f"scenarios.{name}")), members)

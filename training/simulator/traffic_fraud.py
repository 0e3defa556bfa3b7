"""Fraud that dials and texts: SMS pumping, IRSF, toll fraud.

- sms_pumping: bursts of passcode SMS to sequential numbers (+X…1000, 1001, 1002…) in a few
  expensive prefixes, almost never verified: from the fraudster's own funded account, or through
  an honest app's sign-up form (then from the app's own servers, which makes it harder to see).
- irsf: a fraudster's account places many short calls to a small pool of premium-rate numbers,
  in sessions of a few hours, preferably at night.
- toll_fraud: stolen credentials on an honest voice customer: failed then successful logins from
  a new hosting/VPN/Tor address, then a night-time spike of long calls to expensive destinations.
"""

from __future__ import annotations

import numpy as np

from training.simulator import addresses, billing, geo, phones, world
from training.simulator.benign import add_calls, add_sms
from training.simulator.card_fraud import own_ips, wake_time
from training.simulator.config import HOUR_MS, MINUTE_MS, scenario_code
from training.simulator.fraudster import Toolkit
from training.simulator.world import api_ips

FUNDING = np.array([20.0, 50, 100, 200, 300])


def _fund(
    tools: Toolkit, account: int, ts: np.ndarray, ips: np.ndarray, scenario: int, stolen: bool
) -> None:
    """Top-ups that pay for the traffic: the fraudster's own card, or a stolen one."""
    rng, pop = tools.rng, tools.pop
    m, country = len(ts), int(pop.country[account])
    if stolen:
        card = int(world.fingerprints(rng, 1)[0])
        bin_country = int(geo.draw(rng, geo.CARD_P, 1)[0])
    else:
        card, bin_country = int(pop.cards[account, 0]), int(pop.card_bin[account, 0])
    billing.add_payments(
        tools.table,
        np.full(m, account),
        ts,
        amount=rng.choice(FUNDING, m),
        currency=geo.CURRENCIES[country],
        card_fp=np.full(m, card),
        bin_country=np.full(m, bin_country),
        billing_country=np.full(m, country),
        ip=ips[rng.integers(0, len(ips), m)],
        approved=rng.random(m) < 0.88,
        scenario=scenario,
        stolen=stolen,
    )


def expensive(tools: Toolkit, k: int, premium_p: float) -> np.ndarray:
    """`k` prefixes, each premium-rate with probability `premium_p`, else expensive-SMS."""
    rng = tools.rng
    return np.where(
        rng.random(k) < premium_p, rng.choice(phones.PREMIUM, k), rng.choice(phones.HIGH_COST, k)
    )


def sms_pumping(tools: Toolkit, members: np.ndarray) -> None:
    rng, pop, sc = tools.rng, tools.pop, scenario_code("sms_pumping")
    for a in members:
        if pop.owned[a]:
            ips = own_ips(tools, a)
            begin = wake_time(tools, a, 24.0)
            tools.sessions(a, np.array([begin]), ips, sc)
            _fund(tools, a, begin + np.array([int(rng.uniform(2, 30) * MINUTE_MS)]), ips, sc, False)
            begin += int(rng.uniform(1, 12) * HOUR_MS)
            size = (100, 1000)
        else:  # bots on an honest app's form: requests come from the app's own servers
            begin = int(pop.compromised_ms[a])
            ips = api_ips(pop, rng, np.full(4, a), np.full(4, begin))
            size = (80, 700)
        starts = begin + np.cumsum(rng.uniform(0, 48, int(rng.integers(1, 4))) * HOUR_MS)
        for burst_start in starts.astype(np.int64):
            n = int(rng.integers(*size))
            ts = burst_start + np.sort(rng.random(n) * rng.uniform(15, 180) * MINUTE_MS).astype(
                np.int64
            )
            targets = expensive(tools, int(rng.integers(1, 3)), premium_p=0.2)
            prefix = targets[rng.integers(0, len(targets), n)]
            steps = np.where(rng.random(n) < 0.8, 1, rng.integers(2, 6, n))
            subscriber = np.empty(n, dtype=np.int64)
            for target in np.unique(prefix):
                rows = prefix == target
                base = phones.random_subscribers(rng, np.array([target]))[0]
                subscriber[rows] = base + np.cumsum(steps[rows])
            add_sms(
                tools.table,
                np.full(n, a),
                ts,
                prefix,
                subscriber,
                np.ones(n, dtype=np.int64),
                rng.random(n) < 0.015,
                sc,
            )
            tools.requests(a, ts[rng.random(n) < 0.15], ips, ("/v1/verify",), sc)


def irsf(tools: Toolkit, members: np.ndarray) -> None:
    rng, sc = tools.rng, scenario_code("irsf")
    for a in members:
        ips = own_ips(tools, a)
        begin = wake_time(tools, a, 6.0)
        tools.sessions(a, np.array([begin]), ips, sc)
        funding = begin + np.sort(rng.uniform(5, 24 * 60, int(rng.integers(1, 4))) * MINUTE_MS)
        _fund(tools, a, funding.astype(np.int64), ips, sc, bool(rng.random() < 0.4))
        pool_prefixes = expensive(tools, int(rng.integers(1, 4)), premium_p=0.85)
        pool = pool_prefixes[rng.integers(0, len(pool_prefixes), int(rng.integers(5, 31)))]
        numbers = phones.random_subscribers(rng, pool)
        for _ in range(int(rng.integers(1, 5))):
            night = tools.night_start(a, int(funding[0]) + int(rng.uniform(0, 72) * HOUR_MS))
            n = int(rng.integers(30, 300))
            ts = night + (rng.random(n) * rng.uniform(1, 6) * HOUR_MS).astype(np.int64)
            pick = rng.integers(0, len(pool), n)
            prefix, subscriber = pool[pick], numbers[pick]
            # Some test calls to ordinary numbers check that the route works.
            test = rng.random(n) < 0.1
            prefix[test] = phones.draw(rng, phones.INTL_P, int(test.sum()))
            subscriber[test] = phones.random_subscribers(rng, prefix[test])
            duration = np.where(
                rng.random(n) < 0.85, rng.integers(5, 61, n), rng.integers(60, 301, n)
            ).astype(float)
            add_calls(tools.table, np.full(n, a), ts, prefix, subscriber, duration, sc)
            tools.requests(a, ts[rng.random(n) < 0.2], ips, ("/v1/calls",), sc)


def toll_fraud(tools: Toolkit, members: np.ndarray) -> None:
    rng, pop, sc = tools.rng, tools.pop, scenario_code("toll_fraud")
    for a in members:
        home = int(pop.country[a])
        c = int(pop.compromised_ms[a])
        k = int(rng.integers(1, 3))
        network = rng.choice(
            [addresses.HOSTING, addresses.VPN, addresses.TOR, addresses.RESIDENTIAL],
            k,
            p=[0.45, 0.35, 0.10, 0.10],
        )
        abroad = rng.random(k) < 0.7
        where = np.where(abroad, geo.draw_other(rng, geo.HOSTING_P, np.full(k, home)), home)
        ips = tools.space.draw(rng, where, network)
        tools.sessions(a, np.array([c]), ips, sc, failed=int(rng.poisson(2.5)))
        setup = c + np.sort(rng.uniform(1, 30, int(rng.integers(5, 21))) * MINUTE_MS)
        tools.requests(
            a, setup.astype(np.int64), ips, ("/v1/account", "/v1/numbers", "/v1/calls"), sc
        )
        night = tools.night_start(a, c + int(rng.uniform(0, 24) * HOUR_MS))
        n = int(rng.integers(50, 800))
        ts = night + (rng.random(n) * rng.uniform(2, 8) * HOUR_MS).astype(np.int64)
        targets = expensive(tools, int(rng.integers(2, 6)), premium_p=0.65)
        pool = targets[rng.integers(0, len(targets), int(rng.integers(10, 51)))]
        numbers = phones.random_subscribers(rng, pool)
        pick = rng.integers(0, len(pool), n)
        duration = np.clip(np.round(rng.lognormal(np.log(240), 0.8, n)), 20, 3600)
        add_calls(tools.table, np.full(n, a), ts, pool[pick], numbers[pick], duration, sc)
        tools.requests(a, ts[rng.random(n) < 0.3], ips, ("/v1/calls",), sc)

"""Fraud that pays: stolen cards, card testing, account takeover, trial abuse.

Each function runs one scenario for its member accounts (a Python loop per account, vectorised
per account's events). Payments made with a card that is not the payer's are marked `_stolen`:
those are the ones that draw chargebacks (`labels`).

- stolen_card: a fraudster signs up (or wakes a dormant account) and tops up with stolen cards,
  often issued in another country, for larger amounts than a new customer would; some attempts
  are declined; then the balance is spent on resale traffic.
- card_testing: bursts of small payments, nearly one new card each, most declined, from rotating
  addresses, to learn which stolen cards still work.
- account_takeover: stolen credentials on an honest account: a login from a new country or a
  hosting network, a new card, payments several times the usual size, then a spending spike.
- trial_abuse: rings of new trial accounts sharing addresses and cards, each using its free
  credit on bulk SMS and calls.
"""

from __future__ import annotations

import numpy as np

from training.simulator import addresses, billing, geo, phones, world
from training.simulator.benign import add_calls, add_sms
from training.simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, scenario_code
from training.simulator.fraudster import Toolkit

PRESET_AMOUNTS = np.array([50.0, 100, 200, 250, 500])
TEST_AMOUNTS = np.array([1.0, 0.5, 2.0, 5.0])


def wake_time(tools: Toolkit, account: int, within_h: float) -> int:
    """When an owned account starts: soon after sign-up, or some day in the window if dormant."""
    signup = int(tools.pop.signup_ms[account])
    if signup >= tools.config.start_ms:
        return signup + int(tools.rng.uniform(2, 60 * within_h) * MINUTE_MS)
    span = tools.config.end_ms - tools.config.start_ms - 12 * HOUR_MS
    return tools.config.start_ms + int(tools.rng.random() * span)


def own_ips(tools: Toolkit, account: int) -> np.ndarray:
    return np.asarray(tools.pop.home_ips[account, : tools.pop.home_count[account]])


def stolen_card(tools: Toolkit, members: np.ndarray) -> None:
    rng, pop, sc = tools.rng, tools.pop, scenario_code("stolen_card")
    for a in members:
        country, ips = int(pop.country[a]), own_ips(tools, a)
        begin = wake_time(tools, a, 1.0)
        n_cards = min(1 + int(rng.poisson(1.0)), 4)
        cards = world.fingerprints(rng, n_cards)
        bins = np.where(
            rng.random(n_cards) < 0.55,
            geo.draw_other(rng, geo.CARD_P, np.full(n_cards, country)),
            country,
        )
        billing_country = np.where(rng.random(n_cards) < 0.7, country, bins)
        m = int(rng.integers(2, 7))
        gaps = rng.exponential(10.0, m) * HOUR_MS
        gaps[0] = rng.exponential(2.0) * HOUR_MS + 5 * MINUTE_MS
        ts = begin + np.cumsum(gaps).astype(np.int64)
        amount = np.where(
            rng.random(m) < 0.6,
            rng.choice(PRESET_AMOUNTS, m),
            np.round(rng.lognormal(np.log(150), 0.7, m), 2),
        )
        approved = rng.random(m) < 0.72
        # After a decline the fraudster moves to the next card.
        card = np.concatenate([[0], np.cumsum(~approved[:-1])]) % n_cards
        billing.add_payments(
            tools.table,
            np.full(m, a),
            ts,
            amount=amount,
            currency=geo.CURRENCIES[country],
            card_fp=cards[card],
            bin_country=bins[card],
            billing_country=billing_country[card],
            ip=ips[rng.integers(0, len(ips), m)],
            approved=approved,
            scenario=sc,
            stolen=True,
        )
        logins = begin + np.sort(rng.uniform(0, 3, 1 + rng.poisson(2)) * DAY_MS).astype(np.int64)
        tools.sessions(a, logins, ips, sc, failed=int(rng.poisson(0.3)))
        if approved.any():
            spend = float(amount[approved].sum())
            n = int(np.clip(spend / 0.6, 20, 1500))
            first = int(ts[approved][0]) + int(rng.uniform(5, 120) * MINUTE_MS)
            tools.cash_out(a, first, float(rng.uniform(6, 96)), n, ips, sc)


def card_testing(tools: Toolkit, members: np.ndarray) -> None:
    rng, pop, sc = tools.rng, tools.pop, scenario_code("card_testing")
    for a in members:
        country = int(pop.country[a])
        ips = tools.exits(np.full(int(rng.integers(2, 7)), country))
        begin = wake_time(tools, a, 72.0)
        tools.sessions(a, np.array([begin]), ips[:1], sc)
        burst_start = begin + int(rng.uniform(5, 60) * MINUTE_MS)
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(8, 31))
            ts = burst_start + np.sort(rng.random(k) * rng.uniform(5, 90) * MINUTE_MS).astype(
                np.int64
            )
            fresh = rng.random(k) >= 0.2
            fresh[0] = True
            # A reused card is the latest fresh one (retrying a card that was declined).
            which = np.maximum.accumulate(np.where(fresh, np.arange(k), 0))
            cards = world.fingerprints(rng, k)[which]
            bins = geo.draw(rng, geo.CARD_P, k)[which]
            billing_country = np.where(rng.random(k) < 0.6, country, bins)
            amount = np.where(
                rng.random(k) < 0.75,
                rng.choice(TEST_AMOUNTS, k, p=[0.5, 0.15, 0.15, 0.2]),
                np.round(rng.uniform(0.5, 10, k), 2),
            )
            billing.add_payments(
                tools.table,
                np.full(k, a),
                ts,
                amount=amount,
                currency=geo.CURRENCIES[country],
                card_fp=cards,
                bin_country=bins,
                billing_country=billing_country,
                ip=ips[rng.integers(0, len(ips), k)],
                approved=rng.random(k) < 0.3,
                scenario=sc,
                stolen=True,
            )
            burst_start = int(ts[-1]) + int(rng.uniform(2, 48) * HOUR_MS)
        if rng.random() < 0.3:
            tools.cash_out(
                a, burst_start, float(rng.uniform(2, 24)), int(rng.integers(20, 300)), ips, sc
            )


def account_takeover(tools: Toolkit, members: np.ndarray) -> None:
    rng, pop, sc = tools.rng, tools.pop, scenario_code("account_takeover")
    for a in members:
        home = int(pop.country[a])
        c = int(pop.compromised_ms[a])
        k = int(rng.integers(1, 3))
        if rng.random() < 0.6:  # a new country, from an ordinary connection or a VPN
            where = geo.draw_other(rng, geo.SIGNUP_P, np.full(k, home))
            network = rng.choice([addresses.RESIDENTIAL, addresses.MOBILE, addresses.VPN], k)
        else:  # a hosting network, at home or abroad
            where = np.where(rng.random(k) < 0.5, home, geo.draw(rng, geo.HOSTING_P, k))
            network = np.full(k, addresses.HOSTING)
        ips = tools.space.draw(rng, where, network)
        logins = c + np.sort(rng.uniform(0, 20, 1 + rng.poisson(1)) * HOUR_MS).astype(np.int64)
        logins[0] = c
        tools.sessions(a, logins, ips, sc, failed=int(rng.poisson(0.7)))
        request_ts = c + np.sort(rng.uniform(1, 90, int(rng.integers(2, 10))) * MINUTE_MS)
        tools.requests(a, request_ts.astype(np.int64), ips, ("/v1/account", "/v1/numbers"), sc)
        card = world.fingerprints(rng, 1)[0]
        bin_country = int(geo.draw_other(rng, geo.CARD_P, np.array([home]))[0])
        bin_country = bin_country if rng.random() < 0.5 else home
        billing_country = int(pop.billing_country[a]) if rng.random() < 0.6 else bin_country
        m = int(rng.integers(1, 5))
        ts = c + np.sort(rng.uniform(10, 12 * 60, m) * MINUTE_MS).astype(np.int64)
        usual = max(20.0, float(pop.volume[a]) * billing.SMS_PRICE * 30)
        amount = np.clip(usual * rng.uniform(2, 10, m), 50, 5000)
        amount = np.where(rng.random(m) < 0.5, np.round(amount, -1), np.round(amount, 2))
        approved = rng.random(m) < 0.8
        billing.add_payments(
            tools.table,
            np.full(m, a),
            ts,
            amount=amount,
            currency=geo.CURRENCIES[home],
            card_fp=np.full(m, card),
            bin_country=np.full(m, bin_country),
            billing_country=np.full(m, billing_country),
            ip=ips[rng.integers(0, len(ips), m)],
            approved=approved,
            scenario=sc,
            stolen=True,
        )
        if approved.any():
            n = int(np.clip(amount[approved].sum() / 0.1, 100, 2000))
            first = int(ts[approved][0]) + int(rng.uniform(5, 60) * MINUTE_MS)
            tools.cash_out(a, first, float(rng.uniform(2, 36)), n, ips, sc)


def trial_abuse(tools: Toolkit, members: np.ndarray) -> None:
    rng, pop, table, sc = tools.rng, tools.pop, tools.table, scenario_code("trial_abuse")
    for a in members:
        country, ips = int(pop.country[a]), own_ips(tools, a)
        signup = int(pop.signup_ms[a])
        tools.sessions(a, np.array([signup + int(rng.uniform(1, 10) * MINUTE_MS)]), ips, sc)
        which = int(rng.integers(0, 2))
        card = int(pop.cards[a, which])
        billing.add_payments(
            table,
            np.array([a]),
            np.array([signup + int(rng.uniform(2, 30) * MINUTE_MS)]),
            amount=np.array([1.0 if rng.random() < 0.7 else float(rng.choice([5.0, 10.0]))]),
            currency=geo.CURRENCIES[country],
            card_fp=np.array([card]),
            bin_country=np.array([pop.card_bin[a, which]]),
            billing_country=np.array([country]),
            ip=ips[:1],
            approved=np.array([rng.random() < 0.9]),
            scenario=sc,
            stolen=card % 10 < 3,  # the whole ring's card is someone else's, or the ring's own
        )
        begin = signup + 30 * MINUTE_MS
        span = rng.uniform(1, 5) * DAY_MS
        n = int(rng.integers(30, 250))
        ts = begin + (rng.random(n) * span).astype(np.int64)
        prefix = np.where(
            rng.random(n) < 0.55,
            phones.DOMESTIC[country],
            phones.draw(rng, phones.GLOBAL_APP_P, n),
        )
        segments = rng.integers(1, 3, n)
        add_sms(
            table,
            np.full(n, a),
            ts,
            prefix,
            phones.random_subscribers(rng, prefix),
            segments,
            rng.random(n) < 0.03,
            sc,
        )
        calls = int(rng.integers(0, 40))
        call_ts = begin + (rng.random(calls) * span).astype(np.int64)
        call_prefix = phones.draw(rng, phones.CASHOUT_P, calls)
        duration = np.clip(np.round(rng.lognormal(np.log(60), 1.0, calls)), 1, 1800)
        add_calls(
            table,
            np.full(calls, a),
            call_ts,
            call_prefix,
            phones.random_subscribers(rng, call_prefix),
            duration,
            sc,
        )
        tools.requests(a, ts[rng.random(n) < 0.15], ips, ("/v1/messages", "/v1/calls"), sc)

"""Honest payments: card checks at sign-up, top-ups, auto-recharge, subscriptions and invoices.

Declines happen (insufficient funds, expired cards) and are often retried, with the same card or
another one; customers replace cards, agencies pay with several, some pay with cards issued
abroad, and auto-recharge is charged from the customer's servers (hosting networks). Amounts span
cents (usage invoices, one-unit card checks) to tens of thousands (enterprise invoices), so an
amount alone says little. `add_payments` is shared with the fraud scenarios.
"""

from __future__ import annotations

import numpy as np

from training.simulator import geo, rhythm, world
from training.simulator.benign import occurrences
from training.simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, SimConfig
from training.simulator.table import EventTable
from training.simulator.world import BUSINESS, ENTERPRISE, PAYG, STARTUP, Population

TOPUP_LEVELS = np.array([5.0, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000])
PLAN_FEES = {
    STARTUP: (49.0, 99.0),
    BUSINESS: (299.0, 499.0, 999.0),
    ENTERPRISE: (1500.0, 2500.0, 5000.0, 12000.0),
}
SMALLEST_TOPUP_P = np.array([0.25, 0.3, 0.25, 0.1, 0.1])  # over TOPUP_LEVELS[:5]
SMS_PRICE = 0.04  # rough average spend per message or call, to size top-ups


def generate(pop: Population, config: SimConfig, table: EventTable) -> None:
    rng = config.rng("billing")
    honest = ~pop.owned
    parts = [
        _card_checks(rng, pop, config, honest),
        _topups(rng, pop, config, honest),
        _invoices(rng, pop, config, honest),
    ]
    account = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    amount = np.concatenate([p[2] for p in parts])
    automatic = np.concatenate([p[3] for p in parts])
    card = _card_in_use(rng, pop, account, ts)
    decline_p = np.where(pop.plan[account] == PAYG, 0.06, 0.03)
    decline_p += np.where(pop.card_bin[account, card] != pop.country[account], 0.04, 0.0)
    approved = rng.random(len(ts)) > decline_p
    ip = np.where(
        automatic, world.api_ips(pop, rng, account, ts), world.user_ips(pop, rng, account, ts)
    )
    _add_honest(table, pop, account, ts, amount, card, ip, approved)

    # Declined payments are mostly retried: same card later, or the customer's other card.
    retry = ~approved & (rng.random(len(ts)) < 0.7)
    r_account, r_amount, r_ip = account[retry], amount[retry], ip[retry]
    r_ts = ts[retry] + (rng.uniform(2, 180, int(retry.sum())) * MINUTE_MS).astype(np.int64)
    other = rng.random(len(r_ts)) < 0.5
    r_card = np.where(other, (card[retry] + 1) % pop.card_count[r_account], card[retry])
    r_approved = rng.random(len(r_ts)) < np.where(other, 0.9, 0.7)
    _add_honest(table, pop, r_account, r_ts, r_amount, r_card, r_ip, r_approved)


def add_payments(
    table: EventTable,
    account: np.ndarray,
    ts: np.ndarray,
    *,
    amount: np.ndarray,
    currency: np.ndarray,
    card_fp: np.ndarray,
    bin_country: np.ndarray,
    billing_country: np.ndarray,
    ip: np.ndarray,
    approved: np.ndarray,
    scenario: np.ndarray | int = -1,
    stolen: np.ndarray | bool = False,
) -> None:
    """Payment events; countries are indices into `geo.CODES`."""
    table.add(
        "payment",
        account,
        ts,
        scenario,
        amount=np.round(np.maximum(amount, 0.5), 2),
        currency=currency,
        card_fp=card_fp,
        bin_country=geo.CODES[bin_country],
        billing_country=geo.CODES[billing_country],
        ip=ip,
        status=np.where(approved, "approved", "declined").astype(object),
        _stolen=stolen,
    )


def _add_honest(
    table: EventTable,
    pop: Population,
    account: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray,
    card: np.ndarray,
    ip: np.ndarray,
    approved: np.ndarray,
) -> None:
    add_payments(
        table,
        account,
        ts,
        amount=amount,
        currency=geo.CURRENCIES[pop.country[account]],
        card_fp=pop.cards[account, card],
        bin_country=pop.card_bin[account, card],
        billing_country=pop.billing_country[account],
        ip=ip,
        approved=approved,
    )


def _card_in_use(
    rng: np.random.Generator, pop: Population, account: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Card 0 until the customer replaces it by card 1; agencies rotate among theirs."""
    card = (ts >= pop.card_switch_ms[account]).astype(np.int64)
    agency = pop.agency[account]
    rotated = (rng.random(len(ts)) * pop.card_count[account]).astype(np.int64)
    return np.asarray(np.where(agency, rotated, card))


Parts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _card_checks(
    rng: np.random.Generator, pop: Population, config: SimConfig, honest: np.ndarray
) -> Parts:
    """New customers: a one-unit card check minutes after sign-up, often a first top-up."""
    new = honest & (pop.signup_ms >= config.start_ms)
    check = np.flatnonzero(new & (rng.random(pop.n) < 0.45))
    check_ts = pop.signup_ms[check] + (rng.uniform(1, 15, len(check)) * MINUTE_MS).astype(np.int64)
    first = np.flatnonzero(new & (rng.random(pop.n) < np.where(pop.trial, 0.25, 0.6)))
    first_ts = pop.signup_ms[first] + (rng.exponential(12, len(first)) * HOUR_MS).astype(np.int64)
    first_amount = rng.choice(TOPUP_LEVELS[:6], size=len(first), p=[0.1, 0.3, 0.25, 0.1, 0.15, 0.1])
    return (
        np.concatenate([check, first]),
        np.concatenate([check_ts, first_ts]),
        np.concatenate([np.ones(len(check)), first_amount]),
        np.zeros(len(check) + len(first), dtype=bool),
    )


def _topups(
    rng: np.random.Generator, pop: Population, config: SimConfig, honest: np.ndarray
) -> Parts:
    """Prepaid balance top-ups sized to the account's spend; auto-recharge from its servers."""
    spend = pop.volume * SMS_PRICE
    horizon = spend * rng.uniform(4, 25, pop.n)
    level = np.minimum(np.searchsorted(TOPUP_LEVELS, horizon), len(TOPUP_LEVELS) - 1)
    # Even tiny spenders have a habitual smallest top-up.
    level = np.maximum(level, rng.choice(5, size=pop.n, p=SMALLEST_TOPUP_P))
    usual = TOPUP_LEVELS[level]
    rate = np.clip(spend / usual, np.where(pop.volume > 0.1, 1 / 10, 1 / 60), 1.0)
    prepaid = honest & (pop.plan <= BUSINESS)
    auto = pop.auto_recharge
    profile = np.where(auto, rhythm.MACHINE, pop.profile)
    account, ts = occurrences(rng, pop, config, prepaid, rate, profile)
    step = rng.choice([-1, 0, 1], size=len(ts), p=[0.15, 0.7, 0.15])
    varied = TOPUP_LEVELS[np.clip(level[account] + step, 0, len(TOPUP_LEVELS) - 1)]
    amount = np.where(auto[account], usual[account], varied)
    return account, ts, amount, auto[account]


def _invoices(
    rng: np.random.Generator, pop: Population, config: SimConfig, honest: np.ndarray
) -> Parts:
    """Monthly charges on the sign-up day of month: plan fees and postpaid usage invoices."""
    fee = np.zeros(pop.n)
    for plan, options in PLAN_FEES.items():
        rows = pop.plan == plan
        fee[rows] = rng.choice(options, size=int(rows.sum()))
    usage = pop.volume * 30 * SMS_PRICE * rng.uniform(0.6, 1.4, pop.n)
    enterprise = pop.plan == ENTERPRISE
    postpaid = enterprise | ((pop.plan == PAYG) & (rng.random(pop.n) < 0.2))
    postpaid |= (pop.plan == BUSINESS) & (rng.random(pop.n) < 0.5)
    months = config.days // 30 + 2
    cycle = np.arange(months)
    lo, hi = pop.active_span(config.start_ms, config.end_ms)
    # First billing date in the window: sign-up time plus whole 30-day periods.
    periods = np.maximum(0, -(-(lo - pop.signup_ms) // (30 * DAY_MS)))
    due = pop.signup_ms[:, None] + (periods[:, None] + cycle[None, :]) * 30 * DAY_MS
    due += (rng.uniform(0, 6, (pop.n, months)) * HOUR_MS).astype(np.int64)
    inside = (due >= lo[:, None]) & (due < hi[:, None]) & honest[:, None]
    accounts, ts, amounts = [], [], []
    for charged, amount, vary in ((fee > 0, fee, False), (postpaid, usage, True)):
        rows, cols = np.nonzero(inside & charged[:, None])
        accounts.append(rows)
        ts.append(due[rows, cols])
        jitter = rng.uniform(0.8, 1.2, len(rows)) if vary else 1.0
        amounts.append(np.round(np.maximum(amount[rows] * jitter, 0.5), 2))
    account = np.concatenate(accounts).astype(np.int64)
    return account, np.concatenate(ts), np.concatenate(amounts), pop.servers[account]

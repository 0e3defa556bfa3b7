"""What honest customers do: sign up, log in, call the API, send SMS, place calls, run campaigns.

Everything is drawn per event type for all accounts at once: a Poisson count per account from its
rates and active days, then timestamps following the account's daily and weekly rhythm in its own
time zone (`rhythm`), then the event fields. Variety that keeps fraud from being trivially
separable lives here: heavy-tailed volumes, round-the-clock services, apps with users in
expensive-SMS countries, marketing campaigns of thousands of unverified SMS, travellers, VPN users
and servers on hosting networks. Payments are in `billing`.
"""

from __future__ import annotations

import numpy as np

from training.simulator import geo, phones, rhythm, world
from training.simulator.config import DAY_MS, MINUTE_MS, SimConfig
from training.simulator.table import EventTable
from training.simulator.world import PLANS, VERIFICATIONS, Population

ENDPOINTS = np.array(
    [
        "/v1/messages",
        "/v1/verify",
        "/v1/calls",
        "/v1/numbers",
        "/v1/account",
        "/v1/usage",
        "/v1/lookup",
        "/v1/webhooks",
    ],
    dtype=object,
)
MESSAGES, VERIFY, CALLS = 0, 1, 2
PLAN_NAMES = np.array(PLANS, dtype=object)
VERIFICATION_NAMES = np.array(VERIFICATIONS, dtype=object)


def generate(pop: Population, config: SimConfig, table: EventTable) -> None:
    honest = ~pop.owned
    signups(pop, table, np.flatnonzero(honest), config.rng("benign.signup"))
    _logins(pop, config, table, honest)
    _api_requests(pop, config, table, honest)
    _sms(pop, config, table, honest)
    _calls(pop, config, table, honest)
    _campaigns(pop, config, table, honest)
    closing = np.flatnonzero(honest & (pop.close_ms < world.NEVER))
    table.add("account_closed", closing, pop.close_ms[closing])


def signups(
    pop: Population,
    table: EventTable,
    accounts: np.ndarray,
    rng: np.random.Generator,
    ips: np.ndarray | None = None,
    scenario: np.ndarray | int = -1,
) -> None:
    """`account_created` for the given accounts, from their home addresses unless told."""
    if ips is None:
        ips = world.pick(rng, pop.home_ips[accounts], pop.home_count[accounts])
    table.add(
        "account_created",
        accounts,
        pop.signup_ms[accounts],
        scenario,
        country=geo.CODES[pop.country[accounts]],
        plan=PLAN_NAMES[pop.plan[accounts]],
        trial=pop.trial[accounts],
        verification=VERIFICATION_NAMES[pop.verification[accounts]],
        ip=ips,
    )


def occurrences(
    rng: np.random.Generator,
    pop: Population,
    config: SimConfig,
    mask: np.ndarray,
    per_day: np.ndarray,
    profile: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Accounts and times of events happening at `per_day` in each account's active span."""
    lo, hi = pop.active_span(config.start_ms, config.end_ms)
    days = (hi - lo) / DAY_MS
    counts = rng.poisson(np.where(mask, per_day * days, 0.0))
    account = np.repeat(np.arange(pop.n), counts)
    prof = pop.profile if profile is None else profile
    ts = rhythm.sample_times(
        rng, lo[account], hi[account], pop.utc_offset_ms[account], prof[account]
    )
    return account, ts


def _logins(pop: Population, config: SimConfig, table: EventTable, honest: np.ndarray) -> None:
    rng = config.rng("benign.login")
    account, ts = occurrences(rng, pop, config, honest, pop.logins_per_day)
    success = rng.random(len(ts)) > 0.03  # mistyped passwords
    table.add("login", account, ts, ip=world.user_ips(pop, rng, account, ts), success=success)


def _api_requests(
    pop: Population, config: SimConfig, table: EventTable, honest: np.ndarray
) -> None:
    rng = config.rng("benign.api")
    account, ts = occurrences(rng, pop, config, honest, pop.api_per_day)
    sms, otp = pop.sms_share[account], pop.otp_share[account]
    weights = np.column_stack(
        [
            sms * (1 - otp),
            sms * otp,
            1 - sms,
            np.full(len(ts), 0.10),
            np.full(len(ts), 0.08),
            np.full(len(ts), 0.08),
            np.full(len(ts), 0.05),
            np.full(len(ts), 0.04),
        ]
    )
    endpoint = ENDPOINTS[world.rows_choice(rng, weights)]
    table.add(
        "api_request", account, ts, ip=world.api_ips(pop, rng, account, ts), endpoint=endpoint
    )


def destinations(
    rng: np.random.Generator, pop: Population, account: np.ndarray, domestic_p: float
) -> np.ndarray:
    """Prefixes reached by honest traffic: mostly domestic, sometimes abroad, rarely premium."""
    n = len(account)
    home = phones.DOMESTIC[pop.country[account]]
    intl = phones.draw(rng, phones.INTL_P, n)
    global_app = pop.global_app[account]
    if global_app.any():
        intl[global_app] = phones.draw(rng, phones.GLOBAL_APP_P, int(global_app.sum()))
    diaspora = pop.diaspora[account]
    intl = np.where(diaspora >= 0, diaspora, intl)
    special = global_app | (diaspora >= 0)
    abroad = np.where(special, pop.abroad_share[account], 1 - domestic_p)
    return np.where(rng.random(n) < abroad, intl, home)


def _users(rng: np.random.Generator, pop: Population, account: np.ndarray) -> np.ndarray:
    """Stable subscriber numbers: some users of an account are reached far more than others."""
    user = (rng.random(len(account)) ** 2 * pop.user_base[account]).astype(np.int64)
    return phones.stable_subscribers(account, user)


def _sms(pop: Population, config: SimConfig, table: EventTable, honest: np.ndarray) -> None:
    rng = config.rng("benign.sms")
    account, ts = occurrences(rng, pop, config, honest, pop.volume * pop.sms_share)
    n = len(ts)
    prefix = destinations(rng, pop, account, 0.9)
    otp = rng.random(n) < pop.otp_share[account]
    segments = np.where(otp, 1, np.searchsorted([0.75, 0.95, 1.0], rng.random(n)) + 1)
    verified = otp & (rng.random(n) < pop.conversion[account])
    add_sms(table, account, ts, prefix, _users(rng, pop, account), segments, verified)


def add_sms(
    table: EventTable,
    account: np.ndarray,
    ts: np.ndarray,
    prefix: np.ndarray,
    subscriber: np.ndarray,
    segments: np.ndarray,
    verified: np.ndarray,
    scenario: np.ndarray | int = -1,
) -> None:
    table.add(
        "sms",
        account,
        ts,
        scenario,
        dest_number=phones.number(prefix, subscriber),
        dest_prefix=phones.PREFIX_LABELS[prefix],
        dest_country=phones.DEST_COUNTRIES[prefix],
        segments=segments,
        cost=np.round(segments * phones.SMS_COST[prefix], 4),
        verified=verified,
    )


def _calls(pop: Population, config: SimConfig, table: EventTable, honest: np.ndarray) -> None:
    rng = config.rng("benign.calls")
    account, ts = occurrences(rng, pop, config, honest, pop.volume * (1 - pop.sms_share))
    n = len(ts)
    prefix = destinations(rng, pop, account, 0.92)
    premium = rng.random(n) < pop.premium_share[account]
    prefix[premium] = rng.choice(phones.PREMIUM, int(premium.sum()))
    answered = rng.random(n) > 0.12
    duration = np.where(answered, np.clip(np.round(rng.lognormal(np.log(75), 1.1, n)), 1, 7200), 0)
    add_calls(table, account, ts, prefix, _users(rng, pop, account), duration)


def add_calls(
    table: EventTable,
    account: np.ndarray,
    ts: np.ndarray,
    prefix: np.ndarray,
    subscriber: np.ndarray,
    duration: np.ndarray,
    scenario: np.ndarray | int = -1,
) -> None:
    table.add(
        "call",
        account,
        ts,
        scenario,
        dest_number=phones.number(prefix, subscriber),
        dest_prefix=phones.PREFIX_LABELS[prefix],
        dest_country=phones.DEST_COUNTRIES[prefix],
        duration_s=duration.astype(float),
        cost=np.round(phones.MINUTE_COST[prefix] * duration / 60.0, 4),
    )


def _blasts(
    rng: np.random.Generator,
    pop: Population,
    config: SimConfig,
    runs: np.ndarray,
    median: float,
    minutes: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Campaign runs per account -> (owner, start, size, length) of each run, then per message
    the account and time. Runs start in office hours and last `minutes`."""
    lo, hi = pop.active_span(config.start_ms, config.end_ms)
    runs = np.where(hi - lo > DAY_MS, runs, 0)
    owner = np.repeat(np.arange(pop.n), runs)
    begin = rhythm.sample_times(rng, lo[owner], hi[owner], pop.utc_offset_ms[owner], rhythm.OFFICE)
    size = np.clip(rng.lognormal(np.log(median), 0.9, len(owner)), median / 6, 25 * median)
    length = (rng.uniform(*minutes, len(owner)) * MINUTE_MS).astype(np.int64)
    return owner, begin, size.astype(np.int64), length


def _messages(
    rng: np.random.Generator,
    pop: Population,
    owner: np.ndarray,
    begin: np.ndarray,
    size: np.ndarray,
    length: np.ndarray,
    *,
    domestic: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each campaign run's messages: (account, time, destination prefix), mostly domestic."""
    campaign = np.repeat(np.arange(len(owner)), size)
    account = owner[campaign]
    ts = begin[campaign] + (rng.random(len(campaign)) * length[campaign]).astype(np.int64)
    prefix = np.where(
        rng.random(len(ts)) < domestic,
        phones.DOMESTIC[pop.country[account]],
        destinations(rng, pop, account, 0.0),
    )
    return account, ts, prefix


def _campaigns(pop: Population, config: SimConfig, table: EventTable, honest: np.ndarray) -> None:
    """Marketing blasts of thousands of one-off SMS to distinct numbers within an hour or two,
    and voice reminder campaigns: hundreds of short recorded-message calls in a few hours."""
    rng = config.rng("benign.campaigns")
    owner, begin, size, length = _blasts(
        rng, pop, config, np.where(honest, pop.campaigns, 0), 800, (10, 120)
    )
    account, ts, prefix = _messages(rng, pop, owner, begin, size, length, domestic=0.94)
    n = len(ts)
    segments = np.searchsorted([0.6, 0.95, 1.0], rng.random(n)) + 1
    subscriber = phones.random_subscribers(rng, prefix)
    add_sms(table, account, ts, prefix, subscriber, segments, np.zeros(n, dtype=bool))
    _submissions(rng, pop, table, owner, begin, size // 100, length, "/v1/messages")

    owner, begin, size, length = _blasts(
        rng, pop, config, np.where(honest, pop.voice_campaigns, 0), 300, (30, 240)
    )
    account, ts, prefix = _messages(rng, pop, owner, begin, size, length, domestic=0.97)
    n = len(ts)
    duration = np.where(rng.random(n) < 0.7, rng.integers(8, 61, n), 0).astype(float)
    add_calls(table, account, ts, prefix, _users(rng, pop, account), duration)
    _submissions(rng, pop, table, owner, begin, size // 50, length, "/v1/calls")


def _submissions(
    rng: np.random.Generator,
    pop: Population,
    table: EventTable,
    owner: np.ndarray,
    begin: np.ndarray,
    batches: np.ndarray,
    length: np.ndarray,
    endpoint: str,
) -> None:
    """A campaign is submitted in batches through the API."""
    run = np.repeat(np.arange(len(owner)), np.maximum(1, batches))
    account = owner[run]
    ts = begin[run] + (rng.random(len(run)) * length[run]).astype(np.int64)
    table.add(
        "api_request", account, ts, ip=world.api_ips(pop, rng, account, ts), endpoint=endpoint
    )

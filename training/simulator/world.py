"""The customers: accounts, their plans, countries, habits, addresses and cards.

`Population` holds one array per account attribute (index = account number inside the simulator;
the public `acct_` ids are assigned by sign-up order at the end). `populate` draws a benign world;
fraud scenarios then take some accounts over (`training.simulator.scenarios`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.simulator import addresses, geo, phones
from training.simulator.addresses import AddressSpace
from training.simulator.config import BENIGN, DAY_MS, HOUR_MS, SimConfig

PLANS: tuple[str, ...] = ("payg", "startup", "business", "enterprise")
PAYG, STARTUP, BUSINESS, ENTERPRISE = range(len(PLANS))
PLAN_P = np.array([0.58, 0.26, 0.12, 0.04])
VERIFICATIONS: tuple[str, ...] = ("none", "email", "phone", "kyc")
VERIFICATION_P = np.array(
    [
        [0.25, 0.45, 0.25, 0.05],
        [0.10, 0.40, 0.35, 0.15],
        [0.02, 0.20, 0.38, 0.40],
        [0.00, 0.05, 0.15, 0.80],
    ]
)
# Messaging volume (SMS + calls per active day): log-normal medians per plan.
VOLUME_MEDIAN = np.array([0.3, 2.0, 7.0, 30.0])
LOGINS_PER_DAY = np.array([0.15, 0.4, 1.2, 3.0])
SERVER_P = np.array([0.03, 0.10, 0.30, 0.55])  # API calls come from rented servers
CAMPAIGN_P = np.array([0.02, 0.08, 0.15, 0.20])  # runs marketing SMS campaigns
GLOBAL_APP_P = np.array([0.04, 0.07, 0.12, 0.20])  # has users in expensive-SMS countries
PROFILE_P = np.array(
    [
        [0.30, 0.50, 0.20, 0.0],
        [0.30, 0.40, 0.30, 0.0],
        [0.50, 0.15, 0.35, 0.0],
        [0.30, 0.10, 0.60, 0.0],
    ]
)
MAX_CARDS = 5
MAX_VOLUME = 1500.0  # SMS + calls per day of the largest customers (keeps world sizes steady)
NEVER = np.iinfo(np.int64).max // 2


@dataclass
class Population:
    country: np.ndarray
    plan: np.ndarray
    trial: np.ndarray
    verification: np.ndarray
    signup_ms: np.ndarray
    close_ms: np.ndarray  # NEVER unless the customer closes the account in the window
    profile: np.ndarray
    volume: np.ndarray  # SMS + calls per active day
    sms_share: np.ndarray
    otp_share: np.ndarray  # share of SMS that are one-time passcodes
    conversion: np.ndarray  # share of passcodes the recipient enters
    global_app: np.ndarray  # users in expensive-SMS countries too
    diaspora: np.ndarray  # -1, or the one expensive prefix most of the traffic goes to
    abroad_share: np.ndarray  # share of a global app's or diaspora service's traffic abroad
    premium_share: np.ndarray  # share of calls to premium-rate ranges (contact centres: high)
    user_base: np.ndarray  # distinct phone numbers the account reaches
    campaigns: np.ndarray  # marketing SMS campaigns in the window
    voice_campaigns: np.ndarray  # recorded-message call campaigns in the window
    logins_per_day: np.ndarray
    api_per_day: np.ndarray
    home_ips: np.ndarray  # (n, 3) dashboard/browser addresses, first `home_count` used
    home_count: np.ndarray
    api_ips: np.ndarray  # (n, 4) addresses API requests come from
    api_count: np.ndarray
    servers: np.ndarray  # API requests come from rented servers (hosting networks)
    cards: np.ndarray  # (n, MAX_CARDS) fingerprints; 0 primary, 1 replacement/backup
    card_bin: np.ndarray  # (n, MAX_CARDS) issuing country of each card
    card_count: np.ndarray
    card_switch_ms: np.ndarray  # when card 1 replaces card 0 (NEVER if it does not)
    agency: np.ndarray  # pays with several cards (resellers, agencies)
    billing_country: np.ndarray
    auto_recharge: np.ndarray
    trip_start_ms: np.ndarray  # travellers: away from trip_start to trip_end (else NEVER)
    trip_end_ms: np.ndarray
    trip_ips: np.ndarray  # (n, 2)
    scenario: np.ndarray  # int8 scenario code (BENIGN = -1)
    compromised_ms: np.ndarray  # when a fraudster took over an existing account (-1: never)
    owned: np.ndarray  # a fraudster's own account: no benign behaviour

    @property
    def n(self) -> int:
        return len(self.country)

    @property
    def utc_offset_ms(self) -> np.ndarray:
        return np.asarray(geo.UTC_OFFSET_MS[self.country])

    def active_span(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Per account, the part of the window between sign-up and closure."""
        lo = np.maximum(self.signup_ms + 60_000, start_ms)
        hi = np.minimum(self.close_ms, end_ms)
        return lo, np.maximum(hi, lo)


def fingerprints(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """Fresh card fingerprints: non-negative 63-bit ints shown as 16 hex digits, the second
    always a letter so that no fingerprint could be mistaken for a card number."""
    value = rng.integers(1, 2**63 - 1, size=shape, dtype=np.int64)
    letter = 0xA + value % 6
    return np.asarray((value & ~np.int64(0xF << 56)) | (letter << 56), dtype=np.int64)


def pick(rng: np.random.Generator, pool: np.ndarray, count: np.ndarray) -> np.ndarray:
    """One entry per row of a (rows, k) pool, among its first `count` entries."""
    column = (rng.random(len(count)) * count).astype(np.int64)
    return np.asarray(pool[np.arange(len(count)), column])


def populate(config: SimConfig, space: AddressSpace) -> Population:
    rng = config.rng("world")
    n, start, end = config.accounts, config.start_ms, config.end_ms
    country = geo.draw(rng, geo.SIGNUP_P, n)
    plan = rng.choice(len(PLANS), size=n, p=PLAN_P).astype(np.int64)
    new = rng.random(n) < 0.35
    days_ago = 1 + rng.exponential(300.0, n)
    days_ago = np.where(days_ago > 1000, rng.uniform(1, 1000, n), days_ago)
    signup = np.where(
        new,
        start + (rng.random(n) * (end - start - HOUR_MS)).astype(np.int64),
        start - (days_ago * DAY_MS).astype(np.int64),
    )
    trial = (rng.random(n) < np.where(plan <= STARTUP, 0.45, 0.08)) & (new | (rng.random(n) < 0.6))
    verification = rows_choice(rng, VERIFICATION_P[plan])
    profile = rows_choice(rng, PROFILE_P[plan])

    dormant = rng.random(n) < 0.2
    volume = VOLUME_MEDIAN[plan] * rng.lognormal(0.0, 1.2, n)
    volume = np.where(dormant, 0.05, np.where(trial & new, 0.3, 1.0)) * volume
    channel = rng.random(n)
    sms_share = np.where(
        channel < 0.45, 1.0, np.where(channel < 0.65, 0.0, rng.uniform(0.3, 0.8, n))
    )
    # Apps with users worldwide, expensive-SMS countries included, tend to be the larger ones.
    global_app = rng.random(n) < GLOBAL_APP_P[plan]
    volume = np.where(global_app, 3 * volume, volume)
    # Diaspora services (family calling, remittance alerts): mostly one expensive destination.
    expensive = np.concatenate([phones.HIGH_COST, phones.PREMIUM])
    diaspora = np.where(~global_app & (rng.random(n) < 0.02), rng.choice(expensive, n), -1).astype(
        np.int64
    )
    # Contact centres: voice-heavy, larger, and reaching premium-rate service lines.
    contact_centre = (plan > PAYG) & (rng.random(n) < 0.08)
    volume = np.where(contact_centre, 4 * volume, volume)
    sms_share = np.where(contact_centre, rng.uniform(0.0, 0.2, n), sms_share)
    premium_share = np.where(contact_centre, rng.uniform(0.02, 0.2, n), 0.002)
    volume = np.minimum(volume, MAX_VOLUME)
    voice_campaigns = np.where(
        (sms_share < 1) & (rng.random(n) < np.where(contact_centre, 0.6, 0.06)),
        1 + rng.poisson(0.8 * config.days / 30, n),
        0,
    )
    campaigns = np.where(
        rng.random(n) < CAMPAIGN_P[plan], 1 + rng.poisson(0.8 * config.days / 30, n), 0
    )

    home_count = rng.integers(1, 4, n)
    home_net = np.where(rng.random((n, 3)) < 0.65, addresses.RESIDENTIAL, addresses.MOBILE)
    home_ips = space.draw(rng, np.repeat(country, 3), home_net.ravel()).reshape(n, 3)
    vpn_user = rng.random(n) < 0.05
    vpn_country = np.where(rng.random(n) < 0.4, country, geo.draw(rng, geo.HOSTING_P, n))
    home_ips[vpn_user, 0] = space.draw(rng, vpn_country[vpn_user], addresses.VPN)
    servers = rng.random(n) < SERVER_P[plan]
    server_country = np.where(rng.random(n) < 0.5, country, geo.draw(rng, geo.HOSTING_P, n))
    server_ips = space.draw(rng, np.repeat(server_country, 4), addresses.HOSTING).reshape(n, 4)
    api_ips = np.where(servers[:, None], server_ips, np.pad(home_ips, ((0, 0), (0, 1))))
    api_count = np.where(servers, rng.integers(1, 5, n), home_count)

    cards = fingerprints(rng, (n, MAX_CARDS))
    foreign_bin = rng.random(n) < 0.07
    card_bin = np.repeat(country[:, None], MAX_CARDS, axis=1)
    card_bin[foreign_bin, 0] = geo.draw_other(rng, geo.CARD_P, country[foreign_bin])
    card_bin[:, 1] = np.where(rng.random(n) < 0.8, card_bin[:, 0], country)
    extra_bins = geo.draw(rng, geo.CARD_P, n * (MAX_CARDS - 2)).reshape(n, MAX_CARDS - 2)
    extra_foreign = rng.random((n, MAX_CARDS - 2)) < 0.2
    card_bin[:, 2:] = np.where(extra_foreign, extra_bins, card_bin[:, 2:])
    agency = rng.random(n) < 0.03
    card_count = np.where(agency, rng.integers(3, MAX_CARDS + 1, n), 2)
    switch = rng.random(n) < 0.10
    card_switch = np.where(switch, start + (rng.random(n) * (end - start)).astype(np.int64), NEVER)
    billing = np.where(foreign_bin & (rng.random(n) < 0.3), card_bin[:, 0], country)

    closes = rng.random(n) < 0.012
    close_at = np.maximum(signup, start) + DAY_MS + (rng.random(n) * (end - start)).astype(np.int64)
    close_ms = np.where(closes & (close_at < end), close_at, NEVER)

    traveller = rng.random(n) < 0.07
    trip_start = start + (rng.random(n) * (end - start)).astype(np.int64)
    trip_len = (rng.uniform(2, 10, n) * DAY_MS).astype(np.int64)
    trip_country = geo.draw_other(rng, geo.SIGNUP_P, country)
    trip_net = np.where(rng.random(2 * n) < 0.5, addresses.MOBILE, addresses.RESIDENTIAL)
    trip_ips = space.draw(rng, np.repeat(trip_country, 2), trip_net).reshape(n, 2)

    return Population(
        country=country,
        plan=plan,
        trial=trial,
        verification=verification,
        signup_ms=signup.astype(np.int64),
        close_ms=close_ms.astype(np.int64),
        profile=profile,
        volume=volume,
        sms_share=sms_share,
        otp_share=rng.beta(1.2, 1.2, n),
        conversion=rng.beta(9.0, 2.0, n),
        global_app=global_app,
        diaspora=diaspora,
        abroad_share=np.where(diaspora >= 0, rng.uniform(0.6, 0.95, n), rng.uniform(0.2, 0.8, n)),
        premium_share=premium_share,
        user_base=np.maximum(5, (volume * rng.lognormal(3.0, 1.0, n))).astype(np.int64),
        campaigns=campaigns.astype(np.int64),
        voice_campaigns=voice_campaigns.astype(np.int64),
        logins_per_day=LOGINS_PER_DAY[plan] * rng.lognormal(0.0, 0.6, n),
        api_per_day=0.15 * volume + 0.3 * rng.lognormal(0.0, 0.5, n),
        home_ips=home_ips,
        home_count=home_count,
        api_ips=api_ips,
        api_count=api_count,
        servers=servers,
        cards=cards,
        card_bin=card_bin,
        card_count=card_count,
        card_switch_ms=card_switch.astype(np.int64),
        agency=agency,
        billing_country=billing,
        auto_recharge=rng.random(n) < np.where(plan == PAYG, 0.3, 0.45),
        trip_start_ms=np.where(traveller, trip_start, NEVER).astype(np.int64),
        trip_end_ms=np.where(traveller, trip_start + trip_len, NEVER).astype(np.int64),
        trip_ips=trip_ips,
        scenario=np.full(n, BENIGN, dtype=np.int8),
        compromised_ms=np.full(n, -1, dtype=np.int64),
        owned=np.zeros(n, dtype=bool),
    )


def rows_choice(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One category per row of a (rows, k) probability matrix."""
    cumulative = np.cumsum(p, axis=1)
    u = rng.random(len(p))[:, None] * cumulative[:, -1:]
    return np.asarray((u > cumulative).sum(axis=1), dtype=np.int64)


def user_ips(
    pop: Population, rng: np.random.Generator, account: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Addresses of people at a keyboard: home, or abroad while the customer travels."""
    ip = pick(rng, pop.home_ips[account], pop.home_count[account])
    away = (ts >= pop.trip_start_ms[account]) & (ts < pop.trip_end_ms[account])
    if away.any():
        ip[away] = pick(rng, pop.trip_ips[account[away]], np.full(int(away.sum()), 2))
    return ip


def api_ips(
    pop: Population, rng: np.random.Generator, account: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Addresses API requests come from: servers, or the people's own machines (which travel)."""
    ip = pick(rng, pop.api_ips[account], pop.api_count[account])
    away = (
        ~pop.servers[account] & (ts >= pop.trip_start_ms[account]) & (ts < pop.trip_end_ms[account])
    )
    if away.any():
        ip[away] = pick(rng, pop.trip_ips[account[away]], np.full(int(away.sum()), 2))
    return ip

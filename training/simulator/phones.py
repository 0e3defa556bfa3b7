"""Dialling prefixes the platform rates, their costs, and destination numbers.

Each prefix has a destination country, a price per SMS segment and per call minute, and a kind:
`standard` (ordinary mobile/landline ranges), `high_cost` (expensive SMS terminations, the targets
of SMS pumping, yet with genuine users) or `premium` (premium-rate and IRSF-prone voice ranges that
benign callers also reach now and then). Numbers are carried as integers (E.164 digits) and
formatted `+<digits>` when the event table is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.simulator import geo


@dataclass(frozen=True)
class Prefix:
    prefix: str  # digits after '+'
    country: str
    sms_cost: float  # per segment
    minute_cost: float
    kind: str  # "standard" | "high_cost" | "premium"
    subscriber_digits: int


PREFIXES: tuple[Prefix, ...] = (
    # Domestic ranges of the customers' countries (same order as geo.COUNTRIES).
    Prefix("1", "US", 0.0079, 0.013, "standard", 10),
    Prefix("1416", "CA", 0.0079, 0.013, "standard", 7),
    Prefix("52", "MX", 0.040, 0.050, "standard", 10),
    Prefix("55", "BR", 0.035, 0.060, "standard", 11),
    Prefix("54", "AR", 0.050, 0.050, "standard", 10),
    Prefix("44", "GB", 0.040, 0.020, "standard", 10),
    Prefix("353", "IE", 0.070, 0.030, "standard", 9),
    Prefix("49", "DE", 0.080, 0.030, "standard", 10),
    Prefix("33", "FR", 0.075, 0.030, "standard", 9),
    Prefix("34", "ES", 0.070, 0.030, "standard", 9),
    Prefix("39", "IT", 0.075, 0.030, "standard", 10),
    Prefix("31", "NL", 0.090, 0.030, "standard", 9),
    Prefix("46", "SE", 0.060, 0.030, "standard", 9),
    Prefix("48", "PL", 0.030, 0.050, "standard", 9),
    Prefix("40", "RO", 0.060, 0.100, "standard", 9),
    Prefix("380", "UA", 0.080, 0.200, "standard", 9),
    Prefix("7", "RU", 0.350, 0.150, "standard", 10),
    Prefix("90", "TR", 0.020, 0.100, "standard", 10),
    Prefix("234", "NG", 0.180, 0.200, "standard", 10),
    Prefix("254", "KE", 0.100, 0.150, "standard", 9),
    Prefix("27", "ZA", 0.030, 0.080, "standard", 9),
    Prefix("20", "EG", 0.110, 0.200, "standard", 10),
    Prefix("91", "IN", 0.005, 0.050, "standard", 10),
    Prefix("92", "PK", 0.200, 0.100, "standard", 10),
    Prefix("880", "BD", 0.280, 0.070, "standard", 10),
    Prefix("63", "PH", 0.200, 0.200, "standard", 10),
    Prefix("62", "ID", 0.350, 0.150, "standard", 10),
    Prefix("84", "VN", 0.080, 0.120, "standard", 9),
    Prefix("81", "JP", 0.070, 0.050, "standard", 10),
    Prefix("61", "AU", 0.050, 0.040, "standard", 9),
    # Expensive SMS terminations: SMS pumping targets, also real users of global apps.
    Prefix("998", "UZ", 0.250, 0.200, "high_cost", 9),
    Prefix("992", "TJ", 0.300, 0.250, "high_cost", 9),
    Prefix("996", "KG", 0.280, 0.200, "high_cost", 9),
    Prefix("994", "AZ", 0.320, 0.250, "high_cost", 9),
    Prefix("77", "KZ", 0.240, 0.150, "high_cost", 9),
    Prefix("95", "MM", 0.250, 0.200, "high_cost", 9),
    Prefix("675", "PG", 0.350, 0.600, "high_cost", 8),
    Prefix("964", "IQ", 0.200, 0.250, "high_cost", 10),
    Prefix("375", "BY", 0.300, 0.200, "high_cost", 9),
    # Premium-rate and IRSF-prone voice ranges.
    Prefix("53", "CU", 0.150, 1.200, "premium", 8),
    Prefix("252", "SO", 0.200, 2.000, "premium", 8),
    Prefix("224", "GN", 0.150, 0.900, "premium", 9),
    Prefix("232", "SL", 0.150, 1.100, "premium", 8),
    Prefix("37190", "LV", 0.100, 2.500, "premium", 6),
    Prefix("216", "TN", 0.100, 0.700, "premium", 8),
    Prefix("239", "ST", 0.200, 2.200, "premium", 7),
    Prefix("688", "TV", 0.250, 3.000, "premium", 5),
    Prefix("674", "NR", 0.250, 2.600, "premium", 7),
    Prefix("4470", "GB", 0.100, 0.900, "premium", 8),
    Prefix("49900", "DE", 0.100, 1.900, "premium", 7),
)

PREFIX_CODES = np.array([p.prefix for p in PREFIXES], dtype=object)
PREFIX_LABELS = np.array(["+" + p.prefix for p in PREFIXES], dtype=object)
DEST_COUNTRIES = np.array([p.country for p in PREFIXES], dtype=object)
SMS_COST = np.array([p.sms_cost for p in PREFIXES])
MINUTE_COST = np.array([p.minute_cost for p in PREFIXES])
KIND = np.array([p.kind for p in PREFIXES], dtype=object)
_SPAN = np.array([10**p.subscriber_digits for p in PREFIXES], dtype=np.int64)
_BASE = np.array([int(p.prefix) * 10**p.subscriber_digits for p in PREFIXES], dtype=np.int64)
N_PREFIXES = len(PREFIXES)
DOMESTIC = np.arange(geo.N_COUNTRIES, dtype=np.int64)  # country index -> its domestic prefix
STANDARD = np.flatnonzero(KIND == "standard")
HIGH_COST = np.flatnonzero(KIND == "high_cost")
PREMIUM = np.flatnonzero(KIND == "premium")
assert all(PREFIXES[i].country == c.code for i, c in enumerate(geo.COUNTRIES))


def _mix(standard: float, high_cost: float, premium: float) -> np.ndarray:
    p = np.zeros(N_PREFIXES)
    p[STANDARD] = standard * geo.SIGNUP_P
    p[HIGH_COST] = high_cost / len(HIGH_COST)
    p[PREMIUM] = premium / len(PREMIUM)
    return np.asarray(p / p.sum())


# International destinations of ordinary customers, of apps with users in expensive-SMS
# countries, and of fraudsters cashing out a balance.
INTL_P = _mix(0.985, 0.010, 0.005)
GLOBAL_APP_P = _mix(0.55, 0.42, 0.03)
CASHOUT_P = _mix(0.65, 0.22, 0.13)


def draw(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """`n` prefix indices drawn with probabilities `p`."""
    return rng.choice(N_PREFIXES, size=n, p=p).astype(np.int64)


def number(prefix: np.ndarray, subscriber: np.ndarray) -> np.ndarray:
    """E.164 digits (int64) of `subscriber` (any non-negative int) within each prefix."""
    return np.asarray(_BASE[prefix] + np.mod(subscriber, _SPAN[prefix]))


def random_subscribers(rng: np.random.Generator, prefix: np.ndarray) -> np.ndarray:
    """A fresh random subscriber number in each prefix's range."""
    return np.asarray(rng.random(len(prefix)) * _SPAN[prefix], dtype=np.int64)


def stable_subscribers(account: np.ndarray, user: np.ndarray) -> np.ndarray:
    """The phone number of user `user` of account `account`: the same every time it is drawn."""
    key = account.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + user.astype(np.uint64)
    key ^= key >> np.uint64(31)
    key *= np.uint64(0xBF58476D1CE4E5B9)
    key ^= key >> np.uint64(29)
    return (key >> np.uint64(2)).astype(np.int64)

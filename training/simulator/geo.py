"""Countries of the simulated platform: where customers sign up, their time zones and currencies.

The country list is the one of `features/data/ip_ranges.csv`, so every account's home IPs resolve
back to its country. Countries are referred to by their index in `CODES` inside the simulator.
Time zones are fixed offsets (no daylight saving): enough for day/night rhythms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Country:
    code: str
    utc_offset_h: float
    signup_weight: float  # share of the platform's customers
    card_weight: float  # share of the world's card issuing (stolen and foreign cards)
    currency: str


COUNTRIES: tuple[Country, ...] = (
    Country("US", -5.0, 0.24, 0.30, "USD"),
    Country("CA", -5.0, 0.04, 0.05, "CAD"),
    Country("MX", -6.0, 0.03, 0.02, "USD"),
    Country("BR", -3.0, 0.05, 0.03, "USD"),
    Country("AR", -3.0, 0.01, 0.01, "USD"),
    Country("GB", 0.0, 0.09, 0.10, "GBP"),
    Country("IE", 0.0, 0.01, 0.02, "EUR"),
    Country("DE", 1.0, 0.07, 0.06, "EUR"),
    Country("FR", 1.0, 0.05, 0.05, "EUR"),
    Country("ES", 1.0, 0.03, 0.03, "EUR"),
    Country("IT", 1.0, 0.03, 0.03, "EUR"),
    Country("NL", 1.0, 0.03, 0.03, "EUR"),
    Country("SE", 1.0, 0.02, 0.02, "EUR"),
    Country("PL", 1.0, 0.02, 0.02, "EUR"),
    Country("RO", 2.0, 0.01, 0.01, "EUR"),
    Country("UA", 2.0, 0.01, 0.01, "USD"),
    Country("RU", 3.0, 0.01, 0.01, "USD"),
    Country("TR", 3.0, 0.02, 0.01, "USD"),
    Country("NG", 1.0, 0.02, 0.01, "USD"),
    Country("KE", 3.0, 0.01, 0.005, "USD"),
    Country("ZA", 2.0, 0.02, 0.01, "USD"),
    Country("EG", 2.0, 0.01, 0.005, "USD"),
    Country("IN", 5.5, 0.07, 0.03, "USD"),
    Country("PK", 5.0, 0.01, 0.005, "USD"),
    Country("BD", 6.0, 0.01, 0.005, "USD"),
    Country("PH", 8.0, 0.02, 0.01, "USD"),
    Country("ID", 7.0, 0.02, 0.01, "USD"),
    Country("VN", 7.0, 0.01, 0.005, "USD"),
    Country("JP", 9.0, 0.03, 0.04, "USD"),
    Country("AU", 10.0, 0.03, 0.04, "AUD"),
)

CODES = np.array([c.code for c in COUNTRIES], dtype=object)
CURRENCIES = np.array([c.currency for c in COUNTRIES], dtype=object)
UTC_OFFSET_MS = np.array([round(c.utc_offset_h * 3_600_000) for c in COUNTRIES], dtype=np.int64)
N_COUNTRIES = len(COUNTRIES)
INDEX = {c.code: i for i, c in enumerate(COUNTRIES)}


def _normalised(weights: list[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=float)
    return np.asarray(array / array.sum())


SIGNUP_P = _normalised([c.signup_weight for c in COUNTRIES])
CARD_P = _normalised([c.card_weight for c in COUNTRIES])
# Hosting providers customers rent servers from (and fraudsters rent exit nodes from).
HOSTING_P = _normalised(
    [8.0 if c.code in ("US", "DE", "NL", "IE", "GB", "FR") else 0.3 for c in COUNTRIES]
)


def draw(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """`n` country indices drawn with probabilities `p`."""
    return rng.choice(N_COUNTRIES, size=n, p=p).astype(np.int64)


def draw_other(rng: np.random.Generator, p: np.ndarray, home: np.ndarray) -> np.ndarray:
    """Country indices drawn with probabilities `p`, each different from `home`."""
    out = draw(rng, p, len(home))
    clash = out == home
    while clash.any():
        out[clash] = draw(rng, p, int(clash.sum()))
        clash = out == home
    return out

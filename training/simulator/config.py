"""The simulator's knobs: world size, time window, seed, and the fraud scenarios' base rates.

Every random draw of the simulator comes from a `numpy.random.Generator(PCG64(...))` obtained
through `SimConfig.rng(name)`: one independent stream per named component, seeded from the world
seed and the component's name, so adding draws to one component never shifts another.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from features.events import parse_ts

DEFAULT_START = "2026-10-01T00:00:00Z"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Fraction of accounts each fraud scenario owns (fraudster sign-ups) or compromises (existing
# customers). docs/simulator.md explains each; the summary reports the realised rates.
SCENARIO_RATES: dict[str, float] = {
    "stolen_card": 0.010,
    "card_testing": 0.002,
    "sms_pumping": 0.008,
    "irsf": 0.005,
    "toll_fraud": 0.005,
    "account_takeover": 0.006,
    "trial_abuse": 0.010,
}
SCENARIOS: tuple[str, ...] = tuple(SCENARIO_RATES)
BENIGN = -1  # scenario code of events and accounts no fraud scenario touched


def scenario_code(name: str) -> int:
    """The int8 code events and accounts of a scenario carry inside the simulator."""
    return SCENARIOS.index(name)


class InvalidSimConfig(ValueError):
    """A simulation parameter out of range (names the parameter)."""

    code = "invalid_sim_config"


@dataclass(frozen=True)
class SimConfig:
    accounts: int = 2000
    days: int = 60
    seed: int = 7
    start_ms: int = parse_ts(DEFAULT_START)

    def __post_init__(self) -> None:
        if not 10 <= self.accounts <= 2_000_000:
            raise InvalidSimConfig("accounts must be between 10 and 2,000,000")
        if not 1 <= self.days <= 3650:
            raise InvalidSimConfig("days must be between 1 and 3650")
        if not 0 <= self.seed < 2**63:
            raise InvalidSimConfig("seed must be a non-negative 64-bit integer")
        # Pre-existing accounts signed up up to ~3 years before the window.
        if self.start_ms - 1000 * DAY_MS < parse_ts("2000-01-01T00:00:00Z"):
            raise InvalidSimConfig("start must be after 2003")

    @classmethod
    def ending_at(cls, end_ms: int, *, accounts: int, days: int, seed: int) -> SimConfig:
        """A world whose window ends at `end_ms` (the `--end now` mode of the CLI)."""
        return cls(accounts=accounts, days=days, seed=seed, start_ms=end_ms - days * DAY_MS)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    def rng(self, name: str) -> np.random.Generator:
        """The independent random stream of one named component of the world."""
        sequence = np.random.SeedSequence([self.seed, zlib.crc32(name.encode())])
        return np.random.Generator(np.random.PCG64(sequence))

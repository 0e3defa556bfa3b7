"""The fraudster's toolkit: exit addresses, logins, API calls and cashing out a balance.

Shared by the scenarios in `card_fraud` and `traffic_fraud`; every event drawn here carries the
scenario code it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.simulator import addresses, benign, geo, phones, rhythm
from training.simulator.addresses import AddressSpace
from training.simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from training.simulator.table import EventTable
from training.simulator.world import Population

# Fraudsters' exit addresses: proxies in the claimed country, mobile, VPN, hosting, Tor, abroad.
EXIT_P = np.array([0.35, 0.10, 0.25, 0.20, 0.05, 0.05])
_EXIT_NETWORKS = np.array(
    [
        addresses.RESIDENTIAL,
        addresses.MOBILE,
        addresses.VPN,
        addresses.HOSTING,
        addresses.TOR,
        addresses.RESIDENTIAL,
    ]
)


def exits(rng: np.random.Generator, space: AddressSpace, country: np.ndarray) -> np.ndarray:
    """Addresses fraudsters act from, for accounts claiming `country`."""
    kind = rng.choice(len(EXIT_P), size=len(country), p=EXIT_P)
    network = _EXIT_NETWORKS[kind]
    where = np.where(kind == 0, country, geo.draw(rng, geo.HOSTING_P, len(country)))
    where = np.where(kind == 1, country, where)
    where = np.where(kind == 5, geo.draw_other(rng, geo.SIGNUP_P, country), where)
    return space.draw(rng, where, network)


@dataclass
class Toolkit:
    """What every scenario does the same way: log in, call the API, spend the balance."""

    pop: Population
    config: SimConfig
    table: EventTable
    space: AddressSpace
    rng: np.random.Generator

    def exits(self, country: np.ndarray) -> np.ndarray:
        return exits(self.rng, self.space, country)

    def sessions(
        self, account: int, ts: np.ndarray, ips: np.ndarray, scenario: int, failed: int = 0
    ) -> None:
        """Successful logins at `ts`, preceded by `failed` wrong passwords before the first."""
        rng = self.rng
        tries = ts[0] - (rng.uniform(0.2, 15, failed) * MINUTE_MS).astype(np.int64)
        every = np.concatenate([tries, ts])
        success = np.concatenate([np.zeros(failed, dtype=bool), np.ones(len(ts), dtype=bool)])
        ip = ips[(rng.random(len(every)) * len(ips)).astype(np.int64)]
        self.table.add(
            "login", np.full(len(every), account), every, scenario, ip=ip, success=success
        )

    def requests(
        self,
        account: int,
        ts: np.ndarray,
        ips: np.ndarray,
        endpoints: tuple[str, ...],
        scenario: int,
    ) -> None:
        rng = self.rng
        ip = ips[(rng.random(len(ts)) * len(ips)).astype(np.int64)]
        endpoint = np.array(endpoints, dtype=object)[rng.integers(0, len(endpoints), len(ts))]
        self.table.add(
            "api_request", np.full(len(ts), account), ts, scenario, ip=ip, endpoint=endpoint
        )

    def cash_out(
        self, account: int, begin: int, hours: float, n: int, ips: np.ndarray, scenario: int
    ) -> None:
        """Spend a balance fast on expensive traffic: SMS and calls to resale destinations."""
        rng = self.rng
        ts = begin + np.sort((rng.random(n) * hours * HOUR_MS).astype(np.int64))
        prefix = phones.draw(rng, phones.CASHOUT_P, n)
        subscriber = phones.random_subscribers(rng, prefix)
        acct = np.full(n, account)
        is_sms = rng.random(n) < 0.5
        benign.add_sms(
            self.table,
            acct[is_sms],
            ts[is_sms],
            prefix[is_sms],
            subscriber[is_sms],
            np.ones(int(is_sms.sum()), dtype=np.int64),
            rng.random(int(is_sms.sum())) < 0.05,
            scenario,
        )
        calls = ~is_sms
        duration = np.clip(np.round(rng.lognormal(np.log(120), 0.9, int(calls.sum()))), 5, 3600)
        benign.add_calls(
            self.table, acct[calls], ts[calls], prefix[calls], subscriber[calls], duration, scenario
        )
        api_ts = ts[rng.random(n) < 0.15]
        self.requests(account, api_ts, ips, ("/v1/messages", "/v1/calls"), scenario)

    def night_start(self, account: int, after: int) -> int:
        """A moment between midnight and 3 a.m. local time on or after `after`."""
        hour = np.array([self.rng.integers(0, 3)])
        offset = self.pop.utc_offset_ms[account : account + 1]
        night = rhythm.next_local_hour(np.array([after]), offset, hour)
        return int(night[0]) + int(self.rng.integers(0, HOUR_MS))

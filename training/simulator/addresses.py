"""IPv4 addresses drawn from the resolver's simulated ranges.

Addresses are drawn as integers from `IpResolver.default().ranges(country=..., network=...)`, so
the resolver maps each one back to the country and network type it was drawn for, and are turned
into dotted strings only when the event table is built.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from features.geoip import IpResolver
from training.simulator import geo

NETWORKS: tuple[str, ...] = ("residential", "mobile", "hosting", "vpn", "tor")
RESIDENTIAL, MOBILE, HOSTING, VPN, TOR = range(len(NETWORKS))
NO_IP = -1
# Mobile carriers put many subscribers behind few addresses (carrier-grade NAT): mobile IPs come
# from this many hosts per country, so unrelated accounts sometimes share one.
CGNAT_HOSTS = 1500


class AddressSpace:
    """Draws addresses for (country index, network index) pairs, vectorised."""

    def __init__(self, resolver: IpResolver | None = None) -> None:
        resolver = resolver or IpResolver.default()
        shape = (geo.N_COUNTRIES, len(NETWORKS))
        self._base = np.full(shape, -1, dtype=np.int64)
        self._size = np.zeros(shape, dtype=np.int64)
        for c, code in enumerate(geo.CODES):
            for n, network in enumerate(NETWORKS):
                cidrs = resolver.ranges(country=str(code), network=network)
                if cidrs:
                    net = ipaddress.ip_network(cidrs[0])
                    self._base[c, n] = int(net.network_address)
                    self._size[c, n] = net.num_addresses
        self._countries_with = [np.flatnonzero(self._base[:, n] >= 0) for n in range(len(NETWORKS))]

    def draw(
        self, rng: np.random.Generator, country: np.ndarray, network: np.ndarray | int
    ) -> np.ndarray:
        """One address (int) per row; a network a country lacks (tor) moves to one that has it."""
        country = np.asarray(country, dtype=np.int64).copy()
        network = np.broadcast_to(np.asarray(network, dtype=np.int64), country.shape)
        missing = self._base[country, network] < 0
        if missing.any():
            for n in np.unique(network[missing]):
                rows = missing & (network == n)
                have = self._countries_with[int(n)]
                country[rows] = have[rng.integers(0, len(have), int(rows.sum()))]
        size = self._size[country, network]
        hosts = np.where(network == MOBILE, np.minimum(size - 2, CGNAT_HOSTS), size - 2)
        offset = 1 + (rng.random(len(country)) * hosts).astype(np.int64)
        return np.asarray(self._base[country, network] + offset)


def dotted(addresses: np.ndarray) -> np.ndarray:
    """Dotted-quad strings (object array) for integer addresses; None where NO_IP."""
    out = np.full(len(addresses), None, dtype=object)
    present = addresses != NO_IP
    uniques, inverse = np.unique(addresses[present], return_inverse=True)
    names = np.array([str(ipaddress.IPv4Address(int(a))) for a in uniques], dtype=object)
    out[present] = names[inverse]
    return out

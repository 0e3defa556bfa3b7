"""IP address to (country, network type) resolver.

Ships with `features/data/ip_ranges.csv`, the address ranges the simulator draws from
(residential, mobile, hosting, vpn and tor networks per country). A deployment points
`IpResolver.from_csv` at its own table with the same three columns (`cidr,country,network`);
ranges must not overlap. An address in no range resolves to ("ZZ", "unknown").
"""

from __future__ import annotations

import bisect
import csv
import ipaddress
import itertools
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

UNKNOWN = ("ZZ", "unknown")
NETWORK_TYPES = ("residential", "mobile", "hosting", "vpn", "tor", "unknown")


class IpResolver:
    def __init__(self, ranges: list[tuple[str, str, str]]) -> None:
        spans = []
        for cidr, country, network in ranges:
            net = ipaddress.ip_network(cidr, strict=True)
            # IPv6 is placed above the IPv4 space so one sorted table holds both.
            offset = 0 if net.version == 4 else 1 << 32
            start = int(net.network_address) + offset
            spans.append((start, start + net.num_addresses - 1, country, network))
        spans.sort()
        for (_, end, *_), (start, *_) in itertools.pairwise(spans):
            if start <= end:
                raise ValueError(f"overlapping IP ranges near {ipaddress.ip_address(start)}")
        self._starts = [s[0] for s in spans]
        self._ends = [s[1] for s in spans]
        self._values = [(s[2], s[3]) for s in spans]
        self.resolve = lru_cache(maxsize=65_536)(self._resolve)

    @classmethod
    def from_csv(cls, path: str | Path) -> IpResolver:
        with open(path, newline="") as handle:
            rows = [(r["cidr"], r["country"], r["network"]) for r in csv.DictReader(handle)]
        return cls(rows)

    @classmethod
    def default(cls) -> IpResolver:
        return _default_resolver()

    def _resolve(self, ip: str) -> tuple[str, str]:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return UNKNOWN
        value = int(addr) + (0 if addr.version == 4 else 1 << 32)
        i = bisect.bisect_right(self._starts, value) - 1
        if i >= 0 and value <= self._ends[i]:
            return self._values[i]
        return UNKNOWN

    def resolve_series(self, ips: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Country and network arrays (object dtype; None where the ip is missing)."""
        codes, uniques = pd.factorize(ips, use_na_sentinel=True)
        resolved = [self.resolve(str(ip)) for ip in uniques]
        countries = np.array([r[0] for r in resolved] + [None], dtype=object)
        networks = np.array([r[1] for r in resolved] + [None], dtype=object)
        return countries[codes], networks[codes]

    def ranges(self, country: str | None = None, network: str | None = None) -> list[str]:
        """CIDRs matching a country and/or network type (the simulator draws from these)."""
        out = []
        for start, end, (c, n) in zip(self._starts, self._ends, self._values, strict=True):
            wanted = (country is None or c == country) and (network is None or n == network)
            if wanted and start < (1 << 32):
                size = end - start + 1
                prefix = 32 - (size.bit_length() - 1)
                out.append(f"{ipaddress.IPv4Address(start)}/{prefix}")
        return out


@lru_cache(maxsize=65_536)
def canonical(ip: str) -> str:
    """The address in its one text form, as `keep: full` keeps it: IPv6 in lower case and
    compressed ("2001:DB8:0::1" -> "2001:db8::1"), an IPv4 address written as IPv6 as the IPv4
    address ("::ffff:31.38.189.237" -> "31.38.189.237", as the policy's lists and `truncate`
    read it). So one address is one entity however a door or a log writes it. A value that is
    not an address is returned as it is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def canonical_series(ips: pd.Series) -> np.ndarray:
    """`canonical` of every value (object array, None where missing), via the uniques."""
    codes, uniques = pd.factorize(ips, use_na_sentinel=True)
    texts = np.array([*(canonical(str(ip)) for ip in uniques), None], dtype=object)
    out: np.ndarray = texts[codes]
    return out


@lru_cache(maxsize=65_536)
def truncate(ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str:
    """The address with its host bits zeroed ("31.38.189.237" -> "31.38.189.0"); a value that
    is not an address is returned as it is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped is not None:  # ::ffff:a.b.c.d is IPv4
        addr = addr.ipv4_mapped
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def truncate_series(ips: pd.Series, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> np.ndarray:
    """`truncate` of every value (object array, None where missing), via the uniques."""
    codes, uniques = pd.factorize(ips, use_na_sentinel=True)
    cut = [truncate(str(ip), ipv4_prefix, ipv6_prefix) for ip in uniques]
    out: np.ndarray = np.array([*cut, None], dtype=object)[codes]
    return out


@lru_cache(maxsize=1)
def _default_resolver() -> IpResolver:
    path = resources.files("features") / "data" / "ip_ranges.csv"
    with resources.as_file(path) as concrete:
        return IpResolver.from_csv(concrete)

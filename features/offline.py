"""The offline builder: the point-in-time feature matrix of every event of a log, vectorised.

For each entity the log is sorted by (entity key, ts, log position); every primitive's
contributions are a subsequence of that order, so each event's window is an index range
`[lo, hi)` found with `searchsorted` on a composite (key, time) number. Counts and sums are
prefix differences (sums in exact integer units of `10**-decimals`), distinct counts and maxima
are two-pointer sweeps (numba) since both window ends only move forward in that order.

The semantics are those documented in `features.spec`, and the online store computes the same
numbers: `tests/integration/test_parity.py` proves it event for event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.errors import InvalidEventLog
from features.geoip import IpResolver, canonical_series, truncate_series
from features.kernels import distinct_sweep, max_sweep
from features.spec import Feature, Primitive, SpecPlan, encode_value

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def enrich(log: pd.DataFrame, plan: SpecPlan, resolver: IpResolver | None = None) -> pd.DataFrame:
    """The log with the spec's enrichment columns added (in place when they are missing), and
    its addresses in their one text form (`features.geoip.canonical`), cut to their network
    with `keep: truncated`."""
    for e in plan.model.enrich:
        if e.field in log.columns:  # one address, one text (`canonical`), before the look-up
            log[e.field] = canonical_series(log[e.field])
        if e.country not in log.columns or e.network not in log.columns:
            resolver = resolver or IpResolver.default()
            if e.field in log.columns:
                country, network = resolver.resolve_series(log[e.field])
            else:
                country = network = np.full(len(log), None, dtype=object)
            log[e.country] = country
            log[e.network] = network
        if e.keep == "truncated" and e.field in log.columns:  # after the look-up
            log[e.field] = truncate_series(log[e.field], e.ipv4_prefix, e.ipv6_prefix)
    return log


def kept_addresses(log: pd.DataFrame, plan: SpecPlan) -> pd.DataFrame:
    """The log (in place) with the spec's address fields as the online store keys and keeps
    them: in their one text form (`features.geoip.canonical`), cut to their network with
    `keep: truncated` (done after the country look-up, which needs the whole address)."""
    for e in plan.model.enrich:
        if e.field in log.columns:
            log[e.field] = canonical_series(log[e.field])
            if e.keep == "truncated":
                log[e.field] = truncate_series(log[e.field], e.ipv4_prefix, e.ipv6_prefix)
    return log


def encode_column(column: pd.Series) -> np.ndarray:
    """`encode_value` of every value (object array, None where missing), via the uniques."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    encoded = np.array([encode_value(v) for v in uniques] + [None], dtype=object)
    out: np.ndarray = encoded[codes]
    return out


def numeric(column: pd.Series) -> F64:
    """Float values of a numeric or boolean column, NaN where missing or not a number."""
    values: F64 = pd.to_numeric(column.astype(object), errors="coerce").to_numpy(dtype=np.float64)
    return values


def scaled(values: F64, scale: int) -> I64:
    """Exact integer units (the online store holds the same integers)."""
    return np.rint(values * scale).astype(np.int64)


@dataclass
class _EntityIndex:
    """One entity: events sorted by (key, ts, position), and each event's epoch start."""

    codes: I64  # per event, -1 where the event has no key
    uniques: np.ndarray  # the key value of each code
    order: I64  # event positions sorted by (code, ts, position), keyed events only
    composite: I64  # code * span + (ts - t0), in `order`
    alive: np.ndarray  # per event: the entity had state before it (and within ttl)
    epoch_start: I64  # per event: earliest time the entity's state reaches back to
    epoch_after: I64  # in `order`: the same, once that event has been applied


class OfflineBuilder:
    def __init__(self, plan: SpecPlan, log: pd.DataFrame) -> None:
        if log.empty:
            raise InvalidEventLog("the event log holds no events")
        self.plan = plan
        self.log = enrich(log, plan)
        self.ts = log["ts"].to_numpy(dtype=np.int64)
        if np.any(np.diff(self.ts) < 0):
            raise InvalidEventLog("the event log must be sorted by ts (use features.log.read_log)")
        self.t0 = int(self.ts[0])
        self.span = int(self.ts[-1]) - self.t0 + 2
        self._entities: dict[str, _EntityIndex] = {}
        self._contrib: dict[tuple[Any, ...], tuple[I64, I64]] = {}
        self._encoded: dict[str, np.ndarray] = {}

    def encoded(self, name: str) -> np.ndarray:
        if name not in self._encoded:
            if name in self.log.columns:
                self._encoded[name] = encode_column(self.log[name])
            else:
                self._encoded[name] = np.full(len(self.log), None, dtype=object)
        return self._encoded[name]

    def filter_mask(self, where: tuple[tuple[str, tuple[str, ...]], ...]) -> np.ndarray:
        mask = np.ones(len(self.log), dtype=bool)
        for name, values in where:
            mask &= np.isin(self.encoded(name), list(values))
        return mask

    # -- indexes -------------------------------------------------------------------------
    def entity(self, name: str) -> _EntityIndex:
        if name in self._entities:
            return self._entities[name]
        key = self.plan.entity_keys[name]
        n = len(self.log)
        if key in self.log.columns:
            factorized, uniques = pd.factorize(self.log[key], use_na_sentinel=True)
            codes = factorized.astype(np.int64)
        else:
            codes, uniques = np.full(n, -1, dtype=np.int64), np.array([], dtype=object)
        keyed = np.flatnonzero(codes >= 0)
        order = keyed[np.argsort(codes[keyed], kind="stable")]
        t = self.ts[order]
        c = codes[order]
        composite = c * self.span + (t - self.t0)
        same = np.zeros(len(order), dtype=bool)
        same[1:] = c[1:] == c[:-1]
        gap = np.zeros(len(order), dtype=np.int64)
        gap[1:] = t[1:] - t[:-1]
        ttl = self.plan.entity_ttl[name]
        starts = ~same | (gap >= ttl)
        start_idx = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
        start_time = t[start_idx]
        alive = np.zeros(n, dtype=bool)
        epoch = np.zeros(n, dtype=np.int64)
        # The state an event reads is the one its predecessor left: alive unless it is the
        # first touch of its key or comes a ttl or more after the previous touch.
        prev_alive = same & (gap < ttl)
        alive[order] = prev_alive
        prev_epoch = np.zeros(len(order), dtype=np.int64)
        prev_epoch[1:] = start_time[:-1]
        epoch[order] = np.where(prev_alive, prev_epoch, 0)
        index = _EntityIndex(
            codes, np.asarray(uniques, dtype=object), order, composite, alive, epoch, start_time
        )
        self._entities[name] = index
        return index

    def contributions(self, p: Primitive) -> tuple[I64, I64]:
        """(positions in log, composite numbers) of the events a primitive aggregates."""
        sig = (p.entity, p.where, p.field, p.kind in "csm")
        if sig not in self._contrib:
            ent = self.entity(p.entity)
            mask = self.filter_mask(p.where)
            if p.field is not None:
                if p.field not in self.log.columns:
                    mask = np.zeros(len(self.log), dtype=bool)
                elif p.kind in "csm":
                    mask &= ~np.isnan(numeric(self.log[p.field]))
                else:
                    mask &= self.log[p.field].notna().to_numpy()
            keep = mask[ent.order]
            self._contrib[sig] = (ent.order[keep], ent.composite[keep])
        return self._contrib[sig]

    def bounds(self, p: Primitive, window: int, hop: int) -> tuple[I64, I64, I64, np.ndarray]:
        """Per queried event: lo, hi into the contributions, its entity code, and alive."""
        ent = self.entity(p.entity)
        _, comp = self.contributions(p)
        code = ent.codes
        base = np.maximum(code, 0) * self.span
        hi = np.searchsorted(comp, base + (self.ts - self.t0), side="left")
        start = ent.epoch_start
        if window:
            start = np.maximum(start, ((self.ts - window) // hop) * hop)
        lo = np.searchsorted(comp, base + np.maximum(start - self.t0, 0), side="left")
        live = ent.alive & (code >= 0)
        lo = np.where(live, lo, hi)
        return lo.astype(np.int64), hi.astype(np.int64), code, live

    # -- features ------------------------------------------------------------------------
    def build(self) -> pd.DataFrame:
        """One row per event: `event_id`, `ts`, then every output feature (float64)."""
        values: dict[str, Any] = {}
        for f in self.plan.features:
            values[f.name] = self._feature(f, values)
        out = pd.DataFrame({"event_id": self.log["event_id"].to_numpy(), "ts": self.ts})
        for name in self.plan.output:
            column = values[name]
            if column.dtype == object:
                column = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy()
                if np.isnan(column).all() and pd.Series(values[name]).notna().any():
                    raise InvalidEventLog(
                        f"feature '{name}' is not numeric; mark it hidden and compare it instead"
                    )
            out[name] = np.asarray(column, dtype=np.float64)
        return out

    def _encoded_ref(self, name: str, values: dict[str, Any]) -> np.ndarray:
        if name in values:
            return encode_column(pd.Series(values[name], dtype=object))
        return self.encoded(name)

    def _numeric_ref(self, name: str, values: dict[str, Any]) -> F64:
        if name in values:
            return numeric(pd.Series(values[name], dtype=object))
        if name in self.log.columns:
            return numeric(self.log[name])
        return np.full(len(self.log), np.nan)

    def _feature(self, f: Feature, values: dict[str, Any]) -> np.ndarray:
        d = f.definition
        prims = [self.plan.primitives[i] for i in f.prims]
        if f.kind == "field":
            return self._numeric_ref(d.field or "", {})
        if f.kind in ("hour_of_day", "day_of_week"):
            hours: I64 = self.ts // 3_600_000
            # day_of_week: Monday = 0; 1970-01-01 was a Thursday
            moment = hours % 24 if f.kind == "hour_of_day" else (hours // 24 + 3) % 7
            return np.asarray(moment, dtype=np.float64)
        if f.kind in ("compare", "in"):
            a = self._encoded_ref(d.a or "", values)
            missing = pd.isna(a)
            if f.kind == "in":
                hit = np.isin(a, np.array([encode_value(v) for v in d.values], dtype=object))
            else:
                b = self._encoded_ref(d.b or "", values)
                missing |= pd.isna(b)
                hit = (a == b) == (d.op == "eq")
            return np.where(missing, np.nan, hit.astype(np.float64))
        if f.kind == "ratio":
            a_num = self._numeric_ref(d.a or "", values)
            b_num = self._numeric_ref(d.b or "", values)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(b_num != 0, a_num / b_num, np.nan)
        return self._aggregate(f, prims)

    def _aggregate(self, f: Feature, prims: list[Primitive]) -> np.ndarray:
        p = prims[0]
        lo, hi, code, live = self.bounds(p, f.window, f.hop)
        keyed = code >= 0
        count = (hi - lo).astype(np.float64)
        nan = np.full(len(self.log), np.nan)
        if f.kind in ("count", "distinct", "sum"):
            if f.kind == "count":
                result = count
            elif f.kind == "distinct":
                result = self._distinct(p, lo, hi)
            else:
                result = self._sum(p, lo, hi)
            return np.where(keyed, result, np.nan)
        if f.kind == "mean":
            total = self._sum(p, lo, hi)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(keyed & (count > 0), total / count, nan)
        if f.kind == "max":
            pos, _ = self.contributions(p)
            units = self._units(p, pos)
            best = max_sweep(units, lo, hi, self.entity(p.entity).order)
            return np.where(keyed & (count > 0), best / self.plan.scale, nan)
        if f.kind == "share":
            base_lo, base_hi, _, _ = self.bounds(prims[1], f.window, f.hop)
            base = (base_hi - base_lo).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(keyed & (base > 0), count / base, nan)
        pos, _ = self.contributions(p)
        has = keyed & live & (hi > lo)
        if f.kind == "time_since_last":
            t = self.ts[pos[np.maximum(hi - 1, 0)]] if len(pos) else np.zeros(len(hi), np.int64)
            return np.where(has, (self.ts - t) / 1000.0, nan)
        if f.kind == "time_since_first":
            t = self.ts[pos[np.minimum(lo, len(pos) - 1)]] if len(pos) else np.zeros(len(lo))
            return np.where(has, (self.ts - t) / 1000.0, nan)
        if f.kind == "last_value":
            column = self.encoded(p.field or "")
            picked = column[pos[np.maximum(hi - 1, 0)]] if len(pos) else np.full(len(hi), None)
            out: np.ndarray = np.where(has, picked, np.array(None, dtype=object))
            return out
        raise AssertionError(f"unhandled kind {f.kind}")

    def _units(self, p: Primitive, pos: I64) -> I64:
        """The contributions' field values in exact integer units (none when no column)."""
        if not len(pos):
            return np.zeros(0, dtype=np.int64)
        return scaled(numeric(self.log[p.field].iloc[pos]), self.plan.scale)

    def _sum(self, p: Primitive, lo: I64, hi: I64) -> F64:
        pos, _ = self.contributions(p)
        units = self._units(p, pos)
        prefix = np.zeros(len(units) + 1, dtype=np.int64)
        np.cumsum(units, out=prefix[1:])
        return np.asarray((prefix[hi] - prefix[lo]) / self.plan.scale, dtype=np.float64)

    def _distinct(self, p: Primitive, lo: I64, hi: I64) -> F64:
        pos, _ = self.contributions(p)
        codes = pd.factorize(self.encoded(p.field or "")[pos])[0].astype(np.int64)
        order = self.entity(p.entity).order
        return distinct_sweep(codes, lo, hi, order).astype(np.float64)


def build_features(plan: SpecPlan, log: pd.DataFrame) -> pd.DataFrame:
    """The point-in-time feature matrix of a log sorted by ts (see `OfflineBuilder.build`)."""
    return OfflineBuilder(plan, log).build()

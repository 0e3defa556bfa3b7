"""Bulk loading: every entity's end state computed from a log offline, written in one pass.

Applying a log event by event costs Redis a script run per event (about 60 us on this hardware,
see docs/BENCHMARKS.md). When Redis holds none of the log's entities and none of its events yet
(a backfill, a fresh world), the state that replay would leave is instead computed here, with
the offline builder's indexes, and written with one HSET per entity. The hashes have the layout
of `features.online` and read exactly as replay leaves them
(`tests/integration/test_bulk_load.py` compares every feature of probe requests); they can hold
fewer stale entries, which no read can reach anyway. The event ids are marked as seen, so a
later replay of the same log changes nothing (on a Redis Cluster, in every slot the event's
entities fall in, as replay marks them: `features.cluster`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from features.cluster import ClusterOnlineStore, key_slot_of
from features.errors import FeatureStoreUnavailable
from features.offline import OfflineBuilder, kept_addresses, numeric, scaled
from features.online import OnlineStore
from features.spec import Primitive
from features.state import SEP

Fields = dict[int, dict[str, str]]  # entity code -> hash fields


def _last_and_prev(
    group: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by (group, t): per group, its last row, last time, and the latest time
    strictly before it (-1 when none) with that row's index."""
    new_group = np.r_[True, group[1:] != group[:-1]]
    ends = np.flatnonzero(np.r_[new_group[1:], True])
    starts = np.flatnonzero(new_group)
    # First row of the run of rows sharing each row's (group, time).
    run_starts = new_group | np.r_[True, t[1:] != t[:-1]]
    run_start = np.maximum.accumulate(np.where(run_starts, np.arange(len(t)), 0))[ends]
    has_prev = run_start > starts
    prev_row = np.where(has_prev, run_start - 1, 0)
    prev_t = np.where(has_prev, t[prev_row], -1)
    return ends, t[ends], prev_t, np.where(has_prev, prev_row, -1)


class BulkLoader:
    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self.plan = store.plan

    def is_fresh(self, log: pd.DataFrame) -> bool:
        """True when Redis holds none of the log's entities and none of its events."""
        client = self.store.client
        fields = [f for f in self.plan.entity_keys.values() if f in log.columns]
        log = kept_addresses(log[["ts", *dict.fromkeys(fields)]].copy(), self.plan)  # as keyed
        if isinstance(self.store, ClusterOnlineStore):
            keys = self._cluster_keys(log)
        else:
            hours = np.unique(log["ts"] // 3_600_000)
            keys = [self.store.seen_key(int(h) * 3_600_000) for h in hours]
            for entity, field in self.plan.entity_keys.items():
                if field in log.columns:
                    keys += [self.store.key(entity, v) for v in log[field].dropna().unique()]
        try:
            for i in range(0, len(keys), 5000):
                if client.exists(*keys[i : i + 5000]):
                    return False
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        return True

    def _cluster_keys(self, log: pd.DataFrame) -> list[str]:
        """The entity hashes of a log, and the dedupe hashes of the hours and slots of its
        events' entities (where replay marks them on a cluster)."""
        assert isinstance(self.store, ClusterOnlineStore)
        keys: list[str] = []
        hours = (log["ts"] // 3_600_000).to_numpy()
        groups = []
        for entity, field in self.plan.entity_keys.items():
            if field in log.columns:
                codes, uniques = pd.factorize(log[field], use_na_sentinel=True)
                names = [self.store.key(entity, v) for v in uniques]
                slots = np.array([key_slot_of(k) for k in names], dtype=np.int64)
                keys += names
                present = codes >= 0
                groups.append(hours[present] * REDIS_CLUSTER_HASH_SLOTS + slots[codes[present]])
        for group in np.unique(np.concatenate(groups)) if groups else ():
            hour, slot = divmod(int(group), REDIS_CLUSTER_HASH_SLOTS)
            keys.append(self.store.seen_key(hour * 3_600_000, slot))
        return keys

    def load(self, log: pd.DataFrame) -> int:
        """Write the end state of every entity of a ts-sorted log; returns the events loaded."""
        log = log.drop_duplicates("event_id").reset_index(drop=True)
        builder = OfflineBuilder(self.plan, log)
        pipe = self.store.client.pipeline(transaction=False)
        for entity in self.plan.entity_keys:
            fields = self._entity_fields(builder, entity)
            uniques = builder.entity(entity).uniques
            ttl = self.plan.entity_ttl[entity]
            for code, mapping in fields.items():
                key = self.store.key(entity, uniques[code])
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                pipe.pexpire(key, ttl)
                if len(pipe) >= 4000:
                    self._run(pipe)
        hours = (log["ts"] // 3_600_000).to_numpy()
        ids = log["event_id"].astype(str).to_numpy(dtype=object)
        if isinstance(self.store, ClusterOnlineStore):
            self._mark_per_slot(pipe, builder, hours, ids)
            self._run(pipe)
            return len(log)
        # The log is sorted by ts, so each hour's events are one slice.
        bounds = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1], True])
        for lo, hi in itertools.pairwise(bounds):
            key = self.store.seen_key(int(hours[lo]) * 3_600_000)
            for i in range(lo, hi, 10_000):
                marks: dict[str | bytes, str] = dict.fromkeys(ids[i : min(hi, i + 10_000)], "1")
                pipe.hset(key, mapping=marks)  # type: ignore[arg-type]
            pipe.pexpire(key, self.store.dedupe_ttl_ms)
        self._run(pipe)
        return len(log)

    def _mark_per_slot(
        self, pipe: Any, builder: OfflineBuilder, hours: np.ndarray, ids: np.ndarray
    ) -> None:
        """On a cluster, the dedupe markers replay would leave: one in each slot the event's
        entities fall in, in that slot's hourly hash (`features.cluster`)."""
        assert isinstance(self.store, ClusterOnlineStore)
        rows, slots = [], []
        keyed = np.zeros(len(ids), dtype=bool)
        for entity in self.plan.entity_keys:
            index = builder.entity(entity)
            if not len(index.uniques):
                continue
            of_unique = np.array([key_slot_of(self.store.key(entity, v)) for v in index.uniques])
            present = np.flatnonzero(index.codes >= 0)
            rows.append(present)
            slots.append(of_unique[index.codes[present]])
            keyed[present] = True
        alone = np.flatnonzero(~keyed)  # an event of no entity: its event_id's slot
        rows.append(alone)
        slots.append(np.array([key_slot_of(ids[i]) for i in alone], dtype=np.int64))
        row = np.concatenate(rows)
        group = hours[row] * REDIS_CLUSTER_HASH_SLOTS + np.concatenate(slots).astype(np.int64)
        order = np.lexsort((row, group))
        row, group = row[order], group[order]
        keep = np.r_[True, (group[1:] != group[:-1]) | (row[1:] != row[:-1])]
        row, group = row[keep], group[keep]  # two entities of an event in one slot: one mark
        bounds = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])
        for lo, hi in itertools.pairwise(bounds):
            hour, slot = divmod(int(group[lo]), REDIS_CLUSTER_HASH_SLOTS)
            key = self.store.seen_key(hour * 3_600_000, slot)
            for i in range(lo, hi, 10_000):
                marks: dict[str | bytes, str] = dict.fromkeys(
                    ids[row[i : min(hi, i + 10_000)]], "1"
                )
                pipe.hset(key, mapping=marks)
            pipe.pexpire(key, self.store.dedupe_ttl_ms)
            if len(pipe) >= 4000:
                self._run(pipe)

    @staticmethod
    def _run(pipe: Any) -> None:
        try:
            pipe.execute()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc

    def _entity_fields(self, builder: OfflineBuilder, entity: str) -> Fields:
        index = builder.entity(entity)
        if not len(index.order):
            return {}
        codes_sorted = index.codes[index.order]
        ends = np.flatnonzero(np.r_[codes_sorted[1:] != codes_sorted[:-1], True])
        touched = np.zeros(len(index.uniques), dtype=np.int64)
        epoch = np.zeros(len(index.uniques), dtype=np.int64)
        touched[codes_sorted[ends]] = builder.ts[index.order[ends]]
        epoch[codes_sorted[ends]] = index.epoch_after[ends]
        fields: Fields = defaultdict(dict)
        for code in codes_sorted[ends]:
            fields[int(code)]["t"] = str(touched[code])
        heads: dict[int, list[str]] = defaultdict(list)
        for p in self.plan.primitives:
            if p.entity != entity:
                continue
            pos, _ = builder.contributions(p)
            codes = index.codes[pos]
            t = builder.ts[pos]
            keep = t >= epoch[codes]  # only the entity's last epoch survives in Redis
            pos, codes, t = pos[keep], codes[keep], t[keep]
            if not len(pos):
                continue
            if p.kind in "csm":
                self._buckets(builder, p, pos, codes, t, touched, fields, heads)
            elif p.kind == "d":
                self._distinct(builder, p, pos, codes, t, touched, fields)
            else:
                self._stateful(builder, p, pos, codes, t, fields)
        for code, parts in heads.items():
            fields[code]["h"] = ";".join(parts)
        return fields

    def _buckets(
        self, builder: OfflineBuilder, p: Primitive, pos: np.ndarray, codes: np.ndarray,
        t: np.ndarray, touched: np.ndarray, fields: Fields, heads: dict[int, list[str]],
    ) -> None:  # fmt: skip
        if p.kind == "c":
            values = np.ones(len(pos), dtype=np.int64)
        else:
            values = scaled(numeric(builder.log[p.field].iloc[pos]), self.plan.scale)
        how = "max" if p.kind == "m" else "sum"
        at_head = t == touched[codes]
        head = pd.Series(values[at_head]).groupby(codes[at_head]).agg(how)
        for code, value in head.items():
            heads[int(code)].append(f"{p.pid}={int(value)}")
        bucket = t // p.hop
        reachable = bucket >= (touched[codes] - p.horizon) // p.hop
        rows = ~at_head & reachable
        frame = pd.DataFrame({"c": codes[rows], "b": bucket[rows], "v": values[rows]})
        totals = frame.groupby(["c", "b"], sort=True)["v"].agg(how).reset_index()
        for code, group in totals.groupby("c", sort=False):
            items = zip(group["b"].to_numpy()[::-1], group["v"].to_numpy()[::-1], strict=True)
            fields[int(code)][str(p.pid)] = ";".join(f"{b}={v}" for b, v in items)

    def _distinct(
        self, builder: OfflineBuilder, p: Primitive, pos: np.ndarray, codes: np.ndarray,
        t: np.ndarray, touched: np.ndarray, fields: Fields,
    ) -> None:  # fmt: skip
        encoded = builder.encoded(p.field or "")[pos]
        value_codes, values = pd.factorize(encoded)
        order = np.lexsort((t, value_codes, codes))
        pair = codes[order] * (len(values) + 1) + value_codes[order]
        ends, last_t, prev_t, _ = _last_and_prev(pair, t[order])
        owner = codes[order][ends]
        # Values no window can reach any more are left out (replay trims them too, later).
        live = last_t >= ((touched[owner] - p.horizon) // p.hop) * p.hop
        names = np.asarray(values, dtype=object)[value_codes[order][ends[live]]]
        rows = zip(names, last_t[live], prev_t[live], owner[live], strict=True)
        for value, last, prev, code in rows:
            text = f"{last},{prev}" if prev >= 0 else str(last)
            fields[int(code)][f"d{p.pid}:{value}"] = text

    def _stateful(
        self, builder: OfflineBuilder, p: Primitive, pos: np.ndarray, codes: np.ndarray,
        t: np.ndarray, fields: Fields,
    ) -> None:  # fmt: skip
        # Rows are already in (code, ts, log position) order.
        ends, last_t, prev_t, prev_row = _last_and_prev(codes, t)
        owners = codes[ends]
        if p.kind == "f":
            starts = np.r_[0, ends[:-1] + 1]
            for code, first in zip(owners, t[starts], strict=True):
                fields[int(code)][f"f{p.pid}"] = str(first)
        elif p.kind == "l":
            for code, last, prev in zip(owners, last_t, prev_t, strict=True):
                fields[int(code)][f"l{p.pid}"] = f"{last},{prev}" if prev >= 0 else str(last)
        else:
            encoded = builder.encoded(p.field or "")[pos]
            for code, end, last, prev, row in zip(
                owners, ends, last_t, prev_t, prev_row, strict=True
            ):
                text = f"{last}{SEP}{encoded[end]}"
                if prev >= 0:
                    text += f"{SEP}{prev}{SEP}{encoded[row]}"
                fields[int(code)][f"v{p.pid}"] = text

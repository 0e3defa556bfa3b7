"""The online store: applies events to Redis and reads a request's feature vector.

Layout: one Redis hash per entity, key `{prefix}:{<entity>:<value>}` (the braces are a hash tag,
so Redis Cluster keeps an entity in one slot). Fields:

    t             time (ms) of the latest event that touched the entity
    h             "pid=v;..." contributions of the events at exactly time t (the "head")
    <pid>         "b=v;..." count / sum / max per bucket b = floor(ts / hop), events before t
    d<pid>:<val>  "last[,prev]" times a distinct value was seen (prev: latest strictly before)
    l<pid>        "last[,prev]" times for time_since_last
    f<pid>        earliest time, for time_since_first
    v<pid>        last value and the one before it, for last_value

Keeping the events at the latest timestamp apart is what makes ties exact: an event reads only
what happened strictly before its own timestamp. Sums and maxima are integers in units of
`10**-decimals`, so both sides add the same integers. Writes run in one Lua script call per
batch of events (`features.store_script`; atomic, with the `event_id` dedupe markers), which
folds the head into its bucket, trims buckets and distinct values no window can reach any more,
applies the logical ttl (an entity idle for its ttl starts from nothing) and refreshes the key's
Redis ttl. A store that holds none of a log's entities yet is loaded faster by `features.bulk`.

`read` is one pipelined round trip (an HGETALL per entity); `read_and_apply` adds the write to
the same round trip, and `read_for_decision` adds flags kept beside the features (the
engine's suspension flags); `read_many` reads many events' features in one round trip;
`apply_many` pipelines a batch. Redis errors become
`FeatureStoreUnavailable`. Events are expected in timestamp order per entity; an event older
than its entity's latest is added to its bucket, but its own read sees the entity as of now.

Handed a Redis Cluster client (`features.connect`), the store is a
`features.cluster.ClusterOnlineStore`: the same layout, the apply script split per slot and
each round trip per node; this class's single-node path is untouched by it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio
import redis.cluster

from features.connect import AsyncClient, SyncClient
from features.errors import FeatureStoreUnavailable
from features.geoip import IpResolver, canonical, truncate
from features.restate import Restated, Restating, blockers, delta_ops
from features.side_keys import SideKeys
from features.spec import Primitive, SpecPlan, encode_value
from features.state import EMPTY, FeatureComputer, numeric, parse_state
from features.store_script import render_script
from features.wire import checked, script_lost, send, send_async

HOUR_MS = 3_600_000  # dedupe markers are kept in one hash per hour of event time


@dataclass(frozen=True)
class Reading:
    """One decision's round trip (`OnlineStore.read_for_decision`)."""

    features: dict[str, Any]
    applied: bool
    flags: tuple[str | None, ...]
    unknown: frozenset[str]  # entities with no state in Redis


class OnlineStore(SideKeys, Restating):
    def __new__(cls, client: Any, *args: Any, **kwargs: Any) -> OnlineStore:
        """Handed a Redis Cluster client, an `OnlineStore` is a `ClusterOnlineStore` (the same
        store split per slot and node, `features.cluster`): callers build the store from
        whatever client `ARBITER_REDIS_URL` named, and the single-node path stays as it is."""
        if cls is OnlineStore and isinstance(client, redis.cluster.RedisCluster):
            from features.cluster import ClusterOnlineStore  # a subclass: imported when used

            return super().__new__(ClusterOnlineStore)
        return super().__new__(cls)

    def __init__(
        self,
        client: SyncClient,
        plan: SpecPlan,
        *,
        prefix: str = "arb",
        dedupe_ttl_ms: int = 2 * 86_400_000,
        resolver: IpResolver | None = None,
        batch_size: int = 256,
        async_client: AsyncClient | None = None,
    ) -> None:
        # Cast: a cluster client makes this a `ClusterOnlineStore` (`__new__`), which re-types
        # both clients.
        self.client = cast(redis.Redis, client)
        # For `read_for_decision_async`, on one event loop.
        self.async_client = cast(redis.asyncio.Redis | None, async_client)
        self.plan = plan
        self.prefix = prefix
        self.dedupe_ttl_ms = dedupe_ttl_ms
        self.resolver = resolver or (IpResolver.default() if plan.model.enrich else None)
        self._entities = list(plan.model.entities)
        self._entity_index = {e: str(i + 1) for i, e in enumerate(self._entities)}
        self.batch_size = batch_size
        self._keys = plan.entity_keys
        self._ttl = plan.entity_ttl
        self._computer = FeatureComputer(plan)
        self._kinds = {p.pid: p.kind for p in plan.primitives}
        # Whether a payment's status can be restated exactly (`features.restate`).
        self.restatable = not blockers(plan)
        self._source = render_script(plan)
        self._sha = hashlib.sha1(self._source.encode()).hexdigest()
        # Per entity, primitives grouped by filter: a filter is checked once per event.
        groups: dict[str, dict[Any, list[Primitive]]] = {e: {} for e in self._entities}
        for p in plan.primitives:
            groups[p.entity].setdefault(p.where, []).append(p)
        self._groups = {
            entity: [
                ([(name, frozenset(vals)) for name, vals in where], prims)
                for where, prims in by_where.items()
            ]
            for entity, by_where in groups.items()
        }

    # -- keys and ops ------------------------------------------------------------------------
    def key(self, entity: str, value: Any) -> str:
        return f"{self.prefix}:{{{entity}:{encode_value(value)}}}"

    def seen_key(self, ts: int) -> str:
        """The hash holding the dedupe markers of the events of ts's hour."""
        return f"{self.prefix}:seen:{ts // HOUR_MS}"

    def enrich(self, event: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(event)
        if self.resolver is not None:
            for e in self.plan.model.enrich:
                ip = out.get(e.field)
                full = canonical(str(ip)) if ip else None  # one address, one text
                if e.country not in out or e.network not in out:
                    country, network = self.resolver.resolve(full) if full else (None, None)
                    out[e.country], out[e.network] = country, network
                if full:  # after the look-up, which needs all of it
                    keep = e.keep == "truncated"
                    out[e.field] = truncate(full, e.ipv4_prefix, e.ipv6_prefix) if keep else full
        return out

    def _ops(self, entity: str, event: Mapping[str, Any], encoded: dict[str, Any]) -> list[str]:
        """(primitive id, argument) pairs, flattened, of the primitives the event feeds."""
        ops: list[str] = []
        for checks, prims in self._groups[entity]:
            matched = True
            for name, allowed in checks:
                if name not in encoded:
                    encoded[name] = encode_value(event.get(name))
                if encoded[name] not in allowed:
                    matched = False
                    break
            if not matched:
                continue
            for p in prims:
                if p.field is None:
                    arg = "1"
                elif p.kind in "csm":  # numeric fields: missing or non-numeric values skipped
                    number = numeric(event.get(p.field))
                    if number != number:
                        continue
                    arg = "1" if p.kind == "c" else str(round(number * self.plan.scale))
                else:
                    text = encode_value(event.get(p.field))
                    if text is None:
                        continue
                    arg = text
                ops += (str(p.pid), arg)
        return ops

    def event_ops(
        self, entity: str, event: Mapping[str, Any], encoded: dict[str, Any]
    ) -> list[str]:
        """`_ops`, or for a `Restated` event the difference to the event as counted."""
        if isinstance(event, Restated):
            counted = self._ops(entity, event.before, {})
            return delta_ops(counted, self._ops(entity, event, {}), self._kinds)
        return self._ops(entity, event, encoded)

    def _batch(self, events: Sequence[Mapping[str, Any]], dedupe: bool) -> list[str]:
        """KEYS count, KEYS and ARGV of the apply script for enriched events, in order."""
        keys: list[str] = []
        index: dict[str, int] = {}

        def key_index(name: str) -> str:
            if name not in index:
                keys.append(name)
                index[name] = len(keys)
            return str(index[name])

        args = [str(self.dedupe_ttl_ms), str(len(events))]
        for event in events:
            ts = int(event["ts"])
            if dedupe:  # its hour's markers, and those of the hours before and after
                seen = key_index(self.seen_key(ts))
                before = key_index(self.seen_key(ts - HOUR_MS))
                after = key_index(self.seen_key(ts + HOUR_MS))
            else:
                seen = before = after = "0"
            entities = self._entities_of(event)
            args += (seen, before, after, str(event["event_id"]), str(ts))
            args.append(entity_count(event, entities))
            encoded: dict[str, Any] = {}
            for entity in entities:
                ops = self.event_ops(entity, event, encoded)
                ttl = str(self.plan.entity_ttl[entity])
                key = key_index(self.key(entity, event[self._keys[entity]]))
                args += (key, self._entity_index[entity], ttl, ttl, str(len(ops) // 2), *ops)
        return [str(len(keys)), *keys, *args]

    # -- public API ----------------------------------------------------------------------------
    def seen(self, events: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Whether each event's dedupe marker is kept in its own hour's hash (the apply
        script also finds one in the hours either side: a retry stamped across the hour)."""
        event_ids = [str(event["event_id"]) for event in events]
        by_hour: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            by_hour.setdefault(self.seen_key(int(event["ts"])), []).append(i)
        out = [False] * len(event_ids)
        pipe = self.client.pipeline(transaction=False)
        slots = []
        for key, rows in by_hour.items():
            for j in range(0, len(rows), 10_000):
                chunk = rows[j : j + 10_000]
                pipe.hmget(key, [event_ids[i] for i in chunk])
                slots.append(chunk)
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        for chunk, reply in zip(slots, replies, strict=True):
            for i, mark in zip(chunk, reply, strict=True):
                out[i] = mark is not None
        return out

    def _marker_key(self, enriched: Mapping[str, Any]) -> str:
        return self.seen_key(int(enriched["ts"]))

    def _calls(self, enriched: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """The script calls that apply enriched events, in order, with their dedupe markers."""
        return [self._batch(enriched, True)]

    def apply(self, event: Mapping[str, Any], *, dedupe: bool = True) -> bool:
        """Apply one (validated) event; False when its event_id was applied before."""
        return self.apply_many([event], dedupe=dedupe) == 1

    def apply_many(self, events: Iterable[Mapping[str, Any]], *, dedupe: bool = True) -> int:
        """Apply a batch in one pipeline (in order); returns how many were new."""
        return self.send(self.prepare(events, dedupe=dedupe))

    def prepare(
        self, events: Iterable[Mapping[str, Any]], *, dedupe: bool = True
    ) -> list[list[str]]:
        """The script calls that apply `events` in order (CPU only; see `send`)."""
        enriched = [self.enrich(event) for event in events]
        return [
            self._batch(enriched[i : i + self.batch_size], dedupe)
            for i in range(0, len(enriched), self.batch_size)
        ]

    def send(self, calls: Sequence[list[str]]) -> int:
        """Run prepared calls in one pipeline; returns how many events were new. A caller
        streaming many events can prepare the next chunk while this one is in flight (the
        socket wait frees the GIL): `arbiter ingest` does."""

        def fill(pipe: Any) -> None:
            for call in calls:
                pipe.evalsha(self._sha, *call)

        return sum(int(r) for r in self._execute(fill)) if calls else 0

    def _execute(self, fill: Callable[[Any], None]) -> list[Any]:
        """Queue commands with `fill` and run them in one round trip. If Redis lost the apply
        script (a restart), load it and run again: the dedupe markers make that safe."""
        try:
            for attempt in (1, 2):
                pipe = self.client.pipeline(transaction=False)
                fill(pipe)
                try:
                    return list(pipe.execute())
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    self.client.script_load(self._source)
            raise AssertionError("unreachable")
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc

    def read(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """All features of `event` as of just before it: one round trip."""
        event = self.enrich(event)
        entities = self._entities_of(event)
        replies = self._round_trip([("HGETALL", k) for k in self._keys_of(event, entities)])
        return self.compute(event, dict(zip(entities, replies, strict=True)))

    def read_and_apply(self, event: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Features as of just before `event`, then `event` applied: one round trip."""
        reading = self.read_for_decision(event)
        return reading.features, reading.applied

    def read_for_decision(
        self, event: Mapping[str, Any], flags: Sequence[str] = (), *, apply: bool = True
    ) -> Reading:
        """What a decision needs in one round trip: the features of `event` as of just before
        it, the values of the string keys `flags` (None where absent), which entities had no
        state (never seen, expired or lost with a Redis restart), and (with `apply`) the
        event applied."""
        event, entities, commands = self._decision_commands(event, flags, apply)
        return self._reading(event, entities, flags, apply, self._round_trip(commands))

    async def read_for_decision_async(
        self, event: Mapping[str, Any], flags: Sequence[str] = (), *, apply: bool = True
    ) -> Reading:
        """`read_for_decision` awaiting Redis on the event loop (needs `async_client`)."""
        if self.async_client is None:
            return self.read_for_decision(event, flags, apply=apply)
        event, entities, commands = self._decision_commands(event, flags, apply)
        replies = await self._round_trip_async(commands)
        return self._reading(event, entities, flags, apply, replies)

    def _decision_commands(
        self, event: Mapping[str, Any], flags: Sequence[str], apply: bool
    ) -> tuple[dict[str, Any], list[str], list[tuple[Any, ...]]]:
        enriched = self.enrich(event)
        entities = self._entities_of(enriched)
        commands: list[tuple[Any, ...]] = [
            ("HGETALL", k) for k in self._keys_of(enriched, entities)
        ]
        commands += [("GET", k) for k in flags]
        if apply:
            commands += self._apply_commands(enriched)
        return enriched, entities, commands

    def _apply_commands(self, enriched: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The commands that apply one enriched event (one script call here)."""
        return [("EVALSHA", self._sha, *self._batch([enriched], True))]

    def _reading(
        self,
        event: dict[str, Any],
        entities: list[str],
        flags: Sequence[str],
        apply: bool,
        replies: list[Any],
    ) -> Reading:
        raw = replies[: len(entities)]
        found = replies[len(entities) : len(entities) + len(flags)]
        return Reading(
            features=self.compute(event, dict(zip(entities, raw, strict=True))),
            applied=bool(replies[-1]) if apply else False,
            flags=tuple(v.decode() if isinstance(v, bytes) else v for v in found),
            unknown=frozenset(e for e, reply in zip(entities, raw, strict=True) if not reply),
        )

    def read_many(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The features of each event as of just before it, all in one round trip."""
        enriched = [self.enrich(event) for event in events]
        per_event = [self._entities_of(event) for event in enriched]
        commands: list[tuple[Any, ...]] = [
            ("HGETALL", k)
            for event, entities in zip(enriched, per_event, strict=True)
            for k in self._keys_of(event, entities)
        ]
        replies = iter(self._round_trip(commands)) if commands else iter(())
        return [
            self.compute(event, {entity: next(replies) for entity in entities})
            for event, entities in zip(enriched, per_event, strict=True)
        ]

    def _keys_of(self, event: Mapping[str, Any], entities: Sequence[str]) -> list[str]:
        return [self.key(e, event[self._keys[e]]) for e in entities]

    def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands pipelined on one pooled connection and read every reply (the hot
        path: redis-py's pipeline object and its reply callbacks cost more than Redis itself
        here; HGETALL replies stay flat lists, which `parse_state` reads). If Redis lost the
        apply script (a restart), load it and run again: nothing was applied."""
        replies = self._send(commands)
        if script_lost(replies):
            try:
                self.client.script_load(self._source)
            except redis.RedisError as exc:
                raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
            replies = self._send(commands)
        return checked(replies)

    async def _round_trip_async(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """`_round_trip` on the event loop."""
        assert self.async_client is not None
        replies = await self._send_async(commands)
        if script_lost(replies):
            try:
                await self.async_client.script_load(self._source)
            except redis.RedisError as exc:
                raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
            replies = await self._send_async(commands)
        return checked(replies)

    async def _send_async(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        assert self.async_client is not None
        return await send_async(self.async_client.connection_pool, commands)

    def _send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        return send(self.client.connection_pool, commands)

    def vector(self, features: Mapping[str, Any]) -> list[float]:
        """The model's input: the output features in spec order, missing values as NaN."""
        return [numeric(features[name]) for name in self.plan.output]

    def _entities_of(self, event: Mapping[str, Any]) -> list[str]:
        return [e for e in self._entities if encode_value(event.get(self._keys[e])) is not None]

    # -- computing features from entity states --------------------------------------------------
    def compute(self, event: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
        """The features of `event` from the HGETALL replies of its entities."""
        q = int(event["ts"])
        states = {}
        for entity, reply in raw.items():
            state = parse_state(reply)
            alive = state.touched is not None and q - state.touched < self._ttl[entity]
            states[entity] = state if alive else EMPTY
        return self._computer.compute(event, q, states)


def entity_count(event: Mapping[str, Any], entities: Sequence[Any]) -> str:
    """The apply script's entity count of an event: negated for a restatement, which only
    touches entities that still have state."""
    return str(-len(entities) if isinstance(event, Restated) else len(entities))

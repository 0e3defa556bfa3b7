"""The online store on a Redis Cluster: the layout of `features.online`, split per slot and node.

Every entity hash is already hash-tagged (`{prefix}:{<entity>:<value>}`), and so are the keys
kept beside it (suspension flag, cooldown claims: `features.side_keys`), so an entity and its
side keys share one slot. What a single Redis does in one round trip is split here:

- Reads (HGETALL, GET) go to the node owning each key's slot, pipelined, one connection per
  node, every node's commands written before any reply is read (the blocking client) or sent
  concurrently (`asyncio.gather`, the payment route): one round trip per node involved.
- The apply script's keys must share a slot, so an event is applied by one call per slot its
  entities fall in. Each call keeps its own dedupe marker, in that slot's hourly dedupe hash
  `{prefix}:seen:<hour>:{<tag>}` (`slot_tag` names a tag hashing to the slot), so a replayed
  event is applied at most once per entity, and a call lost halfway (one node down) is applied
  by the replay on the nodes that missed it, not again on the others. Only the call of the
  event's first entity counts it as new (`features.store_script`).
- An error reply that says the script is missing (NOSCRIPT: a node restarted) or the slot moved
  (MOVED/ASK: resharding) loads the script on every master or refreshes the slot map, then
  resends only the commands that failed: the others ran and are not repeated. A node that does
  not answer (connection refused, timeout) marks the slot map stale: it is asked for again
  before the next round trip, at most once a second, so a failover's new map is followed.

Feature values are the single-node store's: an entity's events are applied in the same order
by the same script, and no feature reads two entities' state at once. Connection errors, an
uncovered slot and error replies become `FeatureStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from features.errors import FeatureStoreUnavailable
from features.online import HOUR_MS, OnlineStore, Reading, entity_count
from features.wire import checked, pack, round_trip_async

Command = tuple[Any, ...]
_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For every slot, a short hash tag that maps to it (computed once, about 0.1 s)."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing, n = REDIS_CLUSTER_HASH_SLOTS, 0
    while missing:
        tag = format(n, "x")
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> str:
    return slot_tags()[slot]


def _key_of(command: Command) -> Any:
    """The key a command is routed by (EVALSHA: its first key; every call has one)."""
    return command[3] if command[0] == "EVALSHA" else command[1]


def key_slot_of(key: Any) -> int:
    """The cluster slot of a key."""
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


def _retry_needed(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError | redis.exceptions.AskError)


@dataclass
class _Call:
    """One apply script call being built: its keys (all in one slot) and arguments."""

    keys: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    events: int = 0

    def key_index(self, name: str) -> int:
        if name not in self.index:
            self.keys.append(name)
            self.index[name] = len(self.keys)
        return self.index[name]

    def script_args(self, dedupe_ttl_ms: int) -> list[str]:
        head = [str(len(self.keys)), *self.keys, str(dedupe_ttl_ms), str(self.events)]
        return head + self.args


class _SlotMapWatch:
    """Whether a client's slot map may be out of date: a node did not answer, so its slots
    may have moved to another (a failover). It is then asked for again before the next round
    trip, at most once a second while the cluster does not give a full one."""

    def __init__(self) -> None:
        self.stale = False
        self.asked_at = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if not self.stale or now - self.asked_at < 1.0:
            return False
        self.asked_at = now
        return True


class ClusterOnlineStore(OnlineStore):
    client: redis.cluster.RedisCluster  # type: ignore[assignment]
    async_client: redis.asyncio.cluster.RedisCluster | None  # type: ignore[assignment]

    def seen_key(self, ts: int, slot: int) -> str:  # type: ignore[override]
        """The hash holding the dedupe markers of the events of ts's hour in `slot` (a
        cluster has one per slot: a script's keys share one)."""
        return f"{self.prefix}:seen:{ts // HOUR_MS}:{{{slot_tag(slot)}}}"

    def _first_slot(self, event: Mapping[str, Any]) -> int:
        """The slot whose apply call counts an (enriched) event: its first entity's, or its
        event_id's for an event of no entity (`_slot_calls`)."""
        keys = self._keys_of(event, self._entities_of(event))
        return key_slot_of(keys[0] if keys else str(event["event_id"]))

    # -- applying events -----------------------------------------------------------------------
    def _slot_calls(self, events: Sequence[Mapping[str, Any]], dedupe: bool) -> list[list[str]]:
        """The apply script calls for enriched events, one per slot, each in the format of
        `OnlineStore._batch`, events in order within each."""
        calls: dict[int, _Call] = {}
        for event in events:
            ts, event_id = int(event["ts"]), str(event["event_id"])
            by_slot: dict[int, list[tuple[str, str]]] = {}
            for entity in self._entities_of(event):
                key = self.key(entity, event[self._keys[entity]])
                by_slot.setdefault(key_slot_of(key), []).append((entity, key))
            if not by_slot:
                by_slot[key_slot_of(event_id)] = []
            encoded: dict[str, Any] = {}
            for share, (slot, members) in enumerate(by_slot.items()):
                call = calls.setdefault(slot, _Call())
                marker = call.key_index(self.seen_key(ts, slot))  # so a call has a key
                seen = marker if dedupe else 0
                seen = seen if share == 0 else -seen - 1  # only the first share counts
                before = call.key_index(self.seen_key(ts - HOUR_MS, slot)) if dedupe else 0
                after = call.key_index(self.seen_key(ts + HOUR_MS, slot)) if dedupe else 0
                call.events += 1
                call.args += (str(seen), str(before), str(after), event_id, str(ts))
                call.args.append(entity_count(event, members))
                for entity, key in members:
                    ops = self.event_ops(entity, event, encoded)
                    ttl = str(self.plan.entity_ttl[entity])
                    index = str(call.key_index(key))
                    call.args += (index, self._entity_index[entity], ttl, ttl, str(len(ops) // 2))
                    call.args += ops
        return [call.script_args(self.dedupe_ttl_ms) for call in calls.values()]

    def prepare(
        self, events: Iterable[Mapping[str, Any]], *, dedupe: bool = True
    ) -> list[list[str]]:
        enriched = [self.enrich(event) for event in events]
        return [
            call
            for i in range(0, len(enriched), self.batch_size)
            for call in self._slot_calls(enriched[i : i + self.batch_size], dedupe)
        ]

    def _calls(self, enriched: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        return self._slot_calls(enriched, True)

    def _marker_key(self, enriched: Mapping[str, Any]) -> str:
        """The marker of the share that counts the event (its first entity's slot)."""
        return self.seen_key(int(enriched["ts"]), self._first_slot(enriched))

    def send(self, calls: Sequence[list[str]]) -> int:
        """Run prepared calls, one round trip per node; returns how many events were new."""
        commands = [("EVALSHA", self._sha, *call) for call in calls]
        return sum(int(r) for r in self._round_trip(commands)) if commands else 0

    def seen(self, events: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Whether each event was applied already: its first entity's slot holds its marker."""
        by_key: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            primary = self._first_slot(self.enrich(event))
            by_key.setdefault(self.seen_key(int(event["ts"]), primary), []).append(i)
        commands: list[Command] = []
        rows: list[list[int]] = []
        for key, chunk in by_key.items():
            for j in range(0, len(chunk), 10_000):
                rows.append(chunk[j : j + 10_000])
                commands.append(("HMGET", key, *(str(events[i]["event_id"]) for i in rows[-1])))
        out = [False] * len(events)
        replies = self._round_trip(commands) if commands else []
        for chunk, reply in zip(rows, replies, strict=True):
            for i, mark in zip(chunk, reply, strict=True):
                out[i] = mark is not None
        return out

    # -- a decision ----------------------------------------------------------------------------
    def _apply_commands(self, enriched: Mapping[str, Any]) -> list[Command]:
        """One script call per slot the event's entities fall into."""
        return [("EVALSHA", self._sha, *call) for call in self._slot_calls([enriched], True)]

    def _reading(
        self,
        event: dict[str, Any],
        entities: list[str],
        flags: Sequence[str],
        apply: bool,
        replies: list[Any],
    ) -> Reading:
        """`OnlineStore._reading`, the event's per-slot apply counts summed (one counts it)."""
        reads = len(entities) + len(flags)
        applied = [sum(int(r) for r in replies[reads:])] if apply else []
        return super()._reading(event, entities, flags, apply, replies[:reads] + applied)

    # -- round trips ---------------------------------------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._map, self._map_async = _SlotMapWatch(), _SlotMapWatch()

    def _round_trip(self, commands: Sequence[Command]) -> list[Any]:
        if self._map.due():
            try:
                self.client.nodes_manager.initialize()
                self._map.stale = False
            except _ERRORS:
                pass  # the old map meanwhile; asked again a second later
        replies = self._send(commands)
        retry = [i for i, reply in enumerate(replies) if _retry_needed(reply)]
        if retry:
            try:
                if any(isinstance(replies[i], redis.exceptions.NoScriptError) for i in retry):
                    self.client.script_load(self._source)  # on every master
                if any(isinstance(replies[i], redis.exceptions.AskError) for i in retry):
                    self.client.nodes_manager.initialize()
            except _ERRORS as exc:
                raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
            for i, reply in zip(retry, self._send([commands[i] for i in retry]), strict=True):
                replies[i] = reply
        return checked(replies)

    async def _round_trip_async(self, commands: Sequence[Command]) -> list[Any]:
        assert self.async_client is not None
        if self._map_async.due():
            try:
                await self.async_client.nodes_manager.initialize()
                self._map_async.stale = False
            except _ERRORS:
                pass
        replies = await self._send_async(commands)
        retry = [i for i, reply in enumerate(replies) if _retry_needed(reply)]
        if retry:
            try:
                if any(isinstance(replies[i], redis.exceptions.NoScriptError) for i in retry):
                    await self.async_client.script_load(self._source)
                if any(isinstance(replies[i], redis.exceptions.AskError) for i in retry):
                    await self.async_client.nodes_manager.initialize()
            except _ERRORS as exc:
                raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
            again = await self._send_async([commands[i] for i in retry])
            for i, reply in zip(retry, again, strict=True):
                replies[i] = reply
        return checked(replies)

    def _by_node(self, commands: Sequence[Command], slots: Mapping[int, list[Any]]) -> list[Any]:
        """[(node, [command index, ...]), ...]: each command with the master of its slot."""
        nodes: dict[str, tuple[Any, list[int]]] = {}
        for i, command in enumerate(commands):
            owners = slots.get(key_slot_of(_key_of(command)))
            if not owners:
                raise FeatureStoreUnavailable(f"Redis: no master serves {_key_of(command)}")
            nodes.setdefault(owners[0].name, (owners[0], []))[1].append(i)
        return list(nodes.values())

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        """Every node's commands written on one of its pooled connections, then every reply
        read: the nodes work at once, one round trip each (error replies returned in place)."""
        groups = self._by_node(commands, self.client.nodes_manager.slots_cache)
        replies: list[Any] = [None] * len(commands)
        taken: list[tuple[Any, Any, bool]] = []  # (pool, connection, read to the end)
        try:
            for node, rows in groups:
                pool = self.client.get_redis_connection(node).connection_pool
                conn = pool.get_connection()
                taken.append((pool, conn, False))
                packed = pack([commands[i] for i in rows])
                conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
            for n, (_, rows) in enumerate(groups):
                pool, conn, _ = taken[n]
                for i in rows:
                    try:
                        replies[i] = conn.read_response()
                    except redis.ResponseError as exc:  # an error reply; the stream stays in step
                        replies[i] = exc
                taken[n] = (pool, conn, True)
            return replies
        except _ERRORS as exc:
            self._map.stale |= isinstance(exc, _UNREACHABLE)
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        finally:
            for pool, conn, complete in taken:
                if not complete:  # replies may be left unread on it
                    conn.disconnect()
                pool.release(conn)

    async def _send_async(self, commands: Sequence[Command]) -> list[Any]:
        """`_send` on the event loop: the nodes' round trips run concurrently."""
        client = self.async_client
        assert client is not None
        try:
            await client.initialize()  # the slot map, at the first command (then a no-op)
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        groups = self._by_node(commands, client.nodes_manager.slots_cache)
        try:
            if len(groups) == 1:
                parts = [await self._node_round_trip(groups[0][0], commands)]
            else:
                parts = await asyncio.gather(
                    *(self._node_round_trip(n, [commands[i] for i in rows]) for n, rows in groups)
                )
        except FeatureStoreUnavailable as exc:
            self._map_async.stale |= isinstance(exc.__cause__, _UNREACHABLE)
            raise
        replies: list[Any] = [None] * len(commands)
        for (_, rows), part in zip(groups, parts, strict=True):
            for i, reply in zip(rows, part, strict=True):
                replies[i] = reply
        return replies

    @staticmethod
    async def _node_round_trip(
        node: redis.asyncio.cluster.ClusterNode, commands: Sequence[Command]
    ) -> list[Any]:
        """One node's commands on one of its connections (`features.wire.round_trip_async`)."""
        try:
            conn = node.acquire_connection()
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        try:
            return await round_trip_async(conn, commands, _ERRORS)
        finally:
            node.release(conn)

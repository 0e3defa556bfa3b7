"""Plain Redis keys the engine keeps beside the features (`OnlineStore` inherits these): the
suspension flags and their index (`engine.flags`), the trigger cooldown claims
(`engine.intake`). Each key is named by the caller, from `OnlineStore.key`, so it shares the
hash tag (the Redis Cluster slot) of the entity it is about. Redis errors become
`FeatureStoreUnavailable`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from features.errors import FeatureStoreUnavailable

# A cluster client raises its own errors (an uncovered slot, no node reachable) beside Redis's.
_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)

_CLAIM = """
local last = redis.call('GET', KEYS[1])
local ts, gap = tonumber(ARGV[1]), tonumber(ARGV[2])
if last and ts - tonumber(last) < gap then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(gap, 1) + tonumber(ARGV[3]))
return 1
"""
# How much longer than its cooldown a claim is kept, in wall time: the cooldown is in event
# time, and a pipeline running behind (its events' time passing slower than the clock) must
# still meet it. A claim kept only for the cooldown let a lagging account be decided again.
CLAIM_SLACK_MS = 24 * 3_600_000


_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SideKeys:
    client: redis.Redis

    def set_strings(self, values: Mapping[str, str | None], *, index: str | None = None) -> None:
        """SET each key to its value (DEL where None), pipelined (flags beside the features);
        with `index`, the keys set are also members of that Redis set (and removed with them).
        """
        pipe = self.client.pipeline(transaction=False)
        for key, value in values.items():
            if value is None:
                pipe.delete(key)
                if index is not None:
                    pipe.srem(index, key)
            else:
                pipe.set(key, value)
                if index is not None:
                    pipe.sadd(index, key)
        try:
            pipe.execute()
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc

    def claim(self, key: str, ts: int, gap_ms: int) -> bool:
        """A cooldown in event time, atomically: True (and `ts` kept) when no claim less than
        `gap_ms` older than `ts` stands on `key`; False while one does. The key lives for the
        cooldown plus `CLAIM_SLACK_MS` after the latest claim, in wall time."""
        try:
            slack = str(CLAIM_SLACK_MS)
            return bool(self.client.eval(_CLAIM, 1, key, str(ts), str(gap_ms), slack))
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc

    def held(self, keys: Sequence[str]) -> list[bool]:
        """Whether a claim stands on each of `keys` (one round trip; nothing changed)."""
        if not keys:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return [bool(n) for n in pipe.execute()]
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc

    def unclaim(self, key: str, ts: int) -> None:
        """Withdraw the claim `claim(key, ts, ...)` made (only if it is still that one)."""
        try:
            self.client.eval(_UNCLAIM, 1, key, str(ts))
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc

    def members(self, index: str) -> list[str]:
        """The members of a Redis set (an `index` of `set_strings`)."""
        try:
            found: Any = self.client.smembers(index)
        except _ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)

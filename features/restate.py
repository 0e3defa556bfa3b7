"""Restating a payment's status in the online store, after it was counted.

A scored payment is counted in Redis in the same round trip that reads its features
(`OnlineStore.read_for_decision`), before anyone knows whether it will be charged, so it is
counted as `approved`. When the decision is not to charge it (`decline`, `suspend_account`),
the account, card and IP must learn that a payment was declined: the spec's decline counts and
shares (`account_declines_24h`, `card_declines_24h`, `account_decline_share_7d`) are card
testing's signal, and the approved amounts (`account_amount_mean_30d`, "your usual payment")
must not include a payment that was never charged. Offline, the event log holds the final
status, so without this the model would see declines in training and none in service.

A restatement is applied by the same apply script as an event: a `Restated` event whose ops
are the difference between the payment as counted and as restated, for each primitive whose
filter tells the two apart (its `where` names `status`). Counts and sums are additive, so the
difference is exact: the store ends up as if the payment had been counted declined from the
start (tests/integration/test_restate.py compares the two). A maximum, a distinct set or a
time cannot be taken back, so a spec with such a primitive filtering on `status` cannot be
restated (`blockers`): the service then logs that at start and leaves the counts as they are.

Each restatement is deduplicated like an event (its own marker, `<event_id>#status=<status>`)
and touches only the entities that still hold what it takes back (the script's `nent` is
negated; for each negative op, the head or the payment's bucket must hold at least as much):
an entity that expired, was lost or was evicted and started again meanwhile is left alone, so
no count or sum goes below what was added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import redis

from features.errors import FeatureStoreUnavailable
from features.spec import SpecPlan

FIELD = "status"
ADDITIVE = "cs"  # count, sum


class Restated(dict[str, Any]):
    """An enriched event as restated; `before` is the same event as it was counted."""

    before: Mapping[str, Any]


def restated(enriched: Mapping[str, Any], status: str) -> Restated | None:
    """The restatement of an (enriched) payment to `status`, or None when it already has it."""
    if enriched.get(FIELD) == status:
        return None
    out = Restated(enriched)
    out[FIELD] = status
    out["event_id"] = restatement_id(str(enriched["event_id"]), status)
    out.before = enriched
    return out


def restatement_id(event_id: str, status: str) -> str:
    """The dedupe marker of the restatement of `event_id` to `status`."""
    return f"{event_id}#{FIELD}={status}"


def blockers(plan: SpecPlan) -> list[str]:
    """The primitives that filter on (or keep) `status` and cannot be taken back (not a count
    or sum), as 'entity kind pid'; empty when a payment's status can be restated exactly."""
    return [
        f"{p.entity} {p.kind} {p.pid}"
        for p in plan.primitives
        if p.kind not in ADDITIVE and (p.field == FIELD or any(n == FIELD for n, _ in p.where))
    ]


def delta_ops(counted: list[str], restated_ops: list[str], kinds: Mapping[int, str]) -> list[str]:
    """(primitive id, argument) pairs, flattened, that turn `counted` into `restated_ops` (both
    from `OnlineStore._ops`): the additive primitives' differences; the others are the same on
    both sides (`blockers` is empty)."""
    totals: dict[str, int] = {}
    for sign, ops in ((-1, counted), (1, restated_ops)):
        for i in range(0, len(ops), 2):
            pid = ops[i]
            if kinds[int(pid)] in ADDITIVE:
                totals[pid] = totals.get(pid, 0) + sign * int(ops[i + 1])
    out: list[str] = []
    for pid, value in totals.items():
        if value:
            out += (pid, str(value))
    return out


class _Store(Protocol):
    """What `Restating` uses of the online store."""

    client: Any
    async_client: Any
    restatable: bool

    def enrich(self, event: Mapping[str, Any]) -> dict[str, Any]: ...
    def send(self, calls: Sequence[list[str]]) -> int: ...
    def restate_status(self, event: Mapping[str, Any], status: str) -> bool: ...
    def _marker_key(self, enriched: Mapping[str, Any]) -> str: ...
    def _calls(self, enriched: Sequence[Mapping[str, Any]]) -> list[list[str]]: ...
    def _apply_commands(self, enriched: Mapping[str, Any]) -> list[tuple[Any, ...]]: ...
    def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]: ...
    async def _round_trip_async(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]: ...
    def _restate_commands(self, event: Mapping[str, Any], status: str) -> list[tuple[Any, ...]]: ...


class Restating:
    """The online store's restatements (`features.online.OnlineStore` inherits these): the
    restatement itself, when a payment was counted (its marker), and the count of a payment
    that never was."""

    def counted_at(self: _Store, event: Mapping[str, Any]) -> int | None:
        """When `event` was counted (its marker's time; -1 for a bulk load's marker, which
        keeps none), or None when its marker is not kept (never counted, or long ago)."""
        key = self._marker_key(self.enrich(event))
        try:
            mark = self.client.hget(key, str(event["event_id"]))
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
        if mark is None:
            return None
        text = mark.decode() if isinstance(mark, bytes) else str(mark)
        return -1 if text == "1" else int(text)

    def count_as(self: _Store, event: Mapping[str, Any], status: str) -> bool:
        """Count the payment `event`, which was never counted, with `status`, then mark it as
        restated to `status`: a restatement of it, or a count of it as scored (a retry), then
        changes nothing. Counted meanwhile after all (a late round trip, as approved), it is
        restated instead. False when nothing changed."""
        enriched = {**self.enrich(event), "status": status}
        if self.send(self._calls([enriched])) == 0:  # counted meanwhile (a late round trip)
            return status != "approved" and self.restate_status(event, status)
        if status != "approved":  # an approved payment is never restated
            done = Restated(enriched)  # no ops: its markers only
            done["event_id"] = restatement_id(str(enriched["event_id"]), status)
            done.before = enriched
            self.send(self._calls([done]))
        return True

    def restate_status(self: _Store, event: Mapping[str, Any], status: str) -> bool:
        """Count the payment `event` (as applied before) as `status` instead, in one round
        trip (`features.restate`); False when nothing changed (a restatement already applied,
        the same status, or a spec that cannot be restated)."""
        commands = self._restate_commands(event, status)
        return bool(commands) and _applied(self._round_trip(commands))

    async def restate_status_async(self: _Store, event: Mapping[str, Any], status: str) -> bool:
        """`restate_status` awaiting Redis on the event loop (needs `async_client`)."""
        if self.async_client is None:
            return self.restate_status(event, status)
        commands = self._restate_commands(event, status)
        return bool(commands) and _applied(await self._round_trip_async(commands))

    def _restate_commands(
        self: _Store, event: Mapping[str, Any], status: str
    ) -> list[tuple[Any, ...]]:
        change = restated(self.enrich(event), status) if self.restatable else None
        return self._apply_commands(change) if change is not None else []


def _applied(replies: Sequence[Any]) -> bool:
    return sum(int(r) for r in replies) > 0

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

from collections.abc import Mapping
from typing import Any

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

"""A payment Arbiter decided not to charge is counted as declined in the online store.

The decision's Redis round trip counts the payment as `approved` before it is scored (the
issuer's answer comes later, and the round trip must not wait for the decision). When the
stored decision is `decline` or `suspend_account` the payment is not charged, so the service
restates it as `declined` (`features.restate`), in one more round trip once the decision is
stored (adverse decisions only, a few percent of payments): the account's and the card's
decline counts see it, and its amount leaves the approved sums ("your usual payment"). The
next payment of the account, sent after the answer, reads it so.

What is restated is what was answered: the stored decision, when its append stored a new one and
its own round trip counted the payment (so the restatement has the body and the time that were
counted; a retry's first decision comes back instead, and its body may differ). Two gaps follow,
both rare and both left as counted (approved): of two concurrent requests for one payment, the
decision stored may be the one whose round trip did not count it; and a retry after an append
that failed finds the payment counted already. The restatement's marker makes it happen once,
and the script takes back only what the entities hold. A degraded decision does not restate:
Redis did not answer in time (a late round trip may still have counted the payment, as approved:
it stays so until its outcome is reported). `review` is left as counted: it is held for a
person, not refused (a person who decides not to charge it reports that as an outcome, below). A
restatement that fails (Redis down) is logged and counted as a Redis dependency error, and one
slower than the payment's Redis budget is left to finish in the background; the decision stands
either way, and a payment whose restatement did not apply stays counted as approved (a retry
does not restate it again).

`report` takes the payment's outcome from billing (`POST /v1/payments/outcome`): the issuer's
answer to a payment Arbiter allowed, or a person's to one it held for review. For a payment
counted when it was scored, `declined` restates it as above, once (a second report, or
Arbiter's own decline before it, changes nothing), and `approved` changes nothing. Billing
sends the payment as it was scored: the account and the amount are checked against the stored
decision and the time against the payment's dedupe marker, which keeps the time it was
counted at (`ts` as scored, or the decision's time when it was scored without one); the card
and the IP are taken as sent. A payment decided without Redis (degraded, or a suspended
account's while Redis was down) was not counted: a degraded one's outcome counts it now, with
its status, and a declined one is marked as restated (a retry changes nothing more); a
suspended account's payment is not charged, so it has no outcome to report.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import DecisionNotFound
from engine.metrics import Metrics
from engine.ports import ReadingLike
from engine.records import StoredDecision, payment_differs
from features.errors import FeatureStoreUnavailable, InvalidEvent

log = logging.getLogger("arbiter.service")

UNCHARGED = frozenset({"decline", "suspend_account"})
STATUS = "declined"


class Answered(Protocol):
    """What `due` reads of the service's `Decision`."""

    @property
    def action(self) -> str: ...
    @property
    def replayed(self) -> bool: ...


@dataclass(frozen=True)
class Outcome:
    """What a reported outcome did: `counted` is `restated` (now counted as declined),
    `counted` (a payment that was not counted, now counted with its status) or `unchanged`."""

    payment_id: str
    decision_id: str
    status: str
    counted: str


class Restatements:
    def __init__(self, features: Any, metrics: Metrics) -> None:
        self.features = features
        self.metrics = metrics
        self.enabled = bool(getattr(features, "restatable", False))
        if not self.enabled and hasattr(features, "restatable"):
            log.warning("the feature spec has a maximum, distinct count or time that filters on "
                        "a payment's status: declined payments stay counted as approved "
                        "(features.restate)")  # fmt: skip

    def due(self, decision: Answered, reading: ReadingLike | None) -> bool:
        """Whether the payment of `decision` (the service's `Decision`, as stored) is to be
        restated: a new uncharged decision whose own round trip (`reading`) counted the
        payment, so the restatement has the body and the time that were counted."""
        return (
            self.enabled
            and reading is not None
            and reading.applied
            and not decision.replayed
            and decision.action in UNCHARGED
        )

    def restate(self, event: Mapping[str, Any]) -> None:
        try:
            self.features.restate_status(event, STATUS)
        except FeatureStoreUnavailable as exc:
            self._failed(event, exc)

    async def restate_async(
        self,
        event: Mapping[str, Any],
        within: Callable[[Awaitable[bool]], Awaitable[bool]],
    ) -> None:
        """`restate` on the event loop, within the payment's Redis budget (`within`)."""
        try:
            await within(self.features.restate_status_async(event, STATUS))
        except FeatureStoreUnavailable as exc:
            self._failed(event, exc)

    def _failed(self, event: Mapping[str, Any], exc: Exception) -> None:
        self.metrics.dependency_errors.inc("redis")
        log.warning("payment %s was declined but may stay counted as approved in the features: "
                    "%s", event.get("payment_id"), exc)  # fmt: skip

    def report(
        self,
        stored: StoredDecision | None,
        event: Mapping[str, Any],
        status: str,
        *,
        timed: bool = True,
    ) -> Outcome:
        """Billing's `status` for the scored payment `event` (as counted: `approved`, its
        `pay:<payment_id>` id and its time), decided in `stored`; `timed` when billing sent
        the time (else it is the time the payment was counted at)."""
        payment_id = str(event["payment_id"])
        if stored is None:
            raise DecisionNotFound(f"payment {payment_id} was not scored")
        record = stored.record
        field = payment_differs(record, event["account_id"], event["amount"])
        if field == "account_id":
            raise InvalidEvent(f"account_id is not the account payment {payment_id} was scored "
                               "for", field="account_id")  # fmt: skip
        if field == "amount":
            raise InvalidEvent(f"amount is not the amount payment {payment_id} was scored with",
                               field="amount")  # fmt: skip
        if not self.enabled:
            return Outcome(payment_id, record.decision_id, status, "unchanged")
        at = self.features.counted_at(event)
        if at is not None and at >= 0 and not timed:
            event = {**event, "ts": at}  # scored without a time: the one it was counted at
        if at is not None and at >= 0 and at != event["ts"]:
            raise InvalidEvent(f"ts is not the time payment {payment_id} was scored with "
                               f"({at})", field="ts")  # fmt: skip
        if at is not None:  # counted when scored, as approved
            changed = status == STATUS and self.features.restate_status(event, STATUS)
        elif record.degraded:
            # Decided without Redis: never counted, so counted now, with its outcome (and,
            # declined, marked as restated: a retry of the payment changes nothing more).
            changed = self.features.count_as(event, status)
        else:
            raise InvalidEvent(
                f"payment {payment_id} is not counted at this time: send the ts it was scored "
                "with (outcomes are taken while its dedupe marker is kept, "
                "ARBITER_DEDUPE_TTL_HOURS)",
                field="ts",
            )
        counted = ("restated" if at is not None else "counted") if changed else "unchanged"
        return Outcome(payment_id, record.decision_id, status, counted)

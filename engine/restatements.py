"""A payment Arbiter decided not to charge is counted as declined in the online store.

The decision's Redis round trip counts the payment as `approved` before it is scored (the
issuer's answer comes later, and the round trip must not wait for the decision). When the
decision is `decline` or `suspend_account` the payment is not charged, so the service restates
it as `declined` (`features.restate`), in a round trip of its own that runs while the decision
is being stored: the account's and the card's decline counts see it, and its amount leaves the
approved sums ("your usual payment"), as the offline features of a log with the final status
would have it. The next payment of the account, sent after the answer, reads it so.

Only a first decision restates (a retry's payment was restated by its first decision, and a
retry's body may differ from what was counted). A degraded decision does not: its payment was
not counted. `review` is left as counted: it is held for a person, not refused. A restatement
that fails (Redis down, slower than the payment's Redis budget) is logged and counted as a Redis
dependency error; the decision stands, and the payment stays counted as approved.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.metrics import Metrics
from engine.ports import ReadingLike
from engine.records import DecisionRecord
from features.errors import FeatureStoreUnavailable

log = logging.getLogger("arbiter.service")

UNCHARGED = frozenset({"decline", "suspend_account"})
STATUS = "declined"


class Restatements:
    def __init__(self, features: Any, metrics: Metrics) -> None:
        self.features = features
        self.metrics = metrics
        self.enabled = bool(getattr(features, "restatable", False))
        if not self.enabled and hasattr(features, "restatable"):
            log.warning("the feature spec has a maximum, distinct count or time that filters on "
                        "a payment's status: declined payments stay counted as approved "
                        "(features.restate)")  # fmt: skip

    def due(self, record: DecisionRecord, reading: ReadingLike | None) -> bool:
        """Whether `record`'s payment, counted approved by `reading`, is to be restated."""
        return (
            self.enabled
            and reading is not None
            and reading.applied
            and record.subject_type == "payment"
            and record.action in UNCHARGED
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
        log.warning("payment %s stays counted as approved in the features: %s",
                    event.get("payment_id"), exc)  # fmt: skip

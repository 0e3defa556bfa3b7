"""An objection case as a value: its lifecycle (the statuses, the transitions each action may
make) and the records read back from the store (`Case`, its `CaseEvent`s), and what a
transition asks for (`Step`). `engine.objections.ObjectionDesk` performs the transitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from features.events import format_ts

Outcome = Literal["upheld", "overturned", "modified"]
OPEN = ("received", "acknowledged", "under_review", "awaiting_customer")
# action -> (the statuses it may start from, the status it leads to; None: unchanged)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "acknowledge": (("received",), "acknowledged"),
    "start_review": (("acknowledged",), "under_review"),
    "request_info": (("under_review",), "awaiting_customer"),
    "customer_replied": (("awaiting_customer",), "under_review"),
    "extend": (OPEN, None),
    "decide": (("under_review", "awaiting_customer"), "decided"),
    "close": (("notified",), "closed"),
    "withdraw": (OPEN, "withdrawn"),
    "reject": (("received", "acknowledged", "under_review", "awaiting_customer"), "rejected"),
}
ACTIONS = tuple(TRANSITIONS)


@dataclass(frozen=True)
class CaseEvent:
    at: int
    actor: str
    action: str
    from_status: str | None
    to_status: str
    note: str
    deadline_at: int

    def to_json(self) -> dict[str, Any]:
        return {"at": format_ts(self.at), "actor": self.actor, "action": self.action,
                "from_status": self.from_status, "to_status": self.to_status,
                "note": self.note, "deadline": format_ts(self.deadline_at)}  # fmt: skip


@dataclass(frozen=True)
class Case:
    objection_id: str
    decision_id: str
    account_id: str
    status: str
    jurisdiction: str
    channel: str
    statement: str
    opened_by: str
    received_at: int
    ack_due_at: int
    acknowledged_at: int | None
    deadline_at: int
    extended_at: int | None
    extension_reason: str | None
    outcome: str | None
    new_action: str | None
    review_rationale: str | None
    departed_from_model: bool | None
    decided_by: str | None
    decided_at: int | None
    closed_at: int | None
    updated_at: int
    events: tuple[CaseEvent, ...] = field(default=())

    def overdue(self, now: int) -> bool:
        """Open past its answer deadline, or unacknowledged past the acknowledgement's."""
        if self.status not in OPEN:
            return False
        late_ack = self.status == "received" and now > self.ack_due_at
        return now > self.deadline_at or late_ack

    def to_json(self, now: int) -> dict[str, Any]:
        def ts(ms: int | None) -> str | None:
            return None if ms is None else format_ts(ms)

        return {
            "objection_id": self.objection_id, "decision_id": self.decision_id,
            "account_id": self.account_id, "status": self.status,
            "jurisdiction": self.jurisdiction, "channel": self.channel,
            "statement": self.statement, "opened_by": self.opened_by,
            "received_at": ts(self.received_at), "acknowledge_by": ts(self.ack_due_at),
            "acknowledged_at": ts(self.acknowledged_at), "deadline": ts(self.deadline_at),
            "extended_at": ts(self.extended_at), "extension_reason": self.extension_reason,
            "outcome": self.outcome, "new_action": self.new_action,
            "review_rationale": self.review_rationale,
            "departed_from_model": self.departed_from_model, "decided_by": self.decided_by,
            "decided_at": ts(self.decided_at), "closed_at": ts(self.closed_at),
            "overdue": self.overdue(now), "events": [e.to_json() for e in self.events],
        }  # fmt: skip


@dataclass(frozen=True)
class Step:
    """What a transition asks for, beyond its name: the note is always required."""

    action: str
    actor: str
    note: str
    outcome: Outcome | None = None
    new_action: str | None = None
    departed_from_model: bool | None = None

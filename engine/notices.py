"""The customer notification of an adverse decision: what happened, the reasons in plain
language, how and by when to object. It goes into the outbox in the decision's transaction
(`engine.store`), and the notifier delivers it (docs/notifications.md). The notices about an
objection case (its acknowledgement, its outcome, the remedies left) are worded here too; the
objection desk (`engine.objections`) sends them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.records import DecisionRecord
from features.events import format_ts

OBJECTION_WINDOW_DAYS = 30  # the privacy policy's answer time for a data-rights request
_DAY_MS = 86_400_000

_WHAT = {
    "review": "Your payment {payment} is being reviewed before it is accepted.",
    "decline": "Your payment {payment} was declined.",
    "suspend_account": "Your payment {payment} was declined and your account was suspended.",
}
_WHAT_ACCOUNT = {
    "review": "Your account's recent activity is being reviewed.",
    "suspend_account": "Your account was suspended because of its recent activity.",
}


def notification_of(
    record: DecisionRecord, customer_texts: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The customer notification of an adverse decision: what happened, why, how to object.
    `customer_texts`: the reasons catalogue's words for the customer (config/reasons.yaml
    `rules`), the same the rationale uses; a code it lacks keeps the decision's text."""
    texts = customer_texts or {}
    deadline = record.created_at + OBJECTION_WINDOW_DAYS * _DAY_MS
    return {
        "type": "adverse_decision",
        "decision_id": record.decision_id,
        "account_id": record.account_id,
        "payment_id": record.payment_id,
        "action": record.action,
        "decided_at": format_ts(record.created_at),
        "what_happened": (
            _WHAT.get(record.action, "").format(payment=record.payment_id)
            if record.subject_type == "payment"
            else _WHAT_ACCOUNT.get(record.action, "")
        ),
        "reasons": [{"code": r.code, "text": texts.get(r.code, r.text)} for r in record.reasons],
        "automated": True,
        "how_to_object": (
            "You may object to this automated decision and ask for an explanation of its "
            f"rationale: contact support quoting decision {record.decision_id}. A person will "
            "review the decision."
        ),
        "object_by": format_ts(deadline),
    }


def reinstatement_notice(account_id: str, decision_id: str | None, at: int) -> dict[str, Any]:
    """The customer's notice that a person lifted the account's suspension."""
    return {
        "type": "account_reinstated",
        "account_id": account_id,
        "decision_id": decision_id,  # the decision whose suspension was lifted
        "reinstated_at": format_ts(at),
        "message": (
            "Your account is active again: a person reviewed its suspension and lifted it. "
            "Its payments and traffic are accepted as before."
        ),
    }


_IN_WORDS = {"allow": "accepted", "review": "held for a manual review", "decline": "declined"}
_ACCOUNT_IN_WORDS = {"allow": "active", "review": "under a manual review"}


def acknowledgement(decision_id: str, received_at: int, deadline_at: int) -> str:
    return (
        f"We received your objection to decision {decision_id} on {format_ts(received_at)}. A "
        "person who took no part in the decision will review it, and you will have our answer "
        f"by {format_ts(deadline_at)}."
    )


def remedies(authority: str) -> str:
    return f"If you disagree, you may lodge a complaint with {authority} or seek a judicial remedy."


def objection_outcome(
    *,
    subject_type: str,
    action: str,
    outcome: str | None,
    note: str,
    new_action: str | None,
    reasons: list[str],
    remedies: str,
    still_suspended: bool = False,
    suspended_by: str | None = None,
) -> str:
    """What the customer is told of a decided case: the outcome, what it changes, and (upheld
    or modified) the remedies left and the reasons the decision rests on. `still_suspended`:
    the account is suspended once the case is decided (by `suspended_by`, a decision this
    case does not cover, or an unlifted one): the notice never says the account is active,
    or that a payment may be made again, while it is suspended."""
    subject = "payment" if subject_type == "payment" else "account"
    by = f" by decision {suspended_by}" if suspended_by else ""
    still = (
        f" Your account remains suspended{by}, which this objection does not lift: its "
        "payments are declined until that suspension is lifted, and you may object to that "
        "decision too."
        if still_suspended
        else ""
    )
    why = f" The reasons the decision rests on: {' '.join(reasons)}" if reasons else ""
    if outcome == "overturned":
        if still_suspended:
            after = f"The {subject} decision is withdrawn.{still}"
        elif action == "suspend_account":
            after = "Your account is active again."
        elif subject == "payment":
            after = (
                "The payment decision is withdrawn: you may make the payment again (as a new "
                "payment)."
            )
        else:
            after = "The account decision is withdrawn."
        return f"A reviewer overturned the decision: {note} {after}"
    if outcome == "modified":
        words = _IN_WORDS if subject == "payment" else _ACCOUNT_IN_WORDS
        now = words.get(str(new_action), str(new_action))
        if still_suspended and subject == "account":  # not "now active": it is not
            return f"A reviewer changed the decision: {note}{still}{why} {remedies}"
        lifted = (
            still
            if still_suspended
            else " Your account is active again."
            if action == "suspend_account"
            else ""
        )
        return (
            f"A reviewer changed the decision: the {subject} is now {now}. {note}{lifted}{why} "
            f"{remedies}"
        )
    return (
        "A reviewer examined your objection and upheld the decision. The rationale applied: "
        f"{note}{why} {remedies}"
    )

"""Objection cases: a customer contests an automated decision and a person decides.

    received -> acknowledged -> under_review <-> awaiting_customer -> decided -> notified -> closed
    (extend: the deadline moves once, with a reason and a notice; withdrawn, rejected: end early)

`ObjectionDesk.open` records the customer's statement, channel and jurisdiction against an
adverse decision (one open case per decision) and sets the deadlines from `engine.deadlines`.
`ObjectionDesk.act` performs one transition: each writes the case, an `objection_events` row
(actor, time, note, the deadline after it) and an audit event in one transaction, with what
belongs to it:

* `acknowledge`, `extend`, `reject` queue a notice to the customer in the outbox;
* `decide` (only from `under_review`, never by the person who opened the case; the reviewer's
  rationale and whether they departed from the model are required) queues the outcome notice and
  moves on to `notified` in the same transaction. `overturned` lifts the account's suspension
  (through `engine.accounts`, so it is an audited status change) and records a `not_fraud`
  label event for retraining (`label_events`); `modified` replaces the action by a milder one
  (lifting a suspension if the new action is not one); `upheld` states the rationale applied
  and the remedies left (a complaint to the supervisory authority, the courts).

Errors are `engine.errors`' `ObjectionNotFound`, `ObjectionConflict` (no case possible, or one is
open), `InvalidTransition` (not from this status, or the action's own rules) and
`SameReviewer` (the opener may not decide).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from engine import accounts, audit, outbox
from engine.accounts import AccountState
from engine.cases import ACTIONS, OPEN, TRANSITIONS, Case, CaseEvent, Step
from engine.database import reading, writing
from engine.deadlines import Deadlines
from engine.errors import (
    DecisionNotFound,
    DecisionPurged,
    InvalidTransition,
    ObjectionConflict,
    ObjectionNotFound,
    SameReviewer,
)
from engine.notices import acknowledgement, objection_outcome, remedies
from engine.policy import SEVERITY
from engine.schema import decisions, label_events, objection_events, objections
from features.events import format_ts

NOTICE = "objection_notice"  # the outbox kind of the customers' notices about their case
_CASE_LOCK = 0x4152424F  # "ARBO": advisory lock class of opening a case on a decision


class ObjectionDesk:
    def __init__(
        self,
        engine: sa.Engine,
        deadlines: Deadlines,
        *,
        clock: Callable[[], int],
        on_reinstated: Callable[[str], None] | None = None,
        explain: Callable[[str], list[str]] | None = None,
    ) -> None:
        """`on_reinstated(account_id)` runs after a commit that lifted a suspension (the
        service clears the account's Redis flag with it)."""
        self.engine = engine
        self.deadlines = deadlines
        self.clock = clock
        self.on_reinstated = on_reinstated
        # The customer-facing reasons of a decision (its rationale), for the upheld notice.
        self.explain = explain

    # --- reading ------------------------------------------------------------------------------

    def get(self, objection_id: str) -> Case:
        with reading(self.engine) as conn:
            return self._case(conn, objection_id)

    def for_decision(self, decision_id: str) -> list[Case]:
        return self._cases(objections.c.decision_id == decision_id)

    def for_account(self, account_id: str) -> list[Case]:
        return self._cases(objections.c.account_id == account_id)

    def queue(
        self, *, statuses: Sequence[str] = OPEN, overdue: bool | None = None, limit: int = 200
    ) -> list[Case]:
        """Cases in `statuses`, the nearest deadline first; `overdue` True/False filters."""
        now = self.clock()
        cases = self._cases(objections.c.status.in_(list(statuses)), order_by_deadline=True)
        if overdue is not None:
            cases = [c for c in cases if c.overdue(now) is overdue]
        return cases[:limit]

    # --- opening ------------------------------------------------------------------------------

    def open(
        self, decision_id: str, *, actor: str, statement: str, channel: str, jurisdiction: str
    ) -> Case:
        if jurisdiction not in self.deadlines.jurisdictions:
            known = ", ".join(sorted(self.deadlines.jurisdictions))
            raise ObjectionConflict(f"jurisdiction {jurisdiction!r} is not configured ({known})")
        now = self.clock()
        objection_id = str(uuid.uuid4())
        with writing(self.engine) as conn:
            if conn.dialect.name == "postgresql":  # one open case per decision, even racing
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
                    _CASE_LOCK, sa.func.hashtext(decision_id))))  # fmt: skip
            decision = _decision(conn, decision_id)
            if decision.purged_at is not None:
                raise DecisionPurged(f"decision {decision_id} was purged: no case can be opened")
            if decision.action == "allow":
                raise ObjectionConflict(
                    f"decision {decision_id} allowed the {decision.subject_type}: there is no "
                    "adverse decision to object to"
                )
            open_case = conn.execute(
                sa.select(objections.c.objection_id).where(
                    objections.c.decision_id == decision_id, objections.c.status.in_(OPEN)
                )
            ).first()
            if open_case is not None:
                raise ObjectionConflict(
                    f"decision {decision_id} already has an open objection "
                    f"({open_case.objection_id})"
                )
            deadline = self.deadlines.respond_by(jurisdiction, now)
            conn.execute(
                objections.insert().values(
                    objection_id=objection_id, decision_id=decision_id,
                    account_id=decision.account_id, status="received",
                    jurisdiction=jurisdiction, channel=channel, statement=statement,
                    opened_by=actor, received_at=now,
                    ack_due_at=self.deadlines.acknowledge_by(now), deadline_at=deadline,
                    updated_at=now,
                )
            )  # fmt: skip
            self._event(conn, objection_id, decision.account_id, now, actor, "open", None,
                        "received", f"objection received via {channel}", deadline)  # fmt: skip
            return self._case(conn, objection_id)

    # --- transitions --------------------------------------------------------------------------

    def act(self, objection_id: str, step: Step) -> Case:
        if step.action not in TRANSITIONS:
            raise InvalidTransition(f"unknown action {step.action!r} (known: {', '.join(ACTIONS)})")
        if not step.note.strip():
            raise InvalidTransition(f"{step.action} needs a note (what was done and why)")
        now = self.clock()
        reinstated: str | None = None
        with writing(self.engine) as conn:
            # Lock order (engine.accounts.lock): the account first, then the case's row
            # (concurrent steps wait their turn), then the audit trail.
            owner = conn.execute(
                sa.select(objections.c.account_id).where(objections.c.objection_id == objection_id)
            ).scalar()  # fmt: skip
            if owner is not None:
                accounts.lock(conn, owner)
            case = self._case(conn, objection_id, lock=True)
            starts, to = TRANSITIONS[step.action]
            if case.status not in starts:
                raise InvalidTransition(
                    f"objection {objection_id} is {case.status}: {step.action} is possible only "
                    f"from {' or '.join(starts)}"
                )
            values: dict[str, Any] = {"updated_at": now}
            deadline = case.deadline_at
            if step.action == "acknowledge":
                values["acknowledged_at"] = now
                text = acknowledgement(case.decision_id, case.received_at, case.deadline_at)
                self._notify(conn, case, now, "acknowledged", text)
            elif step.action == "extend":
                deadline = self._extend(case, now, step.note)
                values |= {"deadline_at": deadline, "extended_at": now,
                           "extension_reason": step.note}  # fmt: skip
                self._notify(conn, case, now, "extended",
                             f"We need more time to review your objection: {step.note} We will "
                             f"answer by {format_ts(deadline)}.")  # fmt: skip
            elif step.action == "request_info":
                self._notify(
                    conn,
                    case,
                    now,
                    "information_requested",
                    f"To review your objection we need more from you: {step.note}",
                )
            elif step.action == "reject":
                remedies = self._remedies(case)
                self._notify(
                    conn,
                    case,
                    now,
                    "rejected",
                    f"Your objection could not be taken up: {step.note} {remedies}",
                )
            elif step.action == "decide":
                values |= self._decide(conn, case, step, now)
                if values.get("reinstated"):
                    reinstated = case.account_id
                values.pop("reinstated", None)
            elif step.action == "close":
                values["closed_at"] = now
            if to is not None:
                values["status"] = to
            conn.execute(
                objections.update().where(objections.c.objection_id == objection_id)
                .values(values)
            )  # fmt: skip
            self._event(conn, objection_id, case.account_id, now, step.actor, step.action,
                        case.status, to or case.status, step.note, deadline)  # fmt: skip
            if step.action == "decide":
                self._event(conn, objection_id, case.account_id, now, "engine", "notify",
                            "decided", "notified", "outcome notice queued in the outbox",
                            deadline)  # fmt: skip
                conn.execute(
                    objections.update().where(objections.c.objection_id == objection_id)
                    .values(status="notified")
                )  # fmt: skip
            after = self._case(conn, objection_id)
        if reinstated is not None and self.on_reinstated is not None:
            self.on_reinstated(reinstated)
        return after

    def _extend(self, case: Case, now: int, reason: str) -> int:
        if case.extended_at is not None:
            raise InvalidTransition(f"objection {case.objection_id} was extended already")
        if now > case.deadline_at:
            raise InvalidTransition(
                f"objection {case.objection_id}: the deadline {format_ts(case.deadline_at)} has "
                "passed; an extension must be notified within the first period"
            )
        return self.deadlines.extended(case.jurisdiction, case.received_at)

    def _decide(self, conn: sa.Connection, case: Case, step: Step, now: int) -> dict[str, Any]:
        if step.actor == case.opened_by:
            raise SameReviewer(
                f"{step.actor} opened objection {case.objection_id} and may not decide it: "
                "another reviewer must"
            )
        if step.outcome not in ("upheld", "overturned", "modified"):
            raise InvalidTransition("decide needs an outcome: upheld, overturned or modified")
        if step.departed_from_model is None:
            raise InvalidTransition("decide needs departed_from_model: true or false")
        decision = _decision(conn, case.decision_id)
        new_action = step.new_action
        if step.outcome == "modified":
            if new_action is None or SEVERITY.get(new_action, 9) >= SEVERITY[decision.action]:
                raise InvalidTransition(
                    f"a modified outcome needs new_action milder than {decision.action}"
                )
        elif new_action is not None:
            raise InvalidTransition("new_action goes with a modified outcome only")
        if decision.subject_type == "account" and new_action == "decline":
            raise InvalidTransition("an account is not declined: modify to review or allow")
        lifts = decision.action == "suspend_account" and (
            step.outcome == "overturned" or new_action != "suspend_account"
        ) and step.outcome != "upheld"  # fmt: skip
        reinstated = False
        if lifts:
            state = accounts.read(conn, case.account_id)
            # Only the suspension this decision made: a later one has its own decision.
            if state.status == "suspended" and state.decision_id == case.decision_id:
                _, reinstated = accounts.change(
                    conn, case.account_id, "active", actor=step.actor, at=now,
                    reason=f"objection {case.objection_id} {step.outcome}",
                    decision_id=case.decision_id,  # the one lifted, as a reinstatement says
                    objection_id=case.objection_id,
                )  # fmt: skip
        if step.outcome == "overturned":
            self._label(conn, case, decision, now, step.note)
        after = accounts.read(conn, case.account_id)  # what the notice may say of the account
        text = self._outcome_text(case, decision, step, after)
        self._notify(conn, case, now, step.outcome, text)
        return {"outcome": step.outcome, "new_action": new_action, "decided_at": now,
                "review_rationale": step.note, "decided_by": step.actor,
                "departed_from_model": step.departed_from_model,
                "reinstated": reinstated}  # fmt: skip

    def _label(self, conn: sa.Connection, case: Case, decision: Any, now: int,
               why: str) -> None:  # fmt: skip
        """The not-fraud label an overturn teaches the next model (`arbiter labels export`)."""
        event: dict[str, Any] = {
            "event_id": f"label:objection:{case.objection_id}", "type": "label", "ts": now,
            "account_id": case.account_id, "label": "not_fraud", "source": "objection",
            "reason": why[:500],
        }  # fmt: skip
        if decision.payment_id is not None:
            event["target_event_id"] = f"pay:{decision.payment_id}"
        conn.execute(
            label_events.insert().values(
                event_id=event["event_id"], account_id=case.account_id,
                objection_id=case.objection_id, event=event, created_at=now,
            )
        )  # fmt: skip

    # --- notices ------------------------------------------------------------------------------

    def _notify(self, conn: sa.Connection, case: Case, now: int, what: str, text: str) -> None:
        outbox.enqueue(
            conn, account_id=case.account_id, decision_id=case.decision_id, at=now, kind=NOTICE,
            payload={"type": f"objection_{what}", "objection_id": case.objection_id,
                     "decision_id": case.decision_id, "account_id": case.account_id,
                     "message": text, "sent_at": format_ts(now)},
        )  # fmt: skip

    def _remedies(self, case: Case) -> str:
        return remedies(self.deadlines.rules(case.jurisdiction).authority)

    def _outcome_text(self, case: Case, decision: Any, step: Step,
                      after: AccountState) -> str:  # fmt: skip
        reasons = self.explain(case.decision_id) if self.explain is not None else []
        return objection_outcome(
            subject_type=decision.subject_type, action=decision.action, outcome=step.outcome,
            note=step.note, new_action=step.new_action, reasons=reasons,
            remedies=self._remedies(case), still_suspended=after.status == "suspended",
            suspended_by=after.decision_id,
        )  # fmt: skip

    # --- rows ---------------------------------------------------------------------------------

    def _event(self, conn: sa.Connection, objection_id: str, account_id: str, at: int,
               actor: str, action: str, before: str | None, after: str, note: str,
               deadline: int) -> None:  # fmt: skip
        conn.execute(
            objection_events.insert().values(
                objection_id=objection_id, at=at, actor=actor, action=action,
                from_status=before, to_status=after, note=note, deadline_at=deadline,
            )
        )  # fmt: skip
        audit.append(
            conn, actor=actor, action=f"objection.{action}", subject_type="objection",
            subject_id=objection_id, account_id=account_id, at=at,
            details={"from": before, "to": after, "deadline": deadline},
        )  # fmt: skip

    def _case(self, conn: sa.Connection, objection_id: str, *, lock: bool = False) -> Case:
        query = sa.select(objections).where(objections.c.objection_id == objection_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise ObjectionNotFound(f"no objection {objection_id}")
        events = conn.execute(
            sa.select(objection_events).where(objection_events.c.objection_id == objection_id)
            .order_by(objection_events.c.id)
        )  # fmt: skip
        return Case(**row._asdict(), events=tuple(
            CaseEvent(e.at, e.actor, e.action, e.from_status, e.to_status, e.note, e.deadline_at)
            for e in events
        ))  # fmt: skip

    def _cases(
        self, where: sa.ColumnElement[bool], *, order_by_deadline: bool = False
    ) -> list[Case]:
        order = objections.c.deadline_at if order_by_deadline else objections.c.received_at
        with reading(self.engine) as conn:
            ids = [r.objection_id for r in conn.execute(
                sa.select(objections.c.objection_id).where(where).order_by(order)
            )]  # fmt: skip
            return [self._case(conn, i) for i in ids]


def _decision(conn: sa.Connection, decision_id: str) -> Any:
    row = conn.execute(
        sa.select(decisions.c.action, decisions.c.account_id, decisions.c.payment_id,
                  decisions.c.subject_type, decisions.c.purged_at)
        .where(decisions.c.decision_id == decision_id)
    ).first()  # fmt: skip
    if row is None:
        raise DecisionNotFound(f"no decision {decision_id}", decision_id=decision_id)
    return row

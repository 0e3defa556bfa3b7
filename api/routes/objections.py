"""Objection cases: support opens one for a customer who contests a decision; reviewers move it
through its states (engine/objections.py, docs/objections.md). Every change names its actor
(`X-Arbiter-Actor`) and is recorded in the case's history and the audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ActorDep, DeskDep
from api.schemas import ErrorBody
from engine.objections import OPEN, Step

router = APIRouter(tags=["objections"])
Status = Literal["received", "acknowledged", "under_review", "awaiting_customer", "decided",
                 "notified", "closed", "withdrawn", "rejected"]  # engine/schema.py's  # fmt: skip
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (403, 404, 409, 422)
}


class ObjectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    statement: str = Field(
        min_length=1, max_length=10_000, description="the customer's point of view, in their words"
    )
    channel: Literal["email", "phone", "chat", "letter", "web", "in_person"]
    jurisdiction: str | None = Field(default=None, pattern=r"^[A-Z]{2,8}$",
                                     description="GDPR, CPRA, ... (config/objections.yaml); "
                                     "default: the configured default")  # fmt: skip


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["acknowledge", "start_review", "request_info", "customer_replied", "extend",
                    "decide", "close", "withdraw", "reject"]  # fmt: skip
    note: str = Field(min_length=1, max_length=10_000, description=(
        "what was done and why; for decide: the reviewer's rationale (sent to the customer); "
        "for extend and reject: the reasons (sent to the customer)"))  # fmt: skip
    outcome: Literal["upheld", "overturned", "modified"] | None = None
    new_action: Literal["allow", "review", "decline"] | None = Field(
        default=None, description="a modified decision's new action"
    )
    departed_from_model: bool | None = Field(
        default=None, description="decide: whether the reviewer departed from the model"
    )


@router.post("/v1/decisions/{decision_id}/objections", status_code=201, responses=_ERRORS)
def open_objection(
    decision_id: str, body: ObjectionIn, actor: ActorDep, desk: DeskDep
) -> dict[str, Any]:
    """Open a case for a customer who objects to an adverse decision."""
    jurisdiction = body.jurisdiction or desk.deadlines.default_jurisdiction
    case = desk.open(decision_id, actor=actor, statement=body.statement, channel=body.channel,
                     jurisdiction=jurisdiction)  # fmt: skip
    return case.to_json(desk.clock())


@router.get("/v1/decisions/{decision_id}/objections", responses=_ERRORS)
def decision_objections(decision_id: str, desk: DeskDep) -> list[dict[str, Any]]:
    now = desk.clock()
    return [case.to_json(now) for case in desk.for_decision(decision_id)]


@router.get("/v1/objections/{objection_id}", responses=_ERRORS)
def get_objection(objection_id: str, desk: DeskDep) -> dict[str, Any]:
    return desk.get(objection_id).to_json(desk.clock())


@router.post("/v1/objections/{objection_id}/transitions", responses=_ERRORS)
def transition(
    objection_id: str, body: TransitionIn, actor: ActorDep, desk: DeskDep
) -> dict[str, Any]:
    """Move a case on: acknowledge, start_review, request_info, customer_replied, extend,
    decide (outcome, departed_from_model, new_action for modified), close, withdraw, reject."""
    step = Step(body.action, actor, body.note, body.outcome, body.new_action,
                body.departed_from_model)  # fmt: skip
    return desk.act(objection_id, step).to_json(desk.clock())


@router.get("/v1/objections", responses=_ERRORS)
def queue(
    desk: DeskDep,
    status: Annotated[list[Status] | None, Query()] = None,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """The reviewers' queue: cases in `status` (default: the open ones), nearest deadline first;
    `overdue=true` keeps only those past a deadline."""
    now = desk.clock()
    cases = desk.queue(statuses=status or OPEN, overdue=overdue, limit=limit)
    return [case.to_json(now) for case in cases]

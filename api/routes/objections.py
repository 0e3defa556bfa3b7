"""Objection cases: support opens one for a customer who contests a decision; reviewers move it
through its states (engine/objections.py, docs/objections.md). Every change names its actor
(the name of the caller's API key) and is recorded in the case's history and the audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from api.auth import REVIEWER_ACTIONS
from api.deps import CaseReader, CaseWorker, DeskDep, StoreDep
from api.schemas import ErrorBody
from engine.cases import OPEN, Step
from engine.errors import Forbidden

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
    who: CaseWorker, decision_id: str, body: ObjectionIn, desk: DeskDep
) -> dict[str, Any]:
    """Open a case for a customer who objects to an adverse decision."""
    jurisdiction = body.jurisdiction or desk.deadlines.default_jurisdiction
    if jurisdiction not in desk.deadlines.jurisdictions:
        known = ", ".join(sorted(desk.deadlines.jurisdictions))
        _invalid("jurisdiction", f"{jurisdiction} is not configured (known: {known})")
    case = desk.open(decision_id, actor=who.name, statement=body.statement, channel=body.channel,
                     jurisdiction=jurisdiction)  # fmt: skip
    return case.to_json(desk.clock())


@router.get("/v1/decisions/{decision_id}/objections", responses=_ERRORS)
def decision_objections(
    _: CaseReader, decision_id: str, desk: DeskDep, store: StoreDep
) -> list[dict[str, Any]]:
    store.get_decision(decision_id)  # 404 (410 purged) rather than an empty list
    now = desk.clock()
    return [case.to_json(now) for case in desk.for_decision(decision_id)]


@router.get("/v1/objections/{objection_id}", responses=_ERRORS)
def get_objection(_: CaseReader, objection_id: str, desk: DeskDep) -> dict[str, Any]:
    return desk.get(objection_id).to_json(desk.clock())


@router.post("/v1/objections/{objection_id}/transitions", responses=_ERRORS)
def transition(
    who: CaseWorker, objection_id: str, body: TransitionIn, desk: DeskDep
) -> dict[str, Any]:
    """Move a case on: acknowledge, start_review, request_info, customer_replied, extend,
    decide (outcome, departed_from_model, new_action for modified), close, withdraw, reject."""
    if body.action in REVIEWER_ACTIONS and not who.may(["reviewer"]):
        raise Forbidden(
            f"key '{who.name}' may not {body.action} a case: it needs the role reviewer"
        )
    if body.action == "decide":
        if body.outcome is None:
            _invalid("outcome", "decide needs one: upheld, overturned or modified")
        if body.departed_from_model is None:
            _invalid("departed_from_model", "decide needs it: true or false")
        if (body.outcome == "modified") != (body.new_action is not None):
            _invalid("new_action", "goes with a modified outcome, and only with it")
    elif body.outcome is not None or body.new_action is not None:
        _invalid("outcome" if body.outcome is not None else "new_action",
                 "only a decide step has an outcome")  # fmt: skip
    step = Step(body.action, who.name, body.note, body.outcome, body.new_action,
                body.departed_from_model)  # fmt: skip
    return desk.act(objection_id, step).to_json(desk.clock())


@router.get("/v1/objections", responses=_ERRORS)
def queue(
    _: CaseReader,
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


def _invalid(field: str, message: str) -> NoReturn:
    """A 422 naming the field, in the app's one error body (api/errors.py)."""
    raise RequestValidationError([{"type": "value_error", "loc": ("body", field),
                                   "msg": f"Value error, {message}"}])  # fmt: skip

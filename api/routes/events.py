"""`POST /v1/events`: the event pipeline's door. A batch of activity events goes into the online
store; accounts whose features then cross one of the policy's triggers are re-scored, and an
account-level decision may suspend an account with no payment involved. A retried batch is
counted once (`event_id` is the idempotency key). With Redis unreachable the batch is refused
with 503 and `Retry-After`: the pipeline keeps it and resends it, which is always safe
(docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IngestKey, RuntimeDep
from api.schemas import AccountDecisionOut, ErrorBody, EventsRequest, EventsResponse, ReasonOut
from engine.intake import ingest
from engine.privacy import close_account, reopen_if_active
from engine.records import Decision
from features.events import parse_ts

router = APIRouter(prefix="/v1", tags=["events"])


def account_decision(decision: Decision, triggers: tuple[str, ...] = ()) -> AccountDecisionOut:
    return AccountDecisionOut(
        decision_id=decision.decision_id,
        account_id=decision.account_id,
        action=decision.action,  # type: ignore[arg-type]  # account decisions never decline
        score=decision.score,
        reasons=[ReasonOut(code=r.code, text=r.text) for r in decision.reasons],
        triggers=list(triggers),
        model_version=decision.model_version,
        policy_version=decision.policy_version,
    )


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def ingest_events(_: IngestKey, body: EventsRequest, runtime: RuntimeDep) -> EventsResponse:
    """Apply a batch of events (at most 5,000) and re-score the accounts it triggers. An
    `account_closed` event also starts the account's retention period, and later activity of
    the account ends it (engine/privacy.py)."""
    result = ingest(runtime.service, body.events)
    latest: dict[str, int] = {}
    for event in body.events:  # all valid: `ingest` checked every event
        account, ts = str(event["account_id"]), parse_ts(event["ts"])
        if event.get("type") == "account_closed":
            close_account(runtime.store.database, account, ts)
        else:
            latest[account] = max(ts, latest.get(account, ts))
    reopen_if_active(runtime.store.database, latest)
    return EventsResponse(
        received=result.received,
        applied=result.applied,
        decisions=[account_decision(d, t) for d, t in result.decisions],
        cooling_down=list(result.cooling_down),
    )

"""`POST /v1/payments/score` and `POST /v1/payments/outcome`: the billing system's doors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ScorerKey, ServiceDep
from api.responses import OrjsonResponse
from api.schemas import ErrorBody, OutcomeRequest, OutcomeResponse, ScoreRequest, ScoreResponse
from engine.records import Decision

router = APIRouter(prefix="/v1/payments", tags=["payments"])


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def score_payment(_: ScorerKey, body: ScoreRequest, service: ServiceDep) -> OrjsonResponse:
    """Decide on a payment. `payment_id` is the idempotency key: a retry returns the original
    decision and the payment is counted once in the account's features."""
    # On the event loop: the decision is CPU plus one Redis round trip; the store's group
    # commit is awaited (engine/group_commit.py). The body is built here, already valid
    # against ScoreResponse (the OpenAPI schema), without a second validation.
    decision = await service.score_payment_async(body.model_dump(exclude_none=True))
    return OrjsonResponse(score_body(decision))


@router.post(
    "/outcome",
    response_model=OutcomeResponse,
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def payment_outcome(_: ScorerKey, body: OutcomeRequest, service: ServiceDep) -> OutcomeResponse:
    """Report a scored payment's outcome: `declined` (the issuer refused a payment Arbiter
    allowed, or a reviewer did not charge one held for review) counts it as declined in the
    account's and the card's features, once; `approved` changes nothing. Send the payment's
    fields as they were scored (`ts` too, if it was sent)."""
    fields = body.model_dump(exclude_none=True)
    status = fields.pop("status")
    done = service.report_outcome(fields, status)
    return OutcomeResponse(payment_id=done.payment_id, decision_id=done.decision_id,
                           status=status, counted=done.counted)  # type: ignore[arg-type]  # fmt: skip


def score_body(decision: Decision) -> dict[str, Any]:
    """The answer to billing (ScoreResponse's fields), also `api.fast`'s."""
    return {
        "decision_id": decision.decision_id,
        "action": decision.action,
        "score": decision.score,
        "reasons": [{"code": r.code, "text": r.text} for r in decision.reasons],
        "model_version": decision.model_version,
        "policy_version": decision.policy_version,
        "degraded": decision.degraded,
    }

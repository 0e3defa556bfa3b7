"""`POST /v1/payments/score`: the billing system's door."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServiceDep
from api.schemas import ErrorBody, ReasonOut, ScoreRequest, ScoreResponse

router = APIRouter(prefix="/v1/payments", tags=["payments"])


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def score_payment(body: ScoreRequest, service: ServiceDep) -> ScoreResponse:
    """Decide on a payment. `payment_id` is the idempotency key: a retry returns the original
    decision and the payment is counted once in the account's features."""
    decision = service.score_payment(body.model_dump(exclude_none=True))
    return ScoreResponse(
        decision_id=decision.decision_id,
        action=decision.action,
        score=decision.score,
        reasons=[ReasonOut(code=r.code, text=r.text) for r in decision.reasons],
        model_version=decision.model_version,
        policy_version=decision.policy_version,
        degraded=decision.degraded,
    )

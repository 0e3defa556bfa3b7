"""`GET /v1/decisions/{id}`: a stored decision record, as hashed in the chain. An allow
decision's contributions are derived on this first read (`engine.deferred`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import DeferredDep
from api.schemas import ErrorBody

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


@router.get("/{decision_id}", responses={404: {"model": ErrorBody}})
def get_decision(decision_id: str, deferred: DeferredDep) -> dict[str, Any]:
    stored = deferred.decision(decision_id)
    return {
        **stored.record.to_json(),
        # Contributions of an allow decision, if computed after it (not part of its hash).
        "contributions": stored.contributions,
        "base_value": stored.base_value,
        "seq": stored.seq,
        "prev_hash": stored.prev_hash,
        "hash": stored.hash,
    }

"""`GET /v1/decisions/{id}`: a stored decision record, as hashed in the chain. An allow
decision's contributions are derived on this first read (`engine.deferred`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CaseReader, DeferredDep, RationalesDep, StoreDep
from api.schemas import ErrorBody
from engine import audit

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


@router.get("/{decision_id}", responses={404: {"model": ErrorBody}})
def get_decision(
    who: CaseReader, decision_id: str, deferred: DeferredDep, store: StoreDep
) -> dict[str, Any]:
    stored = deferred.decision(decision_id)
    audit.record(store.database, actor=who.name, action="decision.read",
                 subject_type="decision", subject_id=decision_id,
                 account_id=stored.record.account_id)  # fmt: skip
    return {
        **stored.record.to_json(),
        # Contributions of an allow decision, if computed after it (not part of its hash).
        "contributions": stored.contributions,
        "base_value": stored.base_value,
        "seq": stored.seq,
        "prev_hash": stored.prev_hash,
        "hash": stored.hash,
    }


@router.get("/{decision_id}/rationale", responses={404: {"model": ErrorBody}})
def get_rationale(
    who: CaseReader, decision_id: str, rationales: RationalesDep, verify: bool = False
) -> dict[str, Any]:
    """The decision's rationale: `customer` (what the customer is told: at most four reasons,
    what would have changed the outcome, the data categories used, how and by when to object)
    and `internal` (contributions, base value, thresholds, model and policy versions). With
    `verify=true`, the score and contributions re-derived with the exact model version that
    decided (`verification`). Each read is recorded in the audit trail."""
    return rationales.document(decision_id, actor=who.name, verify=verify)

"""`GET /v1/accounts/{id}`: whether an account is active or suspended, since when, by what."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import StoreDep
from api.schemas import AccountOut
from features.events import format_ts

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("/{account_id}", response_model=AccountOut)
def get_account(account_id: str, store: StoreDep) -> AccountOut:
    state = store.account_status(account_id)
    return AccountOut(
        account_id=state.account_id,
        status=state.status,
        since=format_ts(state.since) if state.since is not None else None,
        decision_id=state.decision_id,
    )

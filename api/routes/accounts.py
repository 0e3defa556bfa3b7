"""`GET /v1/accounts/{id}`: whether an account is active or suspended, since when, by what;
`POST /v1/accounts/{id}/score`: an account-level decision on demand (no payment involved)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import ServiceDep, StoreDep
from api.routes.events import account_decision
from api.schemas import AccountDecisionOut, AccountOut, ErrorBody
from features.events import format_ts

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

AccountId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/{account_id}", response_model=AccountOut)
def get_account(account_id: AccountId, store: StoreDep) -> AccountOut:
    state = store.account_status(account_id)
    return AccountOut(
        account_id=state.account_id,
        status=state.status,
        since=format_ts(state.since) if state.since is not None else None,
        decision_id=state.decision_id,
    )


@router.post(
    "/{account_id}/score",
    response_model=AccountDecisionOut,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def score_account(account_id: AccountId, service: ServiceDep) -> AccountDecisionOut:
    """Decide on the account as it is now: the account model (when one is promoted) and the
    policy's account rules. An adverse decision is recorded, notified and, for
    `suspend_account`, suspends the account. 404 for an account of which nothing is known
    (no activity in the online store, no status in the decision store); 409 for an account
    suspended already."""
    return account_decision(service.score_account(account_id))

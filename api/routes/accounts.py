"""`GET /v1/accounts/{id}`: whether an account is active or suspended, since when, by what;
`POST /v1/accounts/{id}/score`: an account-level decision on demand (no payment involved);
`GET /v1/accounts/{id}/export`: everything Arbiter holds about the account (data-subject access
and portability, engine/privacy.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.deps import (
    AccountReader,
    OpsKey,
    PrivacyKey,
    ReviewerKey,
    RuntimeDep,
    ServiceDep,
    StoreDep,
)
from api.routes.events import account_decision
from api.schemas import AccountDecisionOut, AccountOut, ErrorBody, ReinstateIn
from engine import privacy
from engine.accounts import AccountState
from engine.records import StoredDecision
from engine.store import now_ms
from features.errors import FeatureStoreUnavailable
from features.events import format_ts

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

AccountId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/{account_id}", response_model=AccountOut)
def get_account(_: AccountReader, account_id: AccountId, store: StoreDep) -> AccountOut:
    return _out(store.account_status(account_id))


@router.post(
    "/{account_id}/reinstate",
    response_model=AccountOut,
    responses={409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def reinstate(
    who: ReviewerKey, account_id: AccountId, body: ReinstateIn, runtime: RuntimeDep
) -> AccountOut:
    """Lift a suspension by a reviewer's authority, outside an objection (an objection's
    outcome lifts it too: /v1/objections). Recorded with the reviewer's key name and the
    reason, in the account's status history and the audit trail; the customer is notified
    (`account_reinstated`); the account's payments are scored again at once. 409 for an
    account that is not suspended."""
    state = runtime.store.reinstate(account_id, actor=who.name, reason=body.reason)
    runtime.service.flags.set({account_id: None})  # its payments are scored again at once
    return _out(state)


def _out(state: AccountState) -> AccountOut:
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
def score_account(_: OpsKey, account_id: AccountId, service: ServiceDep) -> AccountDecisionOut:
    """Decide on the account as it is now: the account model (when one is promoted) and the
    policy's account rules. An adverse decision is recorded, notified and, for
    `suspend_account`, suspends the account. 404 for an account of which nothing is known
    (no activity in the online store, no status in the decision store); 409 for an account
    suspended already."""
    return account_decision(service.score_account(account_id))


@router.get("/{account_id}/export", responses={422: {"model": ErrorBody}})
def export_account(who: PrivacyKey, account_id: AccountId, runtime: RuntimeDep) -> dict[str, Any]:
    """One portable JSON document: decisions with their rationales, status changes, objection
    cases, notifications, label events, the audit entries about them, the data categories and
    purposes. The export is itself recorded in the audit trail."""
    rationales = runtime.rationales

    def rationale_of(stored: StoredDecision) -> dict[str, Any] | None:
        if rationales is None:
            return None
        document: dict[str, Any] = rationales.customer_view(stored)
        return document

    categories = rationales.data_categories() if rationales is not None else []
    now = now_ms()
    online: dict[str, Any]
    try:  # the account's aggregates in Redis now (what a decision would read)
        probe = {"type": "account_review", "account_id": account_id, "ts": now}
        values = runtime.service.features.read_for_decision(probe, [], apply=False).features
        online = {"as_of": format_ts(now), "values": dict(values)}
    except FeatureStoreUnavailable as exc:
        online = {"as_of": format_ts(now), "unavailable": exc.message}
    return privacy.export_account(
        runtime.store.database, account_id, decisions_of=runtime.store.decisions_of_account,
        rationale_of=rationale_of, data_categories=categories, actor=who.name, at=now,
        online=online,
    )  # fmt: skip

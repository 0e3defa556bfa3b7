"""Account-level decisions, with no payment involved: on demand (`POST
/v1/accounts/{id}/score`), or after an event batch crossed the policy's triggers or went to a
deny-listed destination (`engine.intake`). `account_record` reads the account's features,
scores them with the account model (when one is promoted), lets the policy's `account` section
decide and returns the record; `DecisionService.score_account` stores and counts it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import AccountNotFound, AccountSuspended
from engine.metrics import elapsed_ms
from engine.reasons import explain, reasons_of
from engine.records import DecisionRecord

if TYPE_CHECKING:
    from engine.service import DecisionService


def account_record(
    service: DecisionService,
    account_id: str,
    event: Mapping[str, Any] | None,
    triggers: tuple[str, ...],
    destinations: tuple[str, ...],
    started: float,
) -> DecisionRecord:
    """The account decision `DecisionService.score_account` describes, not yet stored."""
    now = service.clock()
    policy, model = service.policy, service.account_model
    # What the account looks like now: just after the triggering event (it included), or a
    # probe of the account alone at this instant.
    probe = (
        {**event, "ts": int(event["ts"]) + 1}
        if event is not None
        else {"type": "account_review", "account_id": account_id, "ts": now}
    )
    mark = time.perf_counter()
    reading = service.features.read_for_decision(
        probe, [service.flags.key(account_id)], apply=False
    )
    timings = {"features_ms": elapsed_ms(mark)}
    if (
        event is None
        and service.account_entity in reading.unknown
        and service.store.account_status(account_id).since is None
    ):
        # Neither Redis nor the store has heard of it: no record for a made-up account.
        raise AccountNotFound(f"no activity and no status are known for account {account_id}")
    if service.flags.is_suspended(account_id, reading):
        # The decision behind it: the flag's value, or memory's (a store that is down must
        # not turn "suspended already" into a failed batch).
        flagged = reading.flags[0] if reading.flags else None
        behind = flagged or (service.flags.known or {}).get(account_id)
        if behind is None or behind == "suspended":
            state = service.flags.stored_status(account_id)
            behind = state.decision_id if state is not None else behind
        raise AccountSuspended(
            f"account {account_id} is suspended already (decision {behind})",
            decision_id=behind,
        )
    features = reading.features
    score = contributions = None
    if model is not None:
        mark = time.perf_counter()
        row = model.scorer.vector(features)
        score = model.scorer.score(row)
        timings["model_ms"] = elapsed_ms(mark)
    verdict = policy.decide_account(
        score.probability if score else None, features, account_id, destinations
    )
    codes = list(verdict.reasons)
    if model is not None and score is not None:
        contributions = explain(model, row, score.probability, verdict, codes, timings)
    timings["total_ms"] = elapsed_ms(started)
    record = DecisionRecord(
        decision_id=str(uuid.uuid4()), created_at=now, subject_type="account",
        subject_id=account_id, account_id=account_id, action=verdict.action,
        feature_spec_version=service.feature_spec_version, policy_version=policy.version,
        score=score.probability if score else None, raw_margin=score.margin if score else None,
        model_name=model.name if model else None,
        model_version=model.version if model else None,
        model_run_id=model.run_id if model else None,
        rules_fired=(*(f"trigger:{t}" for t in triggers), *verdict.rules_fired),
        reasons=tuple(reasons_of(codes, service.descriptions, features, service.flag_features)),
        features=features, contributions=contributions.values if contributions else None,
        base_value=contributions.base if contributions else None, timings=timings,
    )  # fmt: skip
    return record

"""The event pipeline's door (`POST /v1/events`): a batch of activity events into the online
store, then an account-level decision for each account whose features now cross one of the
policy's triggers (docs/policy.md, Account decisions)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import AccountSuspended
from engine.records import Decision
from engine.service import DecisionService
from features.errors import FeatureStoreUnavailable, InvalidEvent
from features.events import validate_event

# How long a deny-listed event is remembered as acted on (its claim; the dedupe markers' 48 h,
# plus the claims' own day of slack, `features.side_keys`).
DENY_CLAIM_MS = 48 * 3_600_000


@dataclass(frozen=True)
class Ingested:
    """What `ingest` did with a batch of events."""

    received: int
    applied: int  # new events (the rest had been applied before: retries)
    decisions: tuple[tuple[Decision, tuple[str, ...]], ...]  # account decisions and triggers
    cooling_down: tuple[str, ...] = ()  # triggered accounts re-scored shortly before


def ingest(service: DecisionService, events: Sequence[Mapping[str, Any]]) -> Ingested:
    """Apply a batch of activity events to the online store (all validated first: one bad
    event refuses the batch, nothing applied), then re-score the accounts whose features
    now cross one of the policy's triggers (each at most once per cooldown, in event
    time, so a replay of history behaves as the live stream did)."""
    valid: list[dict[str, Any]] = []
    now = service.clock()
    first: dict[str, int] = {}  # event_id -> its first index in the batch
    for i, raw in enumerate(events):
        try:
            event = validate_event(raw, now)
        except InvalidEvent as exc:
            field = f"events[{i}].{exc.field}" if exc.field else f"events[{i}]"
            raise InvalidEvent(str(exc), event_id=exc.event_id, field=field) from None
        at = first.setdefault(event["event_id"], i)
        if at != i and valid[at] != event:  # the same event twice is a retry: applied once
            raise InvalidEvent(
                f"event {event['event_id']} is in the batch twice with different content "
                f"(events[{at}] and events[{i}]): an event_id names one event",
                event_id=event["event_id"], field=f"events[{i}].event_id",
            )  # fmt: skip
        valid.append(event)
    try:
        applied = service.features.apply_many(valid)
    except FeatureStoreUnavailable:
        service.metrics.dependency_errors.inc("redis")
        raise
    policy = service.policy
    decisions: list[tuple[Decision, tuple[str, ...]]] = []
    cooling: list[str] = []
    # Traffic to a deny-listed destination decides its account whatever the triggers say.
    denied: dict[str, list[tuple[Mapping[str, Any], list[str]]]] = {}
    for event in valid:
        hits = policy.denied_destinations((event.get("dest_number"), event.get("dest_prefix")))
        if hits and event.get("account_id") is not None:
            denied.setdefault(str(event["account_id"]), []).append((event, hits))
    if not policy.model.triggers and not denied:
        return Ingested(len(valid), applied, ())
    latest: dict[str, Mapping[str, Any]] = {}
    for event in valid:
        account_id = event.get("account_id")
        if account_id is None or event["type"] == "label":
            continue
        seen = latest.get(str(account_id))
        if seen is None or int(event["ts"]) >= int(seen["ts"]):
            latest[str(account_id)] = event
    # The account alone, just after its latest event: triggers are account features.
    now_of = [{"type": e["type"], "account_id": a, "ts": int(e["ts"]) + 1}
              for a, e in latest.items()]  # fmt: skip
    current = service.features.read_many(now_of) if now_of else []
    cooldown_ms = policy.model.account.cooldown_seconds * 1000
    for (account_id, last), now_features in zip(latest.items(), current, strict=True):
        account_key = service.features.key(service.account_entity, account_id)
        # Each deny-listed event acts once: marked once its decision is stored, so a resent
        # batch (after a reviewer reinstated the account, say) finds the mark, and one whose
        # decision failed (nothing marked) decides.
        acted = [(f"{account_key}:denied:{event['event_id']}", int(event["ts"]), hits)
                 for event, hits in denied.get(account_id, ())]  # fmt: skip
        marked = service.features.held([key for key, _, _ in acted]) if acted else []
        acted = [c for c, done in zip(acted, marked, strict=True) if not done]
        destinations = sorted({d for _, _, hits in acted for d in hits})
        fired = policy.triggered(now_features) + [f"deny:{d}" for d in destinations]
        if not fired:
            continue
        key = f"{account_key}:rescored"
        claimed = not cooldown_ms or service.features.claim(key, int(last["ts"]), cooldown_ms)
        if not claimed and not destinations:  # a deny-listed destination waits for no cooldown
            cooling.append(account_id)
            continue
        try:
            decision = service.score_account(
                account_id, event=last, triggers=fired, destinations=destinations
            )
        except AccountSuspended:
            _mark(service, acted)
            continue
        except Exception:
            # Not decided: the resent batch must find the account unclaimed.
            with contextlib.suppress(FeatureStoreUnavailable):
                service.features.unclaim(key, int(last["ts"]))
            raise
        _mark(service, acted)
        decisions.append((decision, tuple(fired)))
    return Ingested(len(valid), applied, tuple(decisions), tuple(cooling))


def _mark(service: DecisionService, acted: Sequence[tuple[str, int, list[str]]]) -> None:
    """Mark deny-listed events as acted on (their decision is stored, or the account was
    suspended already). A mark Redis does not take leaves a resend to decide again, which
    finds the account suspended: no harm."""
    for key, ts, _ in acted:
        try:
            service.features.claim(key, ts, DENY_CLAIM_MS)
        except FeatureStoreUnavailable:
            service.metrics.dependency_errors.inc("redis")
            return

"""The decision service: a payment in, a durable decision out.

`DecisionService.score_payment` records the payment as a `payment` event, reads the account's
features as of just before it (the same Redis round trip applies it), scores it with the
champion, lets the policy decide, and stores the decision (with the account's suspension and
the customer's notification) before returning it. `payment_id` is the idempotency key: a
retry gets the stored decision back, and the online store counts the event (`pay:<id>`) once.

What the service needs from the packages below is stated here as small protocols; the app
factory hands it the real ones (`features.online.OnlineStore`, `models.registry.LoadedModel`,
`engine.store.DecisionStore`). The policy, the model and the shadow model are plain
attributes: a reload builds the new object fully, then rebinds the attribute, so a request in
flight finishes on the one it started with.

With a `shadow` model (the registry's `challenger`), a scored payment is also scored by it, on
the same feature vector; its version and score go into the record's `shadow` field and never
change the action. A failing shadow is logged and left out of the record.

The service counts what `/metrics` shows (`engine.metrics.Metrics`): decisions by action (a
retry is not a new decision), the time to decide, and the failures of Redis and the store.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from engine.accounts import AccountState
from engine.errors import ModelNotLoaded, StoreError
from engine.metrics import Metrics
from engine.policy import SEVERITY, Action, Facts, Policy, Verdict, score_action
from engine.reasons import reasons_of, top_features
from engine.records import DecisionRecord, Reason, StoredDecision
from features.errors import FeatureStoreUnavailable
from features.events import format_ts, validate_event
from features.state import numeric

log = logging.getLogger("arbiter.service")

OBJECTION_WINDOW_DAYS = 30  # the privacy policy's answer time for a data-rights request
_DAY_MS = 86_400_000


# --- what the service needs ------------------------------------------------------------------


class FeatureSource(Protocol):
    def read_and_apply(self, event: Mapping[str, Any]) -> tuple[dict[str, Any], bool]: ...


class ScoreLike(Protocol):
    @property
    def probability(self) -> float: ...
    @property
    def margin(self) -> float: ...


class ContributionsLike(Protocol):
    @property
    def values(self) -> dict[str, float]: ...
    @property
    def base(self) -> float: ...


class ScorerLike(Protocol):
    def vector(self, values: Mapping[str, Any]) -> Any: ...
    def score(self, row: Any) -> ScoreLike: ...
    def contributions(self, row: Any) -> ContributionsLike: ...


class ChampionModel(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def scorer(self) -> ScorerLike: ...


class DecisionSink(Protocol):
    def get_by_payment(self, payment_id: str) -> StoredDecision | None: ...
    def account_status(self, account_id: str) -> AccountState: ...
    def append_decision(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> StoredDecision: ...


# --- what it gives back ----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    decision_id: str
    action: Action
    score: float | None
    reasons: tuple[Reason, ...]
    model_version: str | None
    policy_version: str
    degraded: bool
    replayed: bool = False  # a retry: the payment had been decided before

    @classmethod
    def of(cls, stored: StoredDecision) -> Decision:
        r = stored.record
        return cls(r.decision_id, r.action, r.score, r.reasons, r.model_version,
                   r.policy_version, r.degraded, stored.replayed)  # fmt: skip


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DecisionService:
    def __init__(
        self,
        *,
        features: FeatureSource,
        store: DecisionSink,
        policy: Policy,
        model: ChampionModel | None,
        feature_spec_version: str,
        descriptions: Mapping[str, str] | None = None,
        clock: Callable[[], int] = _now_ms,
        shadow: ChampionModel | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.features = features
        self.store = store
        self.policy = policy
        self.model = model
        self.feature_spec_version = feature_spec_version
        self.descriptions = dict(descriptions or {})
        self.clock = clock
        self.shadow = shadow
        self.metrics = metrics if metrics is not None else Metrics()

    def score_payment(self, payment: Mapping[str, Any]) -> Decision:
        """Decide on one payment (fields of a `payment` event without `event_id`, `type` and
        `status`; `ts` defaults to now). Raises `InvalidEvent` for a bad payment and
        `ModelNotLoaded` when there is no model to score with."""
        started = time.perf_counter()
        try:
            decision = self._score_payment(payment, started)
        except StoreError:
            self.metrics.dependency_errors.inc("store")
            raise
        if not decision.replayed:
            self.metrics.decisions.inc(decision.action)
            self.metrics.score_seconds.observe(time.perf_counter() - started)
        return decision

    def _score_payment(self, payment: Mapping[str, Any], started: float) -> Decision:
        now = self.clock()
        event = validate_event(
            {
                **payment,
                "event_id": f"pay:{payment.get('payment_id')}",
                "type": "payment",
                "ts": payment.get("ts") if payment.get("ts") is not None else now,
                # The issuer's answer comes after ours; until a later event says otherwise the
                # payment counts as approved in the account's aggregates.
                "status": "approved",
            }
        )
        payment_id, account_id = str(event["payment_id"]), str(event["account_id"])
        previous = self.store.get_by_payment(payment_id)
        if previous is not None:
            return Decision.of(previous)
        # One of each for the whole request, however many swaps happen meanwhile.
        policy, model, shadow = self.policy, self.model, self.shadow
        base: dict[str, Any] = dict(
            decision_id=str(uuid.uuid4()), created_at=now, subject_type="payment",
            subject_id=payment_id, account_id=account_id, payment_id=payment_id,
            feature_spec_version=self.feature_spec_version, policy_version=policy.version,
        )  # fmt: skip
        if self.store.account_status(account_id).status == "suspended":
            record = DecisionRecord(
                **base, action="decline", reasons=tuple(reasons_of(["ACCOUNT_SUSPENDED"])),
                timings=_timings(started),
            )  # fmt: skip
            return self._append(record)
        if model is None:
            raise ModelNotLoaded("no model is loaded: promote a champion, then check /readyz")
        timings: dict[str, float] = {}
        mark = time.perf_counter()
        try:
            features, _applied = self.features.read_and_apply(event)
        except FeatureStoreUnavailable:
            self.metrics.dependency_errors.inc("redis")
            return self._append(self._degraded(base, event, policy, started))
        timings["features_ms"] = _ms(mark)
        mark = time.perf_counter()
        row = model.scorer.vector(features)
        score = model.scorer.score(row)
        timings["model_ms"] = _ms(mark)
        shadowed = None
        if shadow is not None:
            mark = time.perf_counter()
            shadowed = _shadow_score(shadow, features)
            timings["shadow_ms"] = _ms(mark)
        facts = facts_of(event, features)
        verdict = policy.decide(score.probability, features, facts)
        codes = list(verdict.reasons)
        contributions = None
        if verdict.action != "allow":
            mark = time.perf_counter()
            contributions = model.scorer.contributions(row)
            timings["contributions_ms"] = _ms(mark)
            if score_action(score.probability, verdict.thresholds) != "allow":
                codes += top_features(contributions.values) or ["SCORE"]
        timings["total_ms"] = _ms(started)
        record = DecisionRecord(
            **base, action=verdict.action, score=score.probability, raw_margin=score.margin,
            model_name=model.name, model_version=model.version, model_run_id=model.run_id,
            segment=verdict.segment, rules_fired=verdict.rules_fired,
            reasons=tuple(reasons_of(codes, self.descriptions)), features=features,
            contributions=contributions.values if contributions else None,
            base_value=contributions.base if contributions else None, shadow=shadowed,
            timings=timings,
        )  # fmt: skip
        return self._append(record)

    def _degraded(
        self, base: dict[str, Any], event: Mapping[str, Any], policy: Policy, started: float
    ) -> DecisionRecord:
        """Features cannot be read: the lists still apply, the rest is the policy's fallback."""
        verdict: Verdict = policy.decide(None, {}, facts_of(event, {}))
        action = max(verdict.action, policy.model.degraded_action, key=SEVERITY.__getitem__)
        codes = [*verdict.reasons, "FEATURES_UNAVAILABLE"]
        return DecisionRecord(
            **base, action=action, degraded=True, segment=verdict.segment,
            reasons=tuple(reasons_of(codes, self.descriptions)), timings=_timings(started),
        )  # fmt: skip

    def _append(self, record: DecisionRecord) -> Decision:
        adverse = record.action != "allow"
        stored = self.store.append_decision(
            record,
            suspend=record.action == "suspend_account",
            notification=notification_of(record) if adverse else None,
        )
        return Decision.of(stored)


def _shadow_score(shadow: ChampionModel, features: Mapping[str, Any]) -> dict[str, Any] | None:
    """The challenger's opinion, for the record only. Whatever goes wrong with it must not
    touch the decision, hence the broad catch."""
    try:
        score = shadow.scorer.score(shadow.scorer.vector(features))
    except Exception:
        log.exception("shadow model %s version %s failed to score", shadow.name, shadow.version)
        return None
    return {"version": shadow.version, "score": score.probability}


def facts_of(event: Mapping[str, Any], features: Mapping[str, Any]) -> Facts:
    age = features.get("account_age")
    trial = features.get("account_is_trial")
    country = features.get("account_country")
    plan = features.get("account_plan")
    return Facts(
        account_id=event.get("account_id"),
        ip=event.get("ip"),
        card_fp=event.get("card_fp"),
        bin_country=event.get("bin_country"),
        plan=plan if isinstance(plan, str) else None,
        country=country if isinstance(country, str) else None,
        trial=None if numeric(trial) != numeric(trial) else numeric(trial) == 1.0,
        account_age_days=age / 86_400 if isinstance(age, int | float) and _is_number(age) else None,
    )


_WHAT = {
    "review": "Your payment {payment} is being reviewed before it is accepted.",
    "decline": "Your payment {payment} was declined.",
    "suspend_account": "Your payment {payment} was declined and your account was suspended.",
}


def notification_of(record: DecisionRecord) -> dict[str, Any]:
    """The customer notification of an adverse decision: what happened, why, how to object."""
    deadline = record.created_at + OBJECTION_WINDOW_DAYS * _DAY_MS
    return {
        "type": "adverse_decision",
        "decision_id": record.decision_id,
        "account_id": record.account_id,
        "payment_id": record.payment_id,
        "action": record.action,
        "decided_at": format_ts(record.created_at),
        "what_happened": _WHAT.get(record.action, "").format(payment=record.payment_id),
        "reasons": [{"code": r.code, "text": r.text} for r in record.reasons],
        "automated": True,
        "how_to_object": (
            "You may object to this automated decision and ask for an explanation of its "
            f"rationale: contact support quoting decision {record.decision_id}. A person will "
            "review the decision."
        ),
        "object_by": format_ts(deadline),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _timings(started: float) -> dict[str, float]:
    return {"total_ms": _ms(started)}

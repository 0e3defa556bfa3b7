"""The decision record: what the engine decided, with everything needed to explain it later.

A `DecisionRecord` is built by the decision service and handed to the store; the store gives
back a `StoredDecision`: the record plus its place in the hash chain (`seq`, `prev_hash`,
`hash`) and, for allow decisions, the contributions computed after the fact. Construction
validates the record and brings its JSON fields to canonical form (NaN feature values become
None), so the record read back from the store equals the one written. A `Decision` is what the
service answers with: a stored record as billing and the event pipeline see it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast, get_args

from engine.chain import Deferred, JsonValue, to_json
from engine.errors import InvalidDecisionRecord
from engine.policy import SEVERITY, Action

SubjectType = Literal["payment", "account"]


@dataclass(frozen=True)
class Reason:
    code: str
    text: str


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One decision, immutable once stored; every field below is covered by the hash chain."""

    decision_id: str
    created_at: int  # ms since the epoch, UTC
    subject_type: SubjectType
    subject_id: str  # the payment_id for payments, the account_id for account decisions
    account_id: str
    action: Action
    feature_spec_version: str
    policy_version: str
    payment_id: str | None = None
    score: float | None = None  # probability; None when the model was not consulted
    raw_margin: float | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_run_id: str | None = None
    segment: str | None = None
    rules_fired: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()
    features: Mapping[str, JsonValue] = field(default_factory=dict)
    # Synchronous (adverse decisions) or None; allow decisions get theirs stored later.
    contributions: Mapping[str, float] | None = None
    base_value: float | None = None
    degraded: bool = False
    shadow: Mapping[str, JsonValue] | None = None  # challenger score, never acted on
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"decision {self.decision_id}"
        if self.subject_type not in get_args(SubjectType):
            raise InvalidDecisionRecord(f"{where}: subject_type {self.subject_type!r} is unknown")
        if self.action not in SEVERITY:
            raise InvalidDecisionRecord(f"{where}: action {self.action!r} is unknown")
        expected = self.payment_id if self.subject_type == "payment" else self.account_id
        if self.subject_type == "payment" and not self.payment_id:
            raise InvalidDecisionRecord(f"{where}: a payment decision needs its payment_id")
        if self.subject_id != expected:
            raise InvalidDecisionRecord(
                f"{where}: subject_id {self.subject_id!r} is not the {self.subject_type}'s id"
            )
        if (self.contributions is None) != (self.base_value is None):
            raise InvalidDecisionRecord(f"{where}: contributions and base_value go together")
        for name in ("score", "raw_margin", "base_value"):
            value = getattr(self, name)
            if value is not None:  # a float column reads back as a float, so hash a float
                if not math.isfinite(value):
                    raise InvalidDecisionRecord(f"{where}: {name} is {value}")
                object.__setattr__(self, name, float(value))
        object.__setattr__(self, "created_at", int(self.created_at))
        object.__setattr__(self, "degraded", bool(self.degraded))
        for name in ("features", "contributions", "shadow", "timings"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, to_json(value, f"{where}: {name}"))
        object.__setattr__(self, "rules_fired", tuple(self.rules_fired))
        object.__setattr__(self, "reasons", tuple(self.reasons))

    def to_json(self) -> dict[str, JsonValue]:
        """Every field as plain JSON types: what is stored and what is hashed."""
        out: dict[str, JsonValue] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if name == "reasons":
                value = [{"code": r.code, "text": r.text} for r in self.reasons]
            elif name == "rules_fired":
                value = list(self.rules_fired)
            out[name] = cast(JsonValue, value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DecisionRecord:
        values = {name: data[name] for name in FIELDS}
        values["rules_fired"] = tuple(values["rules_fired"])
        values["reasons"] = tuple(Reason(r["code"], r["text"]) for r in values["reasons"])
        values["degraded"] = bool(values["degraded"])
        return cls(**values)


# The record's fields as stored and hashed; a new field needs a migration and a chain version.
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DecisionRecord))


@dataclass(frozen=True)
class StoredDecision:
    record: DecisionRecord
    seq: int
    prev_hash: str
    hash: str
    deferred: Deferred | None = None  # contributions stored after the decision
    replayed: bool = False  # True when an append found the payment already decided
    purged: bool = False  # a retention tombstone: its personal content removed
    journaled: bool = False  # in the local journal (engine.journal), not yet in the store

    @property
    def decision_id(self) -> str:
        return self.record.decision_id

    @property
    def contributions(self) -> Mapping[str, JsonValue] | None:
        if self.record.contributions is not None:
            return self.record.contributions
        return self.deferred.contributions if self.deferred else None

    @property
    def base_value(self) -> float | None:
        if self.record.base_value is not None:
            return self.record.base_value
        return self.deferred.base_value if self.deferred else None


@dataclass(frozen=True)
class Decision:
    """The decision service's answer: a stored record as billing and the pipeline see it."""

    decision_id: str
    action: Action
    score: float | None
    reasons: tuple[Reason, ...]
    model_version: str | None
    policy_version: str
    degraded: bool
    replayed: bool = False  # a retry: the payment had been decided before
    account_id: str = ""
    # Where this request's time went (ms: the record's `timings`, plus `store_ms` waited for
    # the store); a retry's are the first decision's. For the response's Server-Timing.
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, stored: StoredDecision, **extra: float) -> Decision:
        r = stored.record
        timings = {**r.timings, **extra} if extra else r.timings
        return cls(r.decision_id, r.action, r.score, r.reasons, r.model_version,
                   r.policy_version, r.degraded, stored.replayed, r.account_id,
                   timings)  # fmt: skip


def payment_differs(record: DecisionRecord, account_id: str, amount: float | None) -> str | None:
    """The field (`account_id`, `amount`) in which a payment is not the one `record` decided,
    if any (its amount is known where the record kept its features)."""
    if record.account_id != account_id:
        return "account_id"
    scored = record.features.get("amount") if record.features else None
    if amount is None or not isinstance(scored, (int, float)):
        return None
    return "amount" if round(scored, 6) != round(amount, 6) else None

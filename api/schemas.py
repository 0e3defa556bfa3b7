"""Request and response bodies of the HTTP API. Requests are strict: unknown fields are
refused, so a typo in a billing integration fails loudly instead of being ignored."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.events import (
    MAX_TS_MS,
    MIN_TS_MS,
    address_text,
    ahead_of,
    check_text,
    parse_ts,
)

_ID = Field(min_length=1, max_length=128)
_COUNTRY = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    payment_id: str = Field(min_length=1, max_length=120, description="idempotency key")
    account_id: str = _ID
    # A JSON number: `true` or `"49"` is refused, not read as 1 or 49 (strict).
    amount: float = Field(ge=0.01, le=1_000_000, allow_inf_nan=False, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code")
    card_fp: str = Field(min_length=1, max_length=128, description="card fingerprint")
    bin_country: str = _COUNTRY
    billing_country: str = _COUNTRY
    ip: str = Field(min_length=2, max_length=45)
    ts: int | None = Field(
        default=None, description="epoch ms or ISO 8601 with a time zone; default: now"
    )

    @field_validator("payment_id", "account_id", "card_fp")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_text(value)  # as the event counted from it would: refused here, named

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return address_text(value)
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> int | None:
        if value is None:
            return None
        ts = parse_ts(value)
        if not MIN_TS_MS <= ts < MAX_TS_MS:
            raise ValueError("is outside 2000-01-01..2100-01-01 (epoch milliseconds?)")
        why = ahead_of(ts, time.time_ns() // 1_000_000)  # the service's clock checks it too
        if why is not None:
            raise ValueError(why)
        return ts


class OutcomeRequest(ScoreRequest):
    """A scored payment's outcome: the payment's fields as sent to score, and its status."""

    status: Literal["approved", "declined"] = Field(
        description="the issuer's answer, or a reviewer's for a payment held for review"
    )


class OutcomeResponse(BaseModel):
    payment_id: str
    decision_id: str
    status: Literal["approved", "declined"]
    counted: Literal["restated", "counted", "unchanged"] = Field(
        description="restated: now counted as declined; counted: a payment decided without "
        "Redis, now counted as declined; unchanged: nothing to change (approved, or reported "
        "before)"
    )


class ReasonOut(BaseModel):
    code: str
    text: str


class ScoreResponse(BaseModel):
    decision_id: str
    action: Literal["allow", "review", "decline", "suspend_account"]
    score: float | None = Field(description="probability of fraud; null if not scored")
    reasons: list[ReasonOut]
    model_version: str | None
    policy_version: str
    degraded: bool


MAX_EVENTS = 5_000


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_EVENTS,
        description="activity events (docs/events.md), validated one by one; one bad event "
        "refuses the batch",
    )  # fmt: skip


class AccountDecisionOut(BaseModel):
    decision_id: str
    account_id: str
    action: Literal["allow", "review", "suspend_account"]
    score: float | None = Field(description="account model's probability; null: rules only")
    reasons: list[ReasonOut]
    triggers: list[str] = Field(description="the policy triggers that asked for it (if any)")
    model_version: str | None
    policy_version: str


class EventsResponse(BaseModel):
    received: int
    applied: int = Field(description="new events; the others had been applied before (retries)")
    decisions: list[AccountDecisionOut] = Field(description="account decisions the batch caused")
    cooling_down: list[str] = Field(
        description="accounts that crossed a trigger but were re-scored within the cooldown"
    )


class AccountOut(BaseModel):
    account_id: str
    status: Literal["active", "suspended"]
    since: str | None = Field(description="ISO 8601; null for an account never suspended")
    decision_id: str | None


class ReinstateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=3, max_length=2000,
        description="why the suspension is lifted (recorded with the reviewer's name)",
    )  # fmt: skip


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail

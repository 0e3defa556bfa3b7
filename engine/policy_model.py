"""The ops policy's validated content: the models `config/policy.yaml` is checked against
(pydantic, strict: unknown keys are refused everywhere), one per section. `engine.policy`
parses a file into a `PolicyModel` and decides with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from features.events import is_code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    review: float = Field(ge=0, le=1)
    decline: float = Field(ge=0, le=1)
    suspend_account: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.review <= self.decline <= self.suspend_account:
            raise ValueError("must be ordered: review <= decline <= suspend_account")
        return self


class SegmentWhen(_Strict):
    account_age_days_below: float | None = None
    plan: list[str] | None = None
    country: list[str] | None = None
    trial: bool | None = None


class Segment(_Strict):
    name: str
    when: SegmentWhen
    thresholds: Thresholds


def _not_blank(value: str) -> str:
    if not value.strip():  # an empty destination prefix would match every number
        raise ValueError("an entry cannot be blank")
    return value


def _country(value: str) -> str:
    if not is_code(value, 2):
        raise ValueError("a country is two capital letters (ISO 3166-1), as payments give it")
    return value


_Entry = Annotated[str, AfterValidator(_not_blank)]
_Country = Annotated[str, AfterValidator(_country)]


class AllowLists(_Strict):
    """What can be allow-listed: who pays (account, card) and from where (IP or CIDR). A
    country or a number range is never trusted as such, so those keys are refused here."""

    account: list[_Entry] = []
    ip: list[_Entry] = []
    card: list[_Entry] = []


class Lists(AllowLists):
    """The deny lists: the allow lists' keys, card-issuer countries and destination number
    prefixes (matched against an SMS's or a call's `dest_number` and `dest_prefix`)."""

    bin_country: list[_Country] = []
    destination_prefix: list[_Entry] = []


class AllowDeny(_Strict):
    allow: AllowLists = AllowLists()
    deny: Lists = Lists()


class Condition(_Strict):
    feature: str
    above: float | None = Field(default=None, allow_inf_nan=False)
    below: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_bound(self) -> Condition:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self

    def holds(self, features: Mapping[str, Any]) -> bool:
        value = features.get(self.feature)
        # Missing, NaN, or text (a policy checked without the spec's text features): no hold.
        if value is None or value != value or isinstance(value, str):
            return False
        if self.above is not None:
            return bool(value > self.above)
        return self.below is not None and bool(value < self.below)


class Rule(_Strict):
    name: str
    when: Condition
    action: Literal["review", "decline", "suspend_account"]
    reason: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,47}$")


class AccountThresholds(_Strict):
    review: float = Field(ge=0, le=1)
    suspend_account: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> AccountThresholds:
        if not self.review <= self.suspend_account:
            raise ValueError("must be ordered: review <= suspend_account")
        return self


class AccountRule(_Strict):
    name: str
    when: list[Condition] = Field(min_length=1, description="all must hold")
    action: Literal["review", "suspend_account"]
    reason: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,47}$")


class AccountPolicy(_Strict):
    """Account-level decisions (no payment involved): after a trigger or on demand."""

    thresholds: AccountThresholds = AccountThresholds(review=0.5, suspend_account=0.9)
    rules: list[AccountRule] = []
    # An account re-scored by a trigger is not re-scored by another one for this long (in the
    # events' time).
    cooldown_seconds: int = Field(default=600, ge=0, le=86_400)


class PolicyModel(_Strict):
    name: str
    thresholds: Thresholds
    segments: list[Segment] = []
    lists: AllowDeny = AllowDeny()
    rules: list[Rule] = []
    triggers: list[Condition] = []
    account: AccountPolicy = AccountPolicy()
    degraded_action: Literal["allow", "review", "decline"] = "review"

"""Deadlines of objection cases: when an answer is due, per jurisdiction (`config/objections.yaml`).

`load_deadlines(path)` validates the file into `Deadlines` (unknown keys refused, an invalid
file raises `InvalidDeadlines` naming the entry). Times are epoch ms, UTC: a case received at
`t` must be acknowledged by `acknowledge_by(t)` (business days: Monday to Friday) and answered
by `respond_by(jurisdiction, t)`; one extension moves that to `extended(jurisdiction, t)`, and is
possible only while the original deadline has not passed (the notice of an extension must reach
the customer within the first period).
"""

from __future__ import annotations

import calendar
import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_UTC = dt.UTC


class InvalidDeadlines(Exception):
    code = "invalid_deadlines"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Period(_Strict):
    days: int = Field(default=0, ge=0, le=366)
    months: int = Field(default=0, ge=0, le=24)

    @model_validator(mode="after")
    def _not_empty(self) -> Period:
        if self.days == 0 and self.months == 0:
            raise ValueError("a period needs days or months")
        return self

    def after(self, at_ms: int) -> int:
        start = dt.datetime.fromtimestamp(at_ms / 1000, _UTC)
        if self.months:
            month0 = start.month - 1 + self.months
            year, month = start.year + month0 // 12, month0 % 12 + 1
            day = min(start.day, calendar.monthrange(year, month)[1])
            start = start.replace(year=year, month=month, day=day)
        return int((start + dt.timedelta(days=self.days)).timestamp() * 1000)

    def __str__(self) -> str:
        parts = [f"{self.months} month(s)"] if self.months else []
        return " and ".join([*parts, f"{self.days} day(s)"] if self.days else parts)


class Jurisdiction(_Strict):
    respond: Period
    extension: Period
    authority: str = Field(min_length=1)


class Deadlines(_Strict):
    acknowledge_business_days: int = Field(ge=1, le=60)
    jurisdictions: dict[str, Jurisdiction] = Field(min_length=1)
    default_jurisdiction: str

    @model_validator(mode="after")
    def _default_known(self) -> Deadlines:
        if self.default_jurisdiction not in self.jurisdictions:
            raise ValueError(f"default_jurisdiction {self.default_jurisdiction!r} is not listed")
        return self

    def rules(self, jurisdiction: str) -> Jurisdiction:
        return self.jurisdictions[jurisdiction]

    def acknowledge_by(self, received_ms: int) -> int:
        day = dt.datetime.fromtimestamp(received_ms / 1000, _UTC)
        left = self.acknowledge_business_days
        while left:
            day += dt.timedelta(days=1)
            if day.weekday() < 5:
                left -= 1
        return int(day.timestamp() * 1000)

    def respond_by(self, jurisdiction: str, received_ms: int) -> int:
        return self.rules(jurisdiction).respond.after(received_ms)

    def extended(self, jurisdiction: str, received_ms: int) -> int:
        # Counted from receipt as one period (one month + two = three months, not "the last day
        # of February + two months").
        first, more = self.rules(jurisdiction).respond, self.rules(jurisdiction).extension
        total = Period(days=first.days + more.days, months=first.months + more.months)
        return total.after(received_ms)


def parse_deadlines(raw: Any, source: str = "deadlines") -> Deadlines:
    try:
        return Deadlines.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        entry = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise InvalidDeadlines(f"{source}: {entry}: {err['msg']}") from None


def load_deadlines(path: str | Path) -> Deadlines:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidDeadlines(f"{path} cannot be read: {exc}") from exc
    return parse_deadlines(raw, str(path))

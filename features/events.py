"""The event envelope and the platform's typed event schema.

Every event has an envelope -- `event_id`, `type`, `ts`, `account_id` -- plus the typed fields of
its type (see `docs/events.md`). `ts` is carried as integer epoch milliseconds (UTC) inside
Arbiter; JSON accepts either that integer or an ISO 8601 string with a time zone.

`validate_event` checks one JSON event and returns its normalised form; `validate_frame` checks a
whole log column by column. Both name the event and the field that is wrong. `payment_event`
makes a scored payment the `payment` event the online store counts (`pay:<payment_id>`).

The offline builder does not need this schema: a log of another domain (say card payments with
customer and merchant ids) only needs `event_id`, `type` and `ts`, plus the fields its spec uses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from features.errors import InvalidEvent

# Events outside this range are refused: they are typos or unit mistakes (seconds vs ms).
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_STR = 128
# How far ahead of the receiving server's clock a live event (a payment scored, a batch event)
# may be stamped: clock skew between billing, the pipeline and Arbiter.
MAX_AHEAD_MS = 5 * 60_000


@dataclass(frozen=True)
class Field:
    kind: str  # "str" | "int" | "float" | "bool"
    required: bool = True
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    length: int | None = None  # exact length, in capital letters A-Z (country/currency codes)
    address: bool = False  # an IPv4 or IPv6 address, as written (not rewritten)


ENVELOPE: dict[str, Field] = {
    "event_id": Field("str"),
    "type": Field("str"),
    "ts": Field("int"),
    "account_id": Field("str"),
}

_COUNTRY = Field("str", length=2)
_IP = Field("str", address=True)
_MONEY = Field("float", min=0.0, max=1_000_000.0)

EVENT_TYPES: dict[str, dict[str, Field]] = {
    "account_created": {
        "country": _COUNTRY,
        "plan": Field("str", choices=("payg", "startup", "business", "enterprise")),
        "trial": Field("bool"),
        "verification": Field("str", choices=("none", "email", "phone", "kyc")),
        "ip": _IP,
    },
    "account_closed": {},
    "payment": {
        "payment_id": Field("str"),
        "amount": Field("float", min=0.01, max=1_000_000.0),
        "currency": Field("str", length=3),
        "card_fp": Field("str"),
        "bin_country": _COUNTRY,
        "billing_country": _COUNTRY,
        "ip": _IP,
        "status": Field("str", choices=("approved", "declined")),
    },
    "api_request": {"ip": _IP, "endpoint": Field("str")},
    "login": {"ip": _IP, "success": Field("bool")},
    "call": {
        "dest_number": Field("str"),
        "dest_prefix": Field("str"),
        "dest_country": _COUNTRY,
        "duration_s": Field("float", min=0.0, max=86_400.0),
        "cost": _MONEY,
    },
    "sms": {
        "dest_number": Field("str"),
        "dest_prefix": Field("str"),
        "dest_country": _COUNTRY,
        "segments": Field("int", min=1, max=100),
        "cost": _MONEY,
        "verified": Field("bool"),
    },
    "label": {
        "label": Field("str", choices=("fraud", "not_fraud")),
        "source": Field("str", choices=("chargeback", "review", "objection")),
        "target_event_id": Field("str", required=False),
        "reason": Field("str", required=False),
    },
}

# Every column a platform log may hold, in a stable order (envelope first).
ALL_FIELDS: dict[str, Field] = dict(ENVELOPE)
for _fields in EVENT_TYPES.values():
    for _name, _f in _fields.items():
        ALL_FIELDS.setdefault(_name, _f)


def parse_ts(value: Any) -> int:
    """Epoch milliseconds from an int (ms) or an ISO 8601 string with a time zone."""
    if isinstance(value, bool):
        raise ValueError("must be epoch milliseconds or an ISO 8601 string")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            raise ValueError("ISO timestamps need a time zone (for example a trailing Z)")
        return round(parsed.timestamp() * 1000)
    raise ValueError("must be epoch milliseconds or an ISO 8601 string")


def format_ts(ms: int) -> str:
    """ISO 8601 (UTC, millisecond precision) for epoch milliseconds."""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# NUL and the other control characters (tab and line breaks allowed, for free text): no id or
# code carries them, and PostgreSQL cannot store a NUL in text.
_NUMBERS = (int, float)  # a tuple: `int | float` is built at each call
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_code(value: str, length: int) -> bool:
    """Whether `value` has the shape of an ISO code: `length` capital letters A-Z."""
    return len(value) == length and value.isascii() and value.isalpha() and value.isupper()


def check_text(value: str) -> str:
    """`value` if it is text an id or a field may hold, else ValueError saying why: blank,
    control characters, or a lone surrogate (JSON's `\\ud800` escape: no UTF-8 for it)."""
    if not value or value.isspace():
        raise ValueError("must be a non-empty string")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be Unicode text (a lone surrogate is not)") from None
    return value


def _check(name: str, spec: Field, value: Any) -> Any:
    """The normalised value, or ValueError with a message about the value."""
    if spec.kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        if len(value) > MAX_STR:
            raise ValueError(f"must be at most {MAX_STR} characters")
        check_text(value)
        if spec.length is not None and not is_code(value, spec.length):
            raise ValueError(f"must be {spec.length} capital letters (an ISO code)")
        if spec.choices and value not in spec.choices:
            raise ValueError(f"must be one of {', '.join(spec.choices)}")
        if spec.address and not _is_address(value):
            raise ValueError(_NOT_ADDRESS)
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if spec.kind == "int":
        if name == "ts":
            ts = parse_ts(value)
            if not MIN_TS_MS <= ts < MAX_TS_MS:
                raise ValueError("is outside 2000-01-01..2100-01-01 (epoch milliseconds?)")
            return ts
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        number: float = value
    else:
        if isinstance(value, bool) or not isinstance(value, _NUMBERS):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ValueError("must be finite") from None
        if not math.isfinite(number):  # a float: numpy's ufunc costs a microsecond
            raise ValueError("must be finite")
    if spec.min is not None and number < spec.min:
        raise ValueError(f"must be >= {spec.min:g}")
    if spec.max is not None and number > spec.max:
        raise ValueError(f"must be <= {spec.max:g}")
    return value if spec.kind == "int" else number


def ahead_of(ts: int, now: int) -> str | None:
    """Why a live event's `ts` cannot be taken, if it is stamped more than `MAX_AHEAD_MS`
    after `now`: counted in the future, it would move every window of its entities on and
    hide their recent activity (one payment a month ahead empties its account's counts)."""
    if ts <= now + MAX_AHEAD_MS:
        return None
    minutes = (ts - now) / 60_000
    return (f"is {minutes:,.0f} minutes ahead of this server's clock (at most "
            f"{MAX_AHEAD_MS // 60_000} allowed for clock skew)")  # fmt: skip


def validate_event(raw: Mapping[str, Any], now: int | None = None) -> dict[str, Any]:
    """The normalised event (`ts` as epoch ms) or `InvalidEvent` naming the event and field;
    with `now` (a live door's clock), a `ts` too far ahead of it is refused (`ahead_of`)."""
    event_id = raw.get("event_id")
    label = event_id if isinstance(event_id, str) and event_id else "<no event_id>"
    if not label.isprintable():  # control characters, a lone surrogate: escaped
        label = repr(label)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:  # a list or a dict: unhashable
        known = ", ".join(sorted(EVENT_TYPES))
        # Only a string is echoed (the body screen has looked at strings for card numbers).
        what = f"unknown type {kind!r}" if isinstance(kind, str) else "must be a string"
        raise InvalidEvent(
            f"event {label}: field 'type': {what} (known: {known})",
            event_id=event_id if isinstance(event_id, str) else None,
            field="type",
        )
    fields = {**ENVELOPE, **EVENT_TYPES[kind]}
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        value = raw.get(name)
        if value is None:
            if spec.required:
                raise InvalidEvent(
                    f"event {label} ({kind}): field '{name}' is required",
                    event_id=event_id,
                    field=name,
                )
            continue
        try:
            out[name] = _check(name, spec, value)
        except ValueError as exc:
            raise InvalidEvent(
                f"event {label} ({kind}): field '{name}' {exc}", event_id=event_id, field=name
            ) from None
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise InvalidEvent(
            f"event {label} ({kind}): unknown field '{unknown[0]}' for type {kind}",
            event_id=event_id,
            field=unknown[0],
        )
    if now is not None:
        why = ahead_of(out["ts"], now)
        if why is not None:
            raise InvalidEvent(f"event {label} ({kind}): field 'ts' {why}", event_id=event_id,
                               field="ts")  # fmt: skip
    return out


def payment_event(payment: Mapping[str, Any], now: int) -> dict[str, Any]:
    """A payment (the score request's fields) as the `payment` event it is counted as
    (`ts` defaults to `now`, and may be at most `MAX_AHEAD_MS` after it); `InvalidEvent` names
    a bad field."""
    ts = payment.get("ts")
    return validate_event({
        **payment, "event_id": f"pay:{payment.get('payment_id')}", "type": "payment",
        "ts": ts if ts is not None else now,
        # The issuer's answer comes after ours; until it is reported (or ours is to refuse)
        # the payment counts as approved in the account's aggregates.
        "status": "approved",
    }, now)  # fmt: skip


def validate_frame(frame: pd.DataFrame) -> None:
    """Check a platform log column by column; `InvalidEvent` names the first bad event."""
    for name in ENVELOPE:
        if name not in frame.columns:
            raise InvalidEvent(f"event log: column '{name}' is missing", field=name)

    def fail(mask: np.ndarray, name: str, why: str) -> None:
        row = int(np.flatnonzero(mask)[0])
        event_id = str(frame["event_id"].iloc[row])
        kind = frame["type"].iloc[row]
        raise InvalidEvent(
            f"event {event_id} ({kind}): field '{name}' {why}", event_id=event_id, field=name
        )

    types = frame["type"].to_numpy(dtype=object)
    unknown = ~np.isin(types, list(EVENT_TYPES))
    if unknown.any():
        fail(unknown, "type", f"unknown type {types[unknown][0]!r}")
    for name in ("event_id", "account_id"):
        missing = frame[name].isna().to_numpy()
        if missing.any():
            fail(missing, name, "is required")
    ts = frame["ts"].to_numpy(dtype=np.int64)
    bad_ts = (ts < MIN_TS_MS) | (ts >= MAX_TS_MS)
    if bad_ts.any():
        fail(bad_ts, "ts", "is outside 2000-01-01..2100-01-01")
    dup = frame["event_id"].duplicated().to_numpy()
    if dup.any():
        fail(dup, "event_id", "is a duplicate")
    for kind, fields in EVENT_TYPES.items():
        of_kind = types == kind
        if not of_kind.any():
            continue
        for name, spec in fields.items():
            if name not in frame.columns:
                if spec.required:
                    fail(of_kind, name, "is required (column missing)")
                continue
            column = frame[name]
            present = column.notna().to_numpy()
            if spec.required and (of_kind & ~present).any():
                fail(of_kind & ~present, name, "is required")
            rows = of_kind & present
            if rows.any():
                _check_column_type(column, rows, name, spec, fail)
            if spec.choices:
                bad = of_kind & present & ~column.isin(spec.choices).to_numpy()
                if bad.any():
                    fail(bad, name, f"must be one of {', '.join(spec.choices)}")
            if spec.address and rows.any():
                wrong = {v for v in column[rows].unique() if not _is_address(str(v))}
                if wrong:
                    fail(rows & column.isin(wrong).to_numpy(), name, _NOT_ADDRESS)
            if spec.kind in ("int", "float") and (spec.min is not None or spec.max is not None):
                values = column.to_numpy(dtype=float, na_value=np.nan)
                low = spec.min if spec.min is not None else -np.inf
                high = spec.max if spec.max is not None else np.inf
                bad = of_kind & present & ((values < low) | (values > high))
                if bad.any():
                    fail(bad, name, f"must be within [{low:g}, {high:g}]")


_NOT_ADDRESS = "must be an IPv4 or IPv6 address"


def _is_address(value: str) -> bool:
    try:
        address_text(value)
    except ValueError:
        return False
    return True


# Addresses repeat (an account's payments come from a few), and a parse costs microseconds:
# each is parsed once, up to 65,536 of them (an invalid one is not kept: it raises again).
parse_address = lru_cache(maxsize=65_536)(ipaddress.ip_address)


@lru_cache(maxsize=65_536)
def address_text(value: str) -> str:
    """The address's one text form ("::FFFF:1.2.3.4" -> "::ffff:1.2.3.4"); ValueError if
    `value` is not an IPv4 or IPv6 address."""
    return str(parse_address(value))


_TYPE_NAMES = {"str": "a string", "bool": "true or false", "int": "an integer", "float": "a number"}
_INFERRED = {
    "str": ("string",),
    "bool": ("boolean",),
    "int": ("integer",),
    "float": ("floating", "integer", "mixed-integer-float", "decimal"),
}


def _check_column_type(
    column: pd.Series, rows: np.ndarray, name: str, spec: Field, fail: Any
) -> None:
    """The present values of one event type's field have the field's type and length."""
    values = column[rows]
    if pd.api.types.infer_dtype(values, skipna=True) not in _INFERRED[spec.kind]:
        if spec.kind == "str":
            ok = values.map(lambda v: isinstance(v, str))
        elif spec.kind == "bool":
            ok = values.map(lambda v: isinstance(v, bool | np.bool_))
        else:
            ok = values.map(
                lambda v: (
                    isinstance(v, int | float | np.integer | np.floating)
                    and not isinstance(v, bool | np.bool_)
                )
            )
        bad = np.zeros(len(column), dtype=bool)
        bad[np.flatnonzero(rows)] = ~ok.to_numpy(dtype=bool)
        if bad.any():
            fail(bad, name, f"must be {_TYPE_NAMES[spec.kind]}")
    if spec.kind == "str":
        lengths = values.str.len().to_numpy()
        if spec.length is not None:
            wrong, why = lengths != spec.length, f"must be {spec.length} characters"
        else:
            wrong, why = (lengths < 1) | (lengths > MAX_STR), f"must be 1..{MAX_STR} characters"
        if wrong.any():
            bad = np.zeros(len(column), dtype=bool)
            bad[np.flatnonzero(rows)[wrong]] = True
            fail(bad, name, why)

"""The canonical form of a decision record and the hash chain over it.

Canonical JSON: keys sorted, no whitespace, UTF-8, floats as Python's `repr` (the shortest text
that reads back to the same double), NaN as null, infinities refused (JSON has none, and turning
them into null would falsify the record). `to_json` brings any value to that form once, before
anything is stored or hashed, so a record read back hashes to the same digest.

    hash(n) = sha256(canonical({...record n's fields..., "seq": n, "prev_hash": hash(n - 1)}))

with `prev_hash` of the first record `GENESIS`. Contributions computed after the fact (allow
decisions) are bound to their decision's hash instead of being chained themselves:

    contributions_hash = sha256(canonical({"decision_id", "decision_hash", "contributions",
                                           "base_value", "computed_at"}))
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from engine.errors import InvalidDecisionRecord

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

GENESIS = "0" * 64


def to_json(value: object, where: str) -> JsonValue:
    """`value` as plain JSON types; `where` names it in the error (e.g. `features.amount`)."""
    kind = type(value)
    if kind is dict:  # the common case (a record's features): plain values without recursion
        plain: dict[str, JsonValue] = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            kind_of = type(item)
            if type(key) is not str:
                break  # the general path below names the key
            if kind_of is float:
                if item != item:
                    plain[key] = None
                    continue
                if item in _INFINITIES:
                    break
                plain[key] = item
            elif kind_of is str or kind_of is int or item is None or kind_of is bool:
                plain[key] = item
            else:
                plain[key] = to_json(item, f"{where}.{key}")
        else:
            return plain
    return _to_json(value, where)


_INFINITIES = (math.inf, -math.inf)
# Tuples: a union such as `bool | str` is built at each call.
_PLAIN = (bool, str)
_SEQUENCES = (list, tuple)


def _to_json(value: object, where: str) -> JsonValue:
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isinf(number):
            raise InvalidDecisionRecord(f"{where} is {number}: JSON cannot hold an infinity")
        return number
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidDecisionRecord(f"{where}: key {key!r} is not a string")
            out[key] = to_json(item, f"{where}.{key}")
        return out
    if isinstance(value, _SEQUENCES):
        return [to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    item_of = getattr(value, "item", None)  # a numpy scalar
    if callable(item_of):
        return to_json(item_of(), where)
    raise InvalidDecisionRecord(f"{where}: a {type(value).__name__} is not a JSON value")


def canonical(value: JsonValue) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _digest(value: JsonValue) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()


# The digest of any JSON value in canonical form (the audit trail's links use it too).
digest = _digest


def decision_hash(fields: Mapping[str, JsonValue], seq: int, prev_hash: str) -> str:
    return _digest({**fields, "seq": seq, "prev_hash": prev_hash})


def contributions_hash(
    decision_id: str,
    decision_hash: str,
    contributions: Mapping[str, JsonValue],
    base_value: float,
    computed_at: int,
) -> str:
    return _digest(
        {
            "decision_id": decision_id,
            "decision_hash": decision_hash,
            "contributions": dict(contributions),
            "base_value": base_value,
            "computed_at": computed_at,
        }
    )


@dataclass(frozen=True)
class Deferred:
    """Contributions stored after their decision, as read back."""

    contributions: Mapping[str, JsonValue]
    base_value: float
    computed_at: int
    hash: str


@dataclass(frozen=True)
class Link:
    """One stored record as the chain sees it."""

    decision_id: str
    seq: int
    fields: Mapping[str, JsonValue]
    prev_hash: str
    hash: str
    deferred: Deferred | None = None
    purged: bool = False  # a retention tombstone: linked, its content removed


@dataclass(frozen=True)
class ChainBreak:
    """The first record at which the chain does not hold, and why."""

    decision_id: str
    seq: int
    why: str

    def __str__(self) -> str:
        return f"decision {self.decision_id} (seq {self.seq}): {self.why}"


TOMBSTONE = "purged"
_EMPTY: dict[str, JsonValue] = {
    "account_id": TOMBSTONE, "score": None, "raw_margin": None,
    "segment": None, "rules_fired": [], "reasons": [], "features": {}, "contributions": None,
    "base_value": None, "shadow": None, "timings": {},
}  # fmt: skip


def is_tombstone(decision_id: str, fields: Mapping[str, JsonValue]) -> bool:
    """Whether a record holds exactly what retention leaves of one (nothing personal)."""
    payment, subject = fields.get("payment_id"), fields.get("subject_id")
    kept = (subject, payment) in ((TOMBSTONE, None), (f"{TOMBSTONE}:{decision_id}",) * 2)
    return kept and all(fields.get(k) == v for k, v in _EMPTY.items())


def first_break(links: Iterable[Link], *, expected_seq: int = 1) -> ChainBreak | None:
    """Walk `links` in seq order from `expected_seq`; the first record that breaks, or None.

    A record breaks the chain when its seq is not the next one (a record before it is missing),
    its prev_hash is not the previous record's hash (one was removed, inserted or rewritten with
    its hash), its own hash does not match its content (a field was changed), or its deferred
    contributions do not match their hash or belong to another version of the record. A
    tombstone (retention purged its content) is checked for its links only.
    """
    prev_hash = GENESIS
    for link in links:
        if link.seq != expected_seq:
            why = f"seq {link.seq} follows seq {expected_seq - 1}: a record is missing"
            return ChainBreak(link.decision_id, link.seq, why)
        if link.prev_hash != prev_hash:
            why = "prev_hash is not the hash of the record before it"
            return ChainBreak(link.decision_id, link.seq, why)
        if link.purged and not is_tombstone(link.decision_id, link.fields):
            why = "marked purged but still holds content (only retention may purge a record)"
            return ChainBreak(link.decision_id, link.seq, why)
        try:
            digest = None if link.purged else decision_hash(link.fields, link.seq, link.prev_hash)
        except (ValueError, TypeError) as exc:  # NaN, bytes: no JSON, no record's content
            why = f"content that no record holds ({exc})"
            return ChainBreak(link.decision_id, link.seq, why)
        if digest is not None and digest != link.hash:
            why = "hash does not match the record's content (a field was changed)"
            return ChainBreak(link.decision_id, link.seq, why)
        deferred = link.deferred
        if deferred is not None and deferred.hash != contributions_hash(
            link.decision_id, link.hash, deferred.contributions, deferred.base_value,
            deferred.computed_at,
        ):  # fmt: skip
            why = "the contributions stored later do not match their hash"
            return ChainBreak(link.decision_id, link.seq, why)
        prev_hash = link.hash
        expected_seq += 1
    return None

"""An entity's online state as read from Redis, and the features computed from it.

`parse_state` turns one HGETALL reply (layout in `features.online`) into an `EntityState`;
`FeatureComputer` compiles the spec once into one small function per feature, so a request pays
only for the arithmetic of its features. The semantics mirror `features.offline` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.spec import Feature, SpecPlan, encode_value

SEP = "\x1f"


_NUMBERS = (bool, int, float)  # a tuple: `bool | int | float` is built at each call


def numeric(value: Any) -> float:
    """Mirror of the offline `numeric`: bools and numbers as floats, numeric text parsed."""
    if isinstance(value, _NUMBERS):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


@dataclass
class EntityState:
    """A parsed entity hash."""

    touched: int | None = None
    buckets: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    head: dict[int, int] = field(default_factory=dict)
    distinct: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)
    last: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    first: dict[int, int] = field(default_factory=dict)
    value: dict[int, tuple[int, str, int | None, str | None]] = field(default_factory=dict)


EMPTY = EntityState()


def _pair(text: str) -> tuple[int, int | None]:
    last, _, prev = text.partition(",")
    return int(last), int(prev) if prev else None


def _items(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(";"):
        left, _, right = item.partition("=")
        out.append((int(left), int(right)))
    return out


def parse_state(raw: Mapping[bytes, bytes] | Sequence[bytes]) -> EntityState:
    """An entity hash, from HGETALL as a dict or as the flat [field, value, ...] reply."""
    state = EntityState()
    pairs = raw.items() if isinstance(raw, Mapping) else zip(raw[::2], raw[1::2], strict=True)
    for k, v in pairs:
        name = k.decode()
        head = name[0]
        if head.isdigit():
            state.buckets[int(name)] = _items(v.decode())
        elif head == "d":
            pid, _, _value = name[1:].partition(":")
            state.distinct.setdefault(int(pid), []).append(_pair(v.decode()))
        elif name == "t":
            state.touched = int(v)
        elif name == "h":
            state.head = dict(_items(v.decode()))
        elif head == "l":
            state.last[int(name[1:])] = _pair(v.decode())
        elif head == "f":
            state.first[int(name[1:])] = int(v)
        elif head == "v":
            parts = v.decode().split(SEP)
            prev_t = int(parts[2]) if len(parts) > 2 else None
            prev_v = parts[3] if len(parts) > 2 else None
            state.value[int(name[1:])] = (int(parts[0]), parts[1], prev_t, prev_v)
    return state


def window_total(state: EntityState, pid: int, q: int, window: int, hop: int) -> list[int]:
    """The bucket values of a primitive inside the window ending strictly before q."""
    first_bucket = (q - window) // hop
    parts = [v for b, v in state.buckets.get(pid, ()) if b >= first_bucket]
    t = state.touched
    if pid in state.head and t is not None and t < q and t // hop >= first_bucket:
        parts.append(state.head[pid])
    return parts


def _effective(pair: tuple[int, int | None], q: int) -> int | None:
    """The latest time strictly before q of a "last[,prev]" pair."""
    last, prev = pair
    return last if last < q else prev


# A compiled feature: (event, q, states by entity, values so far) -> value
Compute = Callable[[Mapping[str, Any], int, Mapping[str, EntityState], Mapping[str, Any]], Any]


def _aggregate(f: Feature, scale: int) -> Compute:
    entity, pids, w, hop = f.definition.entity or "", f.prims, f.window, f.hop
    nothing: Any = None if f.kind == "last_value" else math.nan
    inner: Callable[[EntityState, int], Any]
    if f.kind == "count":

        def inner(s: EntityState, q: int) -> Any:
            return float(sum(window_total(s, pids[0], q, w, hop)))

    elif f.kind == "sum":

        def inner(s: EntityState, q: int) -> Any:
            return sum(window_total(s, pids[0], q, w, hop)) / scale

    elif f.kind == "mean":

        def inner(s: EntityState, q: int) -> Any:
            count = sum(window_total(s, pids[1], q, w, hop))
            total = sum(window_total(s, pids[0], q, w, hop)) / scale
            return total / count if count else math.nan

    elif f.kind == "max":

        def inner(s: EntityState, q: int) -> Any:
            parts = window_total(s, pids[0], q, w, hop)
            return max(parts) / scale if parts else math.nan

    elif f.kind == "share":

        def inner(s: EntityState, q: int) -> Any:
            base = sum(window_total(s, pids[1], q, w, hop))
            return sum(window_total(s, pids[0], q, w, hop)) / base if base else math.nan

    elif f.kind == "distinct":

        def inner(s: EntityState, q: int) -> Any:
            start = ((q - w) // hop) * hop
            n = 0
            for last, prev in s.distinct.get(pids[0], ()):
                t = last if last < q else prev
                if t is not None and t >= start:
                    n += 1
            return float(n)

    elif f.kind == "time_since_last":

        def inner(s: EntityState, q: int) -> Any:
            pair = s.last.get(pids[0])
            t = _effective(pair, q) if pair else None
            return (q - t) / 1000.0 if t is not None else math.nan

    elif f.kind == "time_since_first":

        def inner(s: EntityState, q: int) -> Any:
            first = s.first.get(pids[0])
            return (q - first) / 1000.0 if first is not None and first < q else math.nan

    elif f.kind == "last_value":

        def inner(s: EntityState, q: int) -> Any:
            item = s.value.get(pids[0])
            if item is None:
                return None
            last_t, last_v, _prev_t, prev_v = item
            return last_v if last_t < q else prev_v

    else:
        raise AssertionError(f"unhandled kind {f.kind}")

    def run(
        event: Mapping[str, Any], q: int, states: Mapping[str, EntityState], values: Any
    ) -> Any:
        state = states.get(entity)
        return nothing if state is None else inner(state, q)

    return run


def _per_event(f: Feature) -> Compute:
    d = f.definition
    ref_a, ref_b = d.a or "", d.b or ""

    def refs(event: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[Any, Any]:
        # a and b name an earlier feature or, failing that, an event field.
        a = values[ref_a] if ref_a in values else event.get(ref_a)
        b = values[ref_b] if ref_b in values else event.get(ref_b)
        return a, b

    if f.kind == "field":
        name = d.field or ""
        return lambda event, q, states, values: numeric(event.get(name))
    if f.kind == "hour_of_day":
        return lambda event, q, states, values: float((q // 3_600_000) % 24)
    if f.kind == "day_of_week":  # Monday = 0; 1970-01-01 was a Thursday
        return lambda event, q, states, values: float((q // 86_400_000 + 3) % 7)
    if f.kind == "ratio":

        def ratio(event: Mapping[str, Any], q: int, states: Any, values: Any) -> Any:
            a, b = refs(event, values)
            a_num, b_num = numeric(a), numeric(b)
            return a_num / b_num if b_num != 0 and b_num == b_num else math.nan

        return ratio
    if f.kind == "in":
        allowed = {encode_value(v) for v in d.values}

        def within(event: Mapping[str, Any], q: int, states: Any, values: Any) -> Any:
            a = encode_value(refs(event, values)[0])
            return math.nan if a is None else float(a in allowed)

        return within
    equal = d.op == "eq"

    def compare(event: Mapping[str, Any], q: int, states: Any, values: Any) -> Any:
        a, b = (encode_value(x) for x in refs(event, values))
        if a is None or b is None:
            return math.nan
        return float((a == b) == equal)

    return compare


class FeatureComputer:
    """Every feature of a spec, compiled once; `compute` evaluates them in spec order."""

    def __init__(self, plan: SpecPlan) -> None:
        self.functions: list[tuple[str, Compute]] = []
        for f in plan.features:
            if f.definition.entity:
                self.functions.append((f.name, _aggregate(f, plan.scale)))
            else:
                self.functions.append((f.name, _per_event(f)))

    def compute(
        self, event: Mapping[str, Any], q: int, states: Mapping[str, EntityState]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, function in self.functions:
            values[name] = function(event, q, states, values)
        return values

"""A deliberately naive implementation of the feature semantics documented in features.spec:
for each event, scan every earlier event. Slow and obviously right; the offline builder is
checked against it, and the online store against the offline builder."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from features.spec import SpecPlan, encode_value


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def reference_features(plan: SpecPlan, log: pd.DataFrame) -> pd.DataFrame:
    events = [{k: v for k, v in row.items() if not _missing(v)} for row in log.to_dict("records")]
    out = []
    for i, e in enumerate(events):
        q = e["ts"]
        values: dict[str, Any] = {}
        for f in plan.features:
            d = f.definition
            if f.kind == "field":
                values[f.name] = _num(e.get(d.field)) if d.field in e else math.nan
            elif f.kind == "hour_of_day":
                values[f.name] = float((q // 3_600_000) % 24)
            elif f.kind == "day_of_week":
                values[f.name] = float((q // 86_400_000 + 3) % 7)
            elif f.kind in ("compare", "in", "ratio"):
                a = values[d.a] if d.a in values else e.get(d.a)
                b = values[d.b] if d.b in values else e.get(d.b)
                if f.kind == "ratio":
                    an, bn = (
                        _num(a) if not _missing(a) else math.nan,
                        _num(b) if not _missing(b) else math.nan,
                    )
                    values[f.name] = an / bn if bn != 0 and not math.isnan(bn) else math.nan
                elif f.kind == "in":
                    ea = encode_value(a) if not _missing(a) else None
                    values[f.name] = (
                        math.nan if ea is None else float(ea in {encode_value(v) for v in d.values})
                    )
                else:
                    ea = encode_value(a) if not _missing(a) else None
                    eb = encode_value(b) if not _missing(b) else None
                    values[f.name] = (
                        math.nan
                        if ea is None or eb is None
                        else float((ea == eb) == (d.op == "eq"))
                    )
            else:
                values[f.name] = _aggregate(plan, f, events, i)
        out.append([values[n] for n in plan.output])
    frame = pd.DataFrame(out, columns=list(plan.output))
    for name in plan.output:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    frame.insert(0, "ts", log["ts"].to_numpy())
    frame.insert(0, "event_id", log["event_id"].to_numpy())
    return frame


def _aggregate(plan: SpecPlan, f: Any, events: list[dict], i: int) -> Any:
    d = f.definition
    key_field = plan.entity_keys[d.entity]
    e = events[i]
    q = e["ts"]
    if key_field not in e:
        return None if f.kind == "last_value" else math.nan
    key = encode_value(e[key_field])
    touches = [j for j in range(i) if encode_value(events[j].get(key_field)) == key]
    ttl = plan.entity_ttl[d.entity]
    # State starts over after an idle ttl: only touches after the last such gap count.
    epoch, prev_t = None, None
    for j in touches:
        if prev_t is None or events[j]["ts"] - prev_t >= ttl:
            epoch = events[j]["ts"]
        prev_t = events[j]["ts"]
    if not touches or q - events[touches[-1]]["ts"] >= ttl:
        touches = []
    else:
        touches = [j for j in touches if events[j]["ts"] >= epoch]

    def matches(ev: dict, flt: dict) -> bool:
        for name, want in flt.items():
            want = want if isinstance(want, list) else [want]
            if encode_value(ev.get(name)) not in {encode_value(w) for w in want}:
                return False
        return True

    base = [j for j in touches if events[j]["ts"] < q and matches(events[j], d.where)]
    if f.window:
        start = ((q - f.window) // f.hop) * f.hop
        base = [j for j in base if events[j]["ts"] >= start]
    numeric = [
        j for j in base if d.field and not math.isnan(_num(events[j].get(d.field, math.nan)))
    ]
    scale = plan.scale
    if f.kind == "count":
        return float(len(base))
    if f.kind == "sum":
        return sum(round(_num(events[j][d.field]) * scale) for j in numeric) / scale
    if f.kind == "mean":
        total = sum(round(_num(events[j][d.field]) * scale) for j in numeric) / scale
        return total / len(numeric) if numeric else math.nan
    if f.kind == "max":
        return (
            max(round(_num(events[j][d.field]) * scale) for j in numeric) / scale
            if numeric
            else math.nan
        )
    if f.kind == "distinct":
        return float(len({encode_value(events[j][d.field]) for j in base if d.field in events[j]}))
    if f.kind == "share":
        hits = [j for j in base if matches(events[j], d.match)]
        return len(hits) / len(base) if base else math.nan
    if f.kind == "time_since_last":
        return (q - events[base[-1]]["ts"]) / 1000 if base else math.nan
    if f.kind == "time_since_first":
        return (q - events[base[0]]["ts"]) / 1000 if base else math.nan
    if f.kind == "last_value":
        having = [j for j in base if d.field in events[j]]
        return encode_value(events[having[-1]][d.field]) if having else None
    raise AssertionError(f.kind)

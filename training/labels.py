"""The label definition: which events are scored and which of them were fraud, as the log knew it.

Labels are events of their own (`labels.event_type`, default `label`) that arrive days or weeks
after what they are about. A scored event (`labels.scored`, default `{type: payment}`) is
positive when

* a label event names it in `labels.target_field` (default `target_event_id`), arrived within
  the maturity after it, and the latest such label has a positive value (`labels.field` in
  `labels.positive`, default `label: fraud`; with `field: null` every label event is positive);
  a later `not_fraud` label (an overturned objection) thus clears an earlier chargeback; or
* it has no label of its own and the account rule is on: a positive label event on the same
  entity (`labels.entity`, default `account_id`) matching `account_rule.where` (default
  `source: review`) arrived within `account_rule.within` after it.

Everything else is negative. Only labels arriving within the maturity count, so an old event and
a recent one had the same time to be reported; scored events younger than the maturity at the end
of the log are dropped as immature: their labels may still be on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.offline import encode_column
from features.spec import encode_value
from training.config import Filter, LabelConfig
from training.errors import NoLabels, WindowTooShort

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Labels:
    rows: I64  # positions in the log of the scored, mature events, in time order
    y: npt.NDArray[np.int8]  # 1 = positive
    log_end: int  # ms: the time of the last event of the log
    mature_until: int  # ms: scored events after this are immature
    immature: int  # scored events dropped as immature
    direct: int  # positives from a label naming the event
    by_account: int  # positives from the account rule alone


def matches(log: pd.DataFrame, where: Filter) -> Mask:
    """Rows whose fields equal the filter's values (compared in the spec's text form)."""
    mask = np.ones(len(log), dtype=bool)
    for name, value in where.items():
        values = value if isinstance(value, list) else [value]
        if name not in log.columns:
            return np.zeros(len(log), dtype=bool)
        wanted = np.array([encode_value(v) for v in values], dtype=object)
        mask &= np.isin(encode_column(log[name]), wanted)
    return mask


def describe(where: Filter) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in where.items()) + "}"


def label_mask(log: pd.DataFrame, definition: LabelConfig) -> tuple[Mask, Mask]:
    """(label events, positive label events) of the log."""
    labels = matches(log, {"type": definition.event_type})
    if definition.field is None:
        return labels, labels
    return labels, labels & matches(log, {definition.field: list(definition.positive)})


def label_events(log: pd.DataFrame, definition: LabelConfig) -> Labels:
    """The scored, mature events of a log sorted by ts, with their 0/1 labels."""
    scored = matches(log, definition.scored)
    if not scored.any():
        raise NoLabels(
            f"the log holds no scored events matching {describe(definition.scored)} "
            "(labels.scored in the training config)"
        )
    is_label, is_positive = label_mask(log, definition)
    if not is_label.any():
        raise NoLabels(
            f"the log holds no label events (type '{definition.event_type}'); set "
            "labels.event_type in the training config to the type of your fraud reports"
        )
    ts = log["ts"].to_numpy(dtype=np.int64)
    log_end = int(ts[-1])
    maturity = definition.maturity_ms
    mature_until = log_end - maturity
    rows = np.flatnonzero(scored & (ts <= mature_until)).astype(np.int64)
    if len(rows) == 0:
        raise WindowTooShort(
            f"every scored event is younger than the maturity ({definition.maturity}) at the end "
            "of the log: the log is too short, or lower labels.maturity"
        )
    events = pd.DataFrame({"event_id": log["event_id"].to_numpy()[rows], "ts": ts[rows]})
    own = _own_labels(log, definition, is_label, is_positive, events, maturity)
    account = np.zeros(len(rows), dtype=bool)
    if definition.account_rule is not None and definition.entity is not None:
        account = _account_rule(log, definition, is_positive, rows)
    y = np.where(own >= 0, own, account.astype(np.int8)).astype(np.int8)
    if not y.any():
        raise NoLabels(
            f"no scored event is positive: of {int(is_label.sum()):,} label events "
            f"({int(is_positive.sum()):,} positive), none arrived within the maturity "
            f"({definition.maturity}) of a scored event it names"
            + (" or of its account" if definition.account_rule is not None else "")
        )
    return Labels(
        rows=rows,
        y=y,
        log_end=log_end,
        mature_until=mature_until,
        immature=int(scored.sum()) - len(rows),
        direct=int((own == 1).sum()),
        by_account=int(((own < 0) & account).sum()),
    )


def _own_labels(
    log: pd.DataFrame,
    definition: LabelConfig,
    is_label: Mask,
    is_positive: Mask,
    events: pd.DataFrame,
    maturity: int,
) -> npt.NDArray[np.int8]:
    """Per event: 1 or 0 from the latest label naming it within the maturity, -1 if none."""
    own = np.full(len(events), -1, dtype=np.int8)
    if definition.target_field not in log.columns:
        return own
    labels = pd.DataFrame(
        {
            "event_id": log[definition.target_field].to_numpy()[is_label],
            "label_ts": log["ts"].to_numpy(dtype=np.int64)[is_label],
            "positive": is_positive[is_label].astype(np.int8),
        }
    ).dropna(subset=["event_id"])
    joined = events.reset_index().merge(labels, on="event_id", how="inner")
    delay = joined["label_ts"] - joined["ts"]
    joined = joined[(delay >= 0) & (delay <= maturity)]
    latest = joined.sort_values(["index", "label_ts"], kind="stable").groupby("index").last()
    own[latest.index.to_numpy()] = latest["positive"].to_numpy(dtype=np.int8)
    return own


def _account_rule(log: pd.DataFrame, definition: LabelConfig, is_positive: Mask, rows: I64) -> Mask:
    """Per event: a positive label of the rule on its entity arrived within the rule's window."""
    rule = definition.account_rule
    entity = definition.entity
    assert rule is not None and entity is not None
    if entity not in log.columns:
        return np.zeros(len(rows), dtype=bool)
    keys = encode_column(log[entity])
    ts = log["ts"].to_numpy(dtype=np.int64)
    chosen = np.flatnonzero(is_positive & matches(log, rule.where) & pd.notna(keys))
    keyed = rows[pd.notna(keys[rows])]
    found = np.zeros(len(log), dtype=bool)
    if len(chosen) and len(keyed):
        left = pd.DataFrame({"ts": ts[keyed], "key": keys[keyed], "row": keyed})
        right = pd.DataFrame({"ts": ts[chosen], "key": keys[chosen], "hit": True})
        hits = pd.merge_asof(
            left, right, on="ts", by="key", direction="forward", tolerance=rule.within_ms
        )
        found[hits["row"].to_numpy()] = hits["hit"].eq(True).to_numpy()
    return found[rows]


def known_positive(log: pd.DataFrame, definition: LabelConfig, before: int) -> set[str]:
    """Entities (in the spec's text form) with a positive label that arrived before `before`."""
    if definition.entity is None or definition.entity not in log.columns:
        return set()
    _, is_positive = label_mask(log, definition)
    early = is_positive & (log["ts"].to_numpy(dtype=np.int64) < before)
    keys = encode_column(log[definition.entity])[early]
    return {str(k) for k in keys if k is not None}

"""Train/serve parity: replay a log through the online store and compare with the offline builder.

`replay` reads every event's features from Redis just before applying it (one round trip per
event, exactly as the scoring service does); `compare` lists the cells where the two matrices
differ by more than the tolerance (NaN equals NaN). `arbiter features parity` runs both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.log import frame_records
from features.offline import build_features
from features.online import OnlineStore


def replay(store: OnlineStore, log: pd.DataFrame) -> pd.DataFrame:
    """The online feature matrix of a ts-sorted log (store should start empty)."""
    rows = []
    for event in frame_records(log):
        features, _ = store.read_and_apply(event)
        rows.append([features[name] for name in store.plan.output])
    out = pd.DataFrame(rows, columns=list(store.plan.output), dtype=np.float64)
    out.insert(0, "ts", log["ts"].to_numpy())
    out.insert(0, "event_id", log["event_id"].to_numpy())
    return out


@dataclass(frozen=True)
class Mismatch:
    event_id: str
    feature: str
    offline: float
    online: float


def compare(offline: pd.DataFrame, online: pd.DataFrame, tolerance: float = 1e-9) -> list[Mismatch]:
    if list(offline["event_id"]) != list(online["event_id"]):
        raise ValueError("the two matrices do not cover the same events in the same order")
    found: list[Mismatch] = []
    for name in offline.columns[2:]:
        a = offline[name].to_numpy(dtype=np.float64)
        b = online[name].to_numpy(dtype=np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        with np.errstate(invalid="ignore"):
            bad = ~both_nan & ~(np.abs(a - b) <= tolerance)
        for i in np.flatnonzero(bad):
            found.append(Mismatch(str(offline["event_id"].iloc[i]), name, a[i], b[i]))
    return found


def check(store: OnlineStore, log: pd.DataFrame, tolerance: float = 1e-9) -> list[Mismatch]:
    offline = build_features(store.plan, log.copy())
    return compare(offline, replay(store, log), tolerance)

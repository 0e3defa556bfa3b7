"""The training data: point-in-time features of the scored events, their labels, and a
time-ordered train / validation / test split with a gap of the label maturity between windows.

The mature part of the log runs from the first scored event to `log end - maturity`. Take two
gaps of the maturity out of that span and share the rest between the windows by the configured
fractions (of time, not of rows):

    |--- train ---|  gap  |-- validation --|  gap  |-- test --|  maturity  | log end

The gap is what keeps the future out: every label of a training event arrives (by definition)
within the maturity after it, so all of them are known by the time the validation window opens,
as they would be for a model trained at that moment; and an account's burst of activity cannot
sit on both sides of a boundary a few minutes apart. Optionally the entities already known to be
fraudulent (a positive label arrived before the test window opens) are dropped from the test
window: a deployed engine would have suspended them, so catching them again proves nothing.

The test window is stored with the run (`holdout/holdout.parquet`: features, labels, amounts),
the holdout the promotion gate scores champion and challenger on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.events import format_ts
from features.offline import encode_column, numeric
from features.spec import SpecPlan
from training.config import TrainingConfig
from training.errors import SingleClass, WindowTooShort
from training.labels import Labels, known_positive, label_events

I64 = npt.NDArray[np.int64]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Part:
    """One window of the split; `start`..`end` is half-open, in epoch ms."""

    name: str
    X: pd.DataFrame  # the model's input: one float64 column per output feature of the spec
    y: npt.NDArray[np.int8]
    ts: I64
    event_id: npt.NDArray[np.object_]
    amount: npt.NDArray[np.float64]  # the scored event's amount (NaN where it has none)
    start: int
    end: int

    @property
    def positives(self) -> int:
        return int(self.y.sum())

    def describe(self) -> str:
        return (
            f"{self.name} {format_ts(self.start)} .. {format_ts(self.end)}: "
            f"{len(self.y):,} events, {self.positives:,} positive"
        )


@dataclass(frozen=True)
class Dataset:
    features: tuple[str, ...]
    train: Part
    validation: Part
    test: Part
    labels: Labels
    log_start: int
    gap: int  # ms, the label maturity
    dropped_compromised: int  # test events of entities already known positive

    @property
    def parts(self) -> tuple[Part, Part, Part]:
        return (self.train, self.validation, self.test)


def windows(
    first: int, mature_until: int, gap: int, fractions: tuple[float, float, float]
) -> list[tuple[int, int]]:
    """Half-open (start, end) of train, validation and test; `WindowTooShort` if they do not fit."""
    usable = mature_until - first - 2 * gap
    if usable <= 0:
        span = (mature_until - first) / DAY_MS
        raise WindowTooShort(
            f"the mature scored events span {span:.1f} days ({format_ts(first)} .. "
            f"{format_ts(mature_until)}), but the split needs two gaps of the maturity "
            f"({gap / DAY_MS:g} days each) plus its three windows: use a longer log or a "
            "shorter labels.maturity"
        )
    train_end = first + int(usable * fractions[0])
    val_start = train_end + gap
    val_end = val_start + int(usable * fractions[1])
    return [(first, train_end), (val_start, val_end), (val_end + gap, mature_until + 1)]


def build_dataset(
    log: pd.DataFrame, plan: SpecPlan, matrix: pd.DataFrame, config: TrainingConfig
) -> Dataset:
    """Labels, the split and its checks, from a log sorted by ts and its feature matrix
    (`features.offline.OfflineBuilder(plan, log).build()`, one row per event of the log)."""
    labels = label_events(log, config.labels)
    ts = log["ts"].to_numpy(dtype=np.int64)
    rows = labels.rows
    split = config.split
    bounds = windows(
        int(ts[rows[0]]),
        labels.mature_until,
        config.labels.maturity_ms,
        (split.train, split.validation, split.test),
    )
    amount_field = config.evaluation.amount_field
    amount = (
        numeric(log[amount_field])
        if amount_field and amount_field in log.columns
        else np.full(len(log), np.nan)
    )
    names = ("train", "validation", "test")
    parts: list[Part] = []
    dropped = 0
    for name, (start, end) in zip(names, bounds, strict=True):
        inside = (ts[rows] >= start) & (ts[rows] < end)
        entity_field = config.labels.entity
        if name == "test" and split.drop_known_compromised and entity_field in log.columns:
            known = known_positive(log, config.labels, before=start)
            entity = encode_column(log[entity_field])[rows]
            drop = inside & np.isin(entity, list(known))
            dropped = int(drop.sum())
            inside &= ~drop
        chosen = rows[inside]
        frame = matrix.iloc[chosen][list(plan.output)].reset_index(drop=True).astype(np.float64)
        parts.append(
            Part(
                name=name,
                X=frame,
                y=labels.y[inside],
                ts=ts[chosen],
                event_id=log["event_id"].to_numpy(dtype=object)[chosen],
                amount=amount[chosen],
                start=start,
                end=end,
            )
        )
    _check(parts)
    return Dataset(
        features=tuple(plan.output),
        train=parts[0],
        validation=parts[1],
        test=parts[2],
        labels=labels,
        log_start=int(ts[0]),
        gap=config.labels.maturity_ms,
        dropped_compromised=dropped,
    )


def _check(parts: list[Part]) -> None:
    counts = ", ".join(f"{p.name} {p.positives:,}/{len(p.y):,}" for p in parts)
    for part in parts:
        window = f"{format_ts(part.start)} .. {format_ts(part.end)}"
        if len(part.y) == 0:
            raise WindowTooShort(
                f"the {part.name} window ({window}) holds no scored events; use a longer log "
                "or other split fractions"
            )
        if part.positives in (0, len(part.y)):
            only = "negatives" if part.positives == 0 else "positives"
            raise SingleClass(
                f"the {part.name} window ({window}) holds only {only} (positive/events per "
                f"window: {counts}); a model needs both classes in every window: use a longer "
                "log, check the label definition, or change the split fractions"
            )


# -- the stored holdout ----------------------------------------------------------------------
# The test window of a run (features, labels, amounts) is kept as a run artifact, so a later
# promotion scores the champion and the challenger on the very same rows, without the event log
# or the feature builder at hand.

HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
# Feature names start with a letter (the spec's rule), so these can never collide with one.
META = ("_event_id", "_ts", "_label", "_amount")


def holdout_frame(part: Part) -> pd.DataFrame:
    columns = (part.event_id, part.ts, part.y, part.amount)
    meta = pd.DataFrame(dict(zip(META, columns, strict=True)))
    return pd.concat([meta, part.X.reset_index(drop=True)], axis=1)


def write_holdout(part: Part, directory: Path) -> Path:
    path = directory / HOLDOUT_ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    holdout_frame(part).to_parquet(path, index=False)
    return path


def read_holdout(path: Path) -> Part:
    frame = pd.read_parquet(path)
    features = [c for c in frame.columns if c not in META]
    ts = frame["_ts"].to_numpy(dtype=np.int64)
    return Part(
        name="holdout",
        X=frame[features].astype(np.float64),
        y=frame["_label"].to_numpy(dtype=np.int8),
        ts=ts,
        event_id=frame["_event_id"].to_numpy(dtype=object),
        amount=frame["_amount"].to_numpy(dtype=np.float64),
        start=int(ts.min()),
        end=int(ts.max()) + 1,
    )

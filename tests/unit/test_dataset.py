"""The split: time-ordered, a maturity gap between windows, nothing from the future, known
fraudsters optionally out of the test window, and clear refusals when it cannot be made."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.offline import OfflineBuilder
from features.spec import parse_spec
from training.config import TrainingConfig
from training.dataset import build_dataset, windows
from training.errors import SingleClass, WindowTooShort

T0 = 1_790_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
PLAN = parse_spec(
    {
        "name": "tiny",
        "entities": {"account": {"key": "account_id", "ttl": "30d"}},
        "features": [
            {"name": "amount", "kind": "field", "field": "amount"},
            {"name": "payments_24h", "kind": "count", "entity": "account", "window": "24h"},
        ],
    }
)


def world(days: int, fraud_accounts: dict[str, float]) -> pd.DataFrame:
    """Payments every 2 hours spread over 10 accounts; each fraud account's payments of the
    given day are charged back 2 days later."""
    rows = []
    for i, t in enumerate(range(T0, T0 + days * DAY, 2 * HOUR)):
        account = f"a{i % 10}"
        rows.append({"type": "payment", "ts": t, "account_id": account, "amount": 10.0 + i % 7})
        fraud_day = fraud_accounts.get(account)
        if fraud_day is not None and fraud_day <= (t - T0) / DAY < fraud_day + 1:
            rows.append(
                {
                    "type": "label",
                    "ts": t + 2 * DAY,
                    "account_id": account,
                    "label": "fraud",
                    "source": "chargeback",
                    "target": i,
                }
            )
    frame = pd.DataFrame(rows).sort_values("ts", kind="stable").reset_index(drop=True)
    frame.insert(0, "event_id", [f"e{i}" for i in range(len(frame))])
    # Payments keep their generation order in time, so the n-th payment is payment n.
    payment_ids = dict(enumerate(frame.loc[frame["type"] == "payment", "event_id"]))
    frame["target_event_id"] = frame["target"].map(payment_ids)
    return frame.drop(columns="target")


def config(**split: object) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"labels": {"maturity": "3d", "account_rule": None}, "split": split}
    )


def dataset_of(log: pd.DataFrame, cfg: TrainingConfig):
    return build_dataset(log, PLAN, OfflineBuilder(PLAN, log).build(), cfg)


# With 30 days and a 3-day maturity: train is days 0-12.6, validation 15.6-19.8, test 22.8-27.
FRAUD = {"a1": 2.0, "a2": 9.0, "a3": 16.5, "a4": 18.0, "a5": 23.5, "a6": 25.0}


def test_windows_are_time_ordered_with_a_maturity_gap_and_nothing_from_the_future():
    log = world(30, FRAUD)
    data = dataset_of(log, config(drop_known_compromised=False))
    train, validation, test = data.parts
    gap = 3 * DAY
    assert train.ts.max() + gap <= validation.ts.min()
    assert validation.ts.max() + gap <= test.ts.min()
    assert train.end + gap == validation.start and validation.end + gap == test.start
    # Every test event is mature: a full maturity lies between it and the end of the log.
    assert test.ts.max() + gap <= log["ts"].max()
    # The features are exactly the offline builder's for those events.
    full = OfflineBuilder(PLAN, log).build().set_index("event_id")
    expected = full.loc[list(test.event_id), list(PLAN.output)].to_numpy()
    assert np.array_equal(test.X.to_numpy(), expected, equal_nan=True)
    assert [p.positives > 0 for p in data.parts] == [True, True, True]


def test_the_window_fractions_are_of_time_after_the_gaps():
    bounds = windows(0, 100 * DAY, 10 * DAY, (0.6, 0.2, 0.2))
    assert bounds == [(0, 48 * DAY), (58 * DAY, 74 * DAY), (84 * DAY, 100 * DAY + 1)]


def test_known_fraudsters_are_dropped_from_the_test_window_only_when_asked():
    log = world(30, {**FRAUD, "a7": 0.0})
    kept = dataset_of(log, config(drop_known_compromised=False))
    dropped = dataset_of(log, config(drop_known_compromised=True))
    accounts = log.set_index("event_id")["account_id"]
    before = set(accounts[list(kept.test.event_id)])
    after = set(accounts[list(dropped.test.event_id)])
    # a1-a4 and a7 were charged back before the test window opened; a5 and a6 not yet.
    assert before - after == {"a1", "a2", "a3", "a4", "a7"}
    assert {"a5", "a6"} <= after
    assert dropped.dropped_compromised == len(kept.test.y) - len(dropped.test.y) > 0
    assert dropped.test.positives == kept.test.positives


def test_a_log_too_short_for_the_split_is_refused():
    with pytest.raises(WindowTooShort, match=r"the split needs two gaps of the maturity \(3 days"):
        dataset_of(world(9, {"a1": 0.5}), config())


def test_a_window_without_positives_is_refused_and_names_the_window():
    message = (
        r"the validation window \(.*\) holds only negatives \(positive/events per window: "
        r"train \d+/\d+, validation 0/\d+, test \d+/\d+\)"
    )
    with pytest.raises(SingleClass, match=message):
        dataset_of(world(30, {"a1": 2.0, "a5": 23.5}), config())

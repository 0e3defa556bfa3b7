"""The label definition on tiny hand-made logs: what counts, when, and what is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from training.config import LabelConfig, parse_training_config
from training.errors import InvalidTrainingConfig, NoLabels, WindowTooShort
from training.labels import known_positive, label_events

T0 = 1_790_000_000_000
DAY = 86_400_000


def log_of(*events: dict) -> pd.DataFrame:
    rows = [{"event_id": f"e{i}", **e} for i, e in enumerate(events)]
    frame = pd.DataFrame(rows)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def pay(day: float, account: str = "a1") -> dict:
    return {"type": "payment", "ts": T0 + int(day * DAY), "account_id": account, "amount": 10.0}


def label(day: float, target: str | None, value: str = "fraud", **fields) -> dict:
    event = {"type": "label", "ts": T0 + int(day * DAY), "label": value, "source": "chargeback"}
    event.update({"account_id": "a1", "target_event_id": target, **fields})
    return event


def tail(day: float) -> dict:
    """An unrelated event that sets the end of the log."""
    return {"type": "login", "ts": T0 + int(day * DAY), "account_id": "zz"}


def labelled(log: pd.DataFrame, **config) -> dict[str, int]:
    labels = label_events(log, LabelConfig(**config))
    return dict(zip(log["event_id"].to_numpy()[labels.rows], labels.y.tolist(), strict=True))


def test_a_label_counts_only_if_it_arrives_within_the_maturity():
    log = log_of(pay(0), pay(1), label(4, "e0"), label(7, "e1"), tail(30))
    assert labelled(log, maturity="5d", account_rule=None) == {"e0": 1, "e1": 0}


def test_scored_events_younger_than_the_maturity_at_the_log_end_are_dropped():
    log = log_of(pay(0), label(1, "e0"), pay(25), pay(29), tail(30))
    labels = label_events(log, LabelConfig(maturity="5d", account_rule=None))
    # Day 25 is exactly one maturity before the end: mature. Day 29 still waits for its labels.
    assert list(log["event_id"].to_numpy()[labels.rows]) == ["e0", "e2"]
    assert labels.immature == 1
    assert labels.mature_until == T0 + 25 * DAY


def test_the_latest_label_of_an_event_decides_so_an_overturn_clears_a_chargeback():
    log = log_of(
        pay(0), pay(0.5), label(1, "e0"), label(2, "e0", "not_fraud"), label(3, "e1"), tail(30)
    )
    assert labelled(log, maturity="5d", account_rule=None) == {"e0": 0, "e1": 1}


def test_a_fraud_review_on_the_account_marks_its_earlier_payments_within_the_window():
    log = log_of(
        pay(0),  # e0: review 3 days later, inside the window -> positive
        pay(0, "a2"),  # e1: another account -> negative
        pay(4),  # e2: review arrives 6 days later: outside the 5d window -> negative
        {**label(3, None), "source": "review"},  # e3 (review of a1 targets no event)
        pay(3.5),  # e4: after the review -> not marked by it
        {**label(9, None), "source": "chargeback"},  # e5: not a review: the rule ignores it
        tail(40),
    )
    marked = labelled(log, maturity="5d")
    assert marked == {"e0": 1, "e1": 0, "e2": 0, "e4": 0}
    labels = label_events(log, LabelConfig(maturity="5d"))
    assert (labels.direct, labels.by_account) == (0, 1)


def test_a_not_fraud_label_of_its_own_beats_the_account_rule():
    log = log_of(
        pay(0),
        label(1, "e0", "not_fraud", source="review"),
        {**label(2, None), "source": "review"},
        pay(1.5),
        tail(30),
    )
    assert labelled(log, maturity="5d") == {"e0": 0, "e3": 1}


def test_a_log_of_another_domain_where_every_report_is_positive():
    log = log_of(
        {"type": "authorization", "ts": T0, "customer_id": "c1"},
        {"type": "fraud_report", "ts": T0 + 3 * DAY, "customer_id": "c1", "target": "e0"},
        {"type": "authorization", "ts": T0 + DAY, "customer_id": "c2"},
        tail(60),
    )
    config = {
        "scored": {"type": "authorization"},
        "event_type": "fraud_report",
        "target_field": "target",
        "field": None,
        "entity": "customer_id",
        "account_rule": None,
        "maturity": "30d",
    }
    assert labelled(log, **config) == {"e0": 1, "e2": 0}


def test_known_positive_entities_are_those_with_a_fraud_label_before_the_moment():
    log = log_of(pay(0), label(2, "e0"), pay(1, "a2"), label(9, "e2", account_id="a2"), tail(30))
    definition = LabelConfig()
    assert known_positive(log, definition, before=T0 + 5 * DAY) == {"a1"}
    assert known_positive(log, definition, before=T0 + 10 * DAY) == {"a1", "a2"}


@pytest.mark.parametrize(
    ("events", "error", "message"),
    [
        ([tail(0), tail(30)], NoLabels, r"no scored events matching \{type: payment\}"),
        ([pay(0), tail(30)], NoLabels, r"no label events \(type 'label'\)"),
        (
            [pay(0), label(20, "e0"), tail(30)],
            NoLabels,
            r"no scored event is positive: of 1 label events \(1 positive\), none arrived "
            r"within the maturity \(5d\)",
        ),
        (
            [pay(0), label(1, "e0"), tail(3)],
            WindowTooShort,
            r"every scored event is younger than the maturity \(5d\)",
        ),
    ],
)
def test_a_log_without_anything_to_learn_is_refused_with_a_reason(events, error, message):
    with pytest.raises(error, match=message):
        label_events(log_of(*events), LabelConfig(maturity="5d"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"labels": {"maturity": "3d"}},
            r"labels: account_rule\.within must not exceed the maturity",
        ),
        ({"labels": {"maturity": "five days"}}, r"labels\.maturity: duration 'five days'"),
        ({"split": {"train": 0.7}}, r"split: train \+ validation \+ test must sum to 1"),
        ({"model": {"params": {"objective": "huber"}}}, r"model\.params: 'objective' is set by"),
        ({"evaluation": {"thresholds": [0, 0.5]}}, r"evaluation\.thresholds: thresholds must be"),
        ({"labels": {"colour": "red"}}, r"labels\.colour: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_training_config_names_the_entry(raw, message):
    with pytest.raises(InvalidTrainingConfig, match=message):
        parse_training_config(raw, "training config")

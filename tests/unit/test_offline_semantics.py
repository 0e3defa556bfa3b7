"""The offline builder computes exactly the documented semantics (checked against a naive
scan of every earlier event) on the generic card-payments log and on random sequences."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.log import read_log
from features.offline import build_features
from features.parity import compare
from features.spec import load_spec
from tests.conftest import DATA
from tests.reference import reference_features

CARD_SPEC = load_spec(DATA / "card_payments_spec.yaml")
PROPERTY_SPEC = load_spec(DATA / "property_spec.yaml")


def test_card_payment_features_match_the_naive_reference():
    log = read_log(DATA / "card_payments.jsonl")
    built = build_features(CARD_SPEC, log.copy())
    assert compare(reference_features(CARD_SPEC, log), built) == []


def test_late_fraud_reports_count_only_from_their_arrival():
    log = read_log(DATA / "card_payments.jsonl")
    built = build_features(CARD_SPEC, log.copy()).set_index("event_id")
    first_report = log[log["type"] == "fraud_report"].iloc[0]
    merchant = log[log["merchant_id"] == first_report["merchant_id"]]
    reports_seen = built.loc[merchant["event_id"], "merchant_fraud_reports_30d"].to_numpy()
    at_or_before = (merchant["ts"] <= first_report["ts"]).to_numpy()
    # Payments made before the report arrived (including the one it is about) saw none...
    assert set(reports_seen[at_or_before]) == {0.0}
    # ...and the merchant's next event sees it.
    assert reports_seen[~at_or_before][0] == 1.0


row = st.fixed_dictionaries(
    {
        "step": st.sampled_from([0, 0, 500, 1000, 2500, 5000, 10_000, 20_000, 30_000]),
        "type": st.sampled_from(["a", "b", "label"]),
        "user": st.one_of(st.none(), st.sampled_from(["u1", "u2"])),
        "merchant": st.one_of(st.none(), st.sampled_from(["m1", "m2"])),
        "amount": st.one_of(st.none(), st.integers(0, 10_000).map(lambda c: c / 100)),
        "flag": st.one_of(st.none(), st.booleans()),
        "category": st.one_of(st.none(), st.sampled_from(["x", "y"])),
    }
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(row, min_size=1, max_size=30))
def test_offline_builder_matches_the_naive_reference_on_random_sequences(rows):
    ts = 1_790_000_000_000
    records = []
    for i, r in enumerate(rows):
        ts += r.pop("step")
        records.append({"event_id": f"e{i}", "ts": ts, **r})
    log = pd.DataFrame(records)
    built = build_features(PROPERTY_SPEC, log.copy())
    assert compare(reference_features(PROPERTY_SPEC, log), built) == []


def test_a_log_without_a_summed_field_gives_empty_aggregates():
    log = pd.DataFrame(
        [
            {"event_id": "e1", "type": "a", "ts": 1_790_000_000_000, "user": "u1"},
            {"event_id": "e2", "type": "a", "ts": 1_790_000_001_000, "user": "u1"},
        ]
    )
    built = build_features(PROPERTY_SPEC, log.copy())
    assert list(built["sum_amt"]) == [0.0, 0.0]
    assert built["max_amt"].isna().all() and built["mean_amt"].isna().all()
    assert list(built["cnt"]) == [0.0, 1.0]

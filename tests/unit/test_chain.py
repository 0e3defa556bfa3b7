"""The canonical form, the hashes, and what makes a decision record invalid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.chain import GENESIS, Link, canonical, decision_hash, first_break, to_json
from engine.errors import InvalidDecisionRecord
from engine.records import DecisionRecord


def test_canonical_json_sorts_keys_drops_whitespace_and_writes_floats_by_repr():
    value = to_json({"b": [1, 0.1, 1e300, 5e-324], "a": "é", "c": {"z": True, "y": None}}, "x")
    assert canonical(value) == '{"a":"é","b":[1,0.1,1e+300,5e-324],"c":{"y":null,"z":true}}'


def test_nan_becomes_null_and_numpy_scalars_plain_numbers():
    assert to_json({"a": math.nan, "b": np.float32(0.5), "c": np.int64(3)}, "f") == {
        "a": None, "b": 0.5, "c": 3,
    }  # fmt: skip


def test_an_infinite_value_is_refused_with_its_place():
    with pytest.raises(InvalidDecisionRecord, match=r"features\.ratio is inf"):
        to_json({"ratio": math.inf}, "features")


def test_a_non_json_value_is_refused():
    with pytest.raises(InvalidDecisionRecord, match="a set is not a JSON value"):
        to_json({"cards": {"a"}}, "features")


def _record(**more):
    values = {
        "decision_id": "d1", "created_at": 1, "subject_type": "payment", "subject_id": "p1",
        "payment_id": "p1", "account_id": "a1", "action": "allow",
        "feature_spec_version": "s", "policy_version": "p",
    }  # fmt: skip
    return DecisionRecord(**{**values, **more})


def test_a_payment_decision_needs_its_payment_id_as_subject():
    with pytest.raises(InvalidDecisionRecord, match="is not the payment's id"):
        _record(subject_id="other")
    with pytest.raises(InvalidDecisionRecord, match="needs its payment_id"):
        _record(payment_id=None)


def test_an_unknown_action_or_half_of_the_contributions_is_refused():
    with pytest.raises(InvalidDecisionRecord, match="action 'block' is unknown"):
        _record(action="block")
    with pytest.raises(InvalidDecisionRecord, match="contributions and base_value go together"):
        _record(contributions={"a": 0.1})


def test_an_integer_score_is_hashed_as_the_float_the_database_returns():
    assert _record(score=1).to_json()["score"] == 1.0
    assert isinstance(_record(score=1).score, float)


def test_first_break_finds_a_changed_field():
    fields = _record().to_json()
    first = Link("d1", 1, fields, GENESIS, decision_hash(fields, 1, GENESIS))
    changed = {**fields, "action": "decline"}
    second = Link("d2", 2, changed, first.hash, decision_hash(fields, 2, first.hash))
    broken = first_break([first, second])
    assert broken is not None
    assert (broken.decision_id, broken.seq) == ("d2", 2)
    assert first_break([first]) is None

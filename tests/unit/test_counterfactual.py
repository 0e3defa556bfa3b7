"""What would have changed the outcome: searched on a tiny real LightGBM model, not a mock."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from explanations.catalogue import Catalogue, load_catalogue
from explanations.counterfactual import (
    Counterfactual,
    customer_view,
    internal_view,
    move,
    quantiles_of,
    threshold_margin,
    typical_of,
    what_would_change,
)
from tests.conftest import ROOT
from training.explain import distribution

NAMES = (
    "account_cards_24h",
    "account_cards_30d",
    "amount",
    "card_ip_country_mismatch",
    "account_sms_numbers_10m",
    "hour_of_day",
)
INTEGERS = {"account_cards_24h", "account_cards_30d", "account_sms_numbers_10m", "hour_of_day"}
CARDS = ("CARD_COUNT", ("account_cards_24h", "account_cards_30d"))
AMOUNT = ("AMOUNT_UNUSUAL", ("amount",))
DECLINE = threshold_margin(0.70)


@dataclass(frozen=True)
class TinyModel:
    """A real booster trained on seeded data: fraud is many cards OR a large amount."""

    booster: lgb.Booster
    distribution: dict[str, Any]

    def vector(self, features: dict[str, Any]) -> np.ndarray:
        values = [features.get(n) for n in NAMES]
        return np.array([[np.nan if v is None else v for v in values]], dtype=np.float64)

    def margin_of(self, features: dict[str, Any]) -> float:
        return float(self.booster.predict(self.vector(features), raw_score=True, num_threads=1)[0])

    def explain(self, features: dict[str, Any]) -> tuple[dict[str, float], float]:
        row = self.booster.predict(self.vector(features), pred_contrib=True, num_threads=1)[0]
        return dict(zip(NAMES, row[:-1].tolist(), strict=True)), float(row[-1])


@functools.cache
def tiny_model() -> TinyModel:
    rng = np.random.default_rng(7)
    n = 4000
    cards = rng.geometric(0.5, n) - 1 + (rng.random(n) < 0.15) * rng.integers(3, 25, n)
    X = np.column_stack(
        [
            cards,
            cards + rng.integers(0, 4, n),
            np.round(rng.lognormal(3.5, 1.0, n), 2),
            (rng.random(n) < 0.1).astype(float),
            rng.poisson(2, n),
            rng.integers(0, 24, n),
        ]
    ).astype(np.float64)
    y = ((X[:, 0] > 6) | (X[:, 2] > 400)).astype(int)
    flip = rng.random(n) < 0.02
    y[flip] = 1 - y[flip]
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "verbose": -1,
        "seed": 1,
        "deterministic": True,
        "num_threads": 1,
    }
    booster = lgb.train(params, lgb.Dataset(X, y, feature_name=list(NAMES)), num_boost_round=60)
    return TinyModel(booster, distribution(pd.DataFrame(X, columns=list(NAMES))))


def customer(**changes: float | None) -> dict[str, Any]:
    base = dict(zip(NAMES, (1, 2, 30.0, 0.0, 2, 14), strict=True))
    return {**base, **changes}


class CountingModel:
    """The tiny model, counting how often it is asked."""

    def __init__(self, model: TinyModel) -> None:
        self.model, self.calls = model, 0

    def __call__(self, features: dict[str, Any]) -> float:
        self.calls += 1
        return self.model.margin_of(features)


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return tiny_model()


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(ROOT / "config" / "reasons.yaml")


def test_the_change_found_crosses_the_threshold_and_a_slightly_smaller_one_does_not(model):
    features = customer(account_cards_24h=14, account_cards_30d=20)
    typical = typical_of(model.distribution)
    assert model.margin_of(features) >= DECLINE
    found = what_would_change(
        model.margin_of, features, [CARDS], typical, DECLINE, integer_features=INTEGERS
    )
    assert found.found and found.family == "CARD_COUNT" and found.tried == ("CARD_COUNT",)
    changed = {**features, **{name: to for name, _, to in found.changes}}
    assert model.margin_of(changed) == found.margin_after < DECLINE
    assert [(n, a) for n, a, _ in found.changes] == [
        ("account_cards_24h", 14.0),
        ("account_cards_30d", 20.0),
    ]
    assert all(to == round(to) and to < start for _, start, to in found.changes)
    smaller = move(features, CARDS[1], typical, found.t - 2**-16, INTEGERS)
    assert smaller != changed
    assert model.margin_of(smaller) >= DECLINE


def test_a_family_that_cannot_change_it_alone_is_passed_over_for_the_next(model):
    features = customer(amount=900.0)
    typical = typical_of(model.distribution)
    found = what_would_change(
        model.margin_of, features, [CARDS, AMOUNT], typical, DECLINE, integer_features=INTEGERS
    )
    assert found.found and found.family == "AMOUNT_UNUSUAL"
    assert found.tried == ("CARD_COUNT", "AMOUNT_UNUSUAL")
    ((name, start, to),) = found.changes
    assert (name, start) == ("amount", 900.0) and typical["amount"] < to < 900.0
    assert model.margin_of({**features, "amount": to}) < DECLINE
    barely_less = move(features, ["amount"], typical, found.t - 2**-16)
    assert model.margin_of(barely_less) >= DECLINE


def test_when_no_single_family_would_do_it_the_answer_says_so(model, catalogue):
    features = customer(account_cards_24h=14, account_cards_30d=20, amount=900.0)
    found = what_would_change(
        model.margin_of,
        features,
        [CARDS, AMOUNT],
        typical_of(model.distribution),
        DECLINE,
        integer_features=INTEGERS,
    )
    assert found == Counterfactual(False, None, (), None, ("CARD_COUNT", "AMOUNT_UNUSUAL"))
    view = customer_view(found, catalogue, action="decline", subject_type="payment")
    assert view["kind"] == "none" and view["changes"] == []
    assert view["text"].startswith("No single factor on its own would have changed")


def test_the_search_is_deterministic_and_asks_the_model_at_most_steps_plus_one_times(model):
    features = customer(account_cards_24h=14, account_cards_30d=20, amount=900.0)
    typical = typical_of(model.distribution)
    counting = CountingModel(model)
    first = what_would_change(
        counting, features, [CARDS, AMOUNT], typical, DECLINE, integer_features=INTEGERS, steps=10
    )
    assert counting.calls <= 2 * (10 + 1)
    # A family that can do it: one call at t=1, then at most `steps` (fewer: rounded rows
    # repeat and are asked once).
    counting.calls = 0
    again = what_would_change(
        counting, customer(amount=900.0), [AMOUNT], typical, DECLINE, steps=10
    )
    assert counting.calls == 1 + 10
    assert again == what_would_change(
        model.margin_of, customer(amount=900.0), [AMOUNT], typical, DECLINE, steps=10
    )
    assert first == what_would_change(
        model.margin_of,
        features,
        [CARDS, AMOUNT],
        typical,
        DECLINE,
        integer_features=INTEGERS,
        steps=10,
    )


def test_missing_values_and_features_without_a_typical_value_are_left_alone(model):
    typical = {**typical_of(model.distribution), "account_cards_30d": None}
    features = customer(account_cards_24h=14, account_cards_30d=20, amount=math.nan)
    counting = CountingModel(model)
    found = what_would_change(
        counting, features, [AMOUNT, CARDS], typical, DECLINE, integer_features=INTEGERS
    )
    assert found.tried[0] == "AMOUNT_UNUSUAL"  # NaN amount: nothing to move, no model call
    assert found.family == "CARD_COUNT"
    assert [name for name, _, _ in found.changes] == ["account_cards_24h"]
    assert math.isnan(move(features, ["amount"], typical, 1.0)["amount"])
    moved = move(features, CARDS[1], typical, 1.0, INTEGERS)
    assert moved["account_cards_30d"] == 20 and moved["account_cards_24h"] == 1.0


def test_the_threshold_margin_is_the_logit_of_the_threshold():
    assert threshold_margin(0.5) == 0.0
    assert threshold_margin(0.7) == pytest.approx(math.log(0.7 / 0.3))
    assert 1 / (1 + math.exp(-threshold_margin(0.92))) == pytest.approx(0.92)
    assert threshold_margin(0.0) == -math.inf and threshold_margin(1.0) == math.inf


def test_the_customer_reads_the_change_in_plain_words_with_values_per_unit(model, catalogue):
    features = customer(account_cards_24h=14, account_cards_30d=20)
    found = what_would_change(
        model.margin_of,
        features,
        [CARDS],
        typical_of(model.distribution),
        DECLINE,
        integer_features=INTEGERS,
    )
    view = customer_view(found, catalogue, action="decline", subject_type="payment")
    to = int(found.changes[0][2])
    assert view["kind"] == "change"
    assert view["text"].startswith(
        f"If the number of cards used on your account in 24 hours had been {to} instead of 14"
    )
    assert view["text"].endswith(", this payment would not have been declined.")
    assert view["changes"][0] == {
        "what": "the number of cards used on your account in 24 hours",
        "from": "14",
        "to": str(to),
    }
    suspended = customer_view(found, catalogue, action="suspend_account", subject_type="account")
    assert suspended["text"].endswith(", your account would not have been suspended.")


def test_flags_money_and_unlisted_features_are_worded_for_a_person(catalogue):
    found = Counterfactual(
        True,
        "COUNTRY_MISMATCH",
        (("card_ip_country_mismatch", 1.0, 0.0), ("amount", 950.0, 120.5), ("new_x", 3.0, 1.0)),
        -1.0,
        ("COUNTRY_MISMATCH",),
        0.5,
    )
    text = customer_view(found, catalogue, action="review", subject_type="payment")["text"]
    assert text == (
        "If your card had been issued in the country your IP address is in, the payment amount "
        "had been 120.50 instead of 950.00 and other aspects of your activity had been closer "
        "to what is typical, this payment would not have been held for review."
    )


def test_a_rule_decided_outcome_names_the_rule_not_a_change(catalogue):
    view = customer_view(
        None,
        catalogue,
        action="decline",
        subject_type="payment",
        rule_decided=True,
        rule_codes=["MANY_CARDS", "MANY_CARDS"],
    )
    assert view["kind"] == "rule" and view["changes"] == []
    assert catalogue.rule_text("MANY_CARDS") in view["text"]
    assert view["text"].count(catalogue.rule_text("MANY_CARDS")) == 1
    assert view["text"].startswith("This outcome follows from a fixed rule")
    # The rationale lists the assessment's main factors beside the rule: the text must not deny
    # that anything was weighed (it once said "not from weighing your activity as a whole").
    assert "assessment of your activity would not on its own have led to it" in view["text"]


def test_a_change_leaves_aside_the_rules_that_fired_as_well_and_says_so(catalogue):
    found = Counterfactual(
        True, "CARD_COUNT", (("account_cards_24h", 14.0, 6.0),), -1.0, ("CARD_COUNT",), 0.6
    )
    text = customer_view(
        found,
        catalogue,
        action="decline",
        subject_type="payment",
        rule_codes=["CARD_DECLINE_BURST"],
    )["text"]
    assert text == (
        "If the number of cards used on your account in 24 hours had been 6 instead of 14, this "
        "payment would not have been declined. This leaves aside what also applied and may on "
        "its own have led to the same outcome: Your card was declined many times within 24 "
        "hours."
    )


def test_an_allowed_decision_has_nothing_to_change(catalogue):
    with pytest.raises(ValueError, match="only an adverse decision has something to change"):
        customer_view(None, catalogue, action="allow", subject_type="payment")


def test_the_internal_view_keeps_the_numbers(model):
    features = customer(account_cards_24h=14, account_cards_30d=20)
    found = what_would_change(
        model.margin_of,
        features,
        [CARDS],
        typical_of(model.distribution),
        DECLINE,
        integer_features=INTEGERS,
    )
    view = internal_view(found, DECLINE)
    assert view is not None
    assert view["found"] is True and view["family"] == "CARD_COUNT" and view["t"] == found.t
    assert view["changes"][0] == {
        "feature": "account_cards_24h",
        "from": 14.0,
        "to": found.changes[0][2],
    }
    assert view["margin_after"] == found.margin_after and view["threshold_margin"] == DECLINE
    assert internal_view(None) is None
    assert internal_view(found, math.inf)["threshold_margin"] is None  # type: ignore[index]


def test_typical_values_are_the_training_medians_and_absent_ones_are_none():
    typical = typical_of(
        {"features": {"a": {"quantiles": {"p50": 3.0}}, "b": None, "c": {"quantiles": None}}}
    )
    assert typical == {"a": 3.0, "b": None, "c": None}
    assert typical_of(None) == {}


def test_a_change_that_leaves_a_milder_adverse_outcome_says_what_would_still_have_happened(
    catalogue,
):
    found = Counterfactual(
        True, "CARD_COUNT", (("account_cards_24h", 14.0, 3.0),), 1.0, ("CARD_COUNT",), 0.8
    )

    def text(action: str, instead: str | None, subject: str = "payment") -> str:
        view = customer_view(found, catalogue, action=action, subject_type=subject,
                             instead=instead)  # fmt: skip
        return str(view["text"])

    assert text("suspend_account", "decline").endswith(
        ", your account would not have been suspended, but this payment would still have been "
        "declined."
    )
    assert text("decline", "review").endswith(
        ", this payment would not have been declined, but this payment would still have been "
        "held for review."
    )
    assert text("suspend_account", "review", "account").endswith(
        "suspended, but your account's activity would still have been flagged for review."
    )
    assert text("review", "allow").endswith(", this payment would not have been held for review.")
    with_rule = customer_view(found, catalogue, action="decline", subject_type="payment",
                              instead="review", rule_codes=["MANY_CARDS"])["text"]  # fmt: skip
    assert "would still" not in with_rule  # what the rule would still give is not the score's
    assert text("decline", None).endswith(", this payment would not have been declined.")


def test_quantiles_of_keeps_each_features_numbers():
    distribution = {
        "features": {
            "amount": {"quantiles": {"p10": 5.0, "p50": 20.0, "p90": None}},
            "never_set": {"quantiles": None},
            "account_cards_24h": {"quantiles": {"p50": 0, "p90": 1}},
        }
    }
    assert quantiles_of(distribution) == {
        "account_cards_24h": {"p50": 0.0, "p90": 1.0},
        "amount": {"p10": 5.0, "p50": 20.0},
    }
    assert quantiles_of(None) == {} and quantiles_of({}) == {}

"""The scorer's contributions are exact TreeSHAP: equal to an independent shap.TreeExplainer."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import shap

from models.scorer import Scorer


def tiny_booster() -> lgb.Booster:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 5))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values take their own path in the trees
    y = (np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) ** 2 > 0.8).astype(int)
    data = lgb.Dataset(X, y, feature_name=[f"f{i}" for i in range(5)])
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1,
              "deterministic": True, "num_threads": 1}  # fmt: skip
    return lgb.train(params, data, num_boost_round=40)


def test_contributions_match_shap_tree_explainer_and_sum_to_the_margin():
    booster = tiny_booster()
    scorer = Scorer(booster, booster.feature_name())
    explainer = shap.TreeExplainer(booster)
    rng = np.random.default_rng(9)
    for row in rng.normal(size=(25, 5)):
        row[rng.random(5) < 0.2] = np.nan
        vector = scorer.vector({f"f{i}": (None if np.isnan(v) else v) for i, v in enumerate(row)})
        ours = scorer.contributions(vector)
        theirs = explainer(vector)
        assert np.max(np.abs(np.array(list(ours.values.values())) - theirs.values[0])) <= 1e-9
        assert abs(ours.base - float(np.ravel(theirs.base_values)[0])) <= 1e-9
        margin = scorer.score(vector).margin
        assert abs(ours.base + sum(ours.values.values()) - margin) <= 1e-9


def test_the_fast_single_row_path_gives_exactly_what_booster_predict_gives():
    import threading

    booster = tiny_booster()
    scorer = Scorer(booster, booster.feature_name())
    rng = np.random.default_rng(11)
    rows = rng.normal(size=(300, 5))
    rows[rng.random(rows.shape) < 0.2] = np.nan
    expected = booster.predict(rows, raw_score=True, num_threads=1)
    ours = [scorer.score(row.reshape(1, -1)).margin for row in rows]
    assert ours == list(expected)  # bit for bit, missing values included
    # One prepared configuration serves every thread; the results do not mix.
    found: dict[int, list[float]] = {}

    def score_all(n: int) -> None:
        found[n] = [scorer.score(row.reshape(1, -1)).margin for row in rows]

    threads = [threading.Thread(target=score_all, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(found[n] == list(expected) for n in range(4))


def test_a_row_of_the_wrong_width_is_refused_not_read_past_its_end():
    import pytest

    booster = tiny_booster()
    scorer = Scorer(booster, booster.feature_name())
    with pytest.raises(ValueError, match="a row of 3 values for a model of 5 features"):
        scorer.score(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="a row of 10 values"):
        scorer.score(np.zeros((2, 5)))

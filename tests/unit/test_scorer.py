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

"""Global explanations: what the model leans on, and what is typical.

* `shap_summary`: exact TreeSHAP (`shap.TreeExplainer`) contributions, in log-odds, on a seeded
  sample of the test window; their mean absolute value per feature ranks the features.
* `distribution`: per feature, quantiles of the training population (and its share of missing
  values). It is stored inside the model artifact (`extra_files/feature_distribution.json`), so a
  rationale written years later can set "your value" against "typical" for the very model that
  decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import shap

from training.model import TrainedModel

F64 = npt.NDArray[np.float64]
QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
DISTRIBUTION_FILE = "feature_distribution.json"


@dataclass(frozen=True)
class ShapSummary:
    sample: pd.DataFrame  # the explained rows
    values: F64  # contributions, rows x features, log-odds
    base_value: float
    mean_abs: dict[str, float]  # per feature, largest first


def shap_summary(model: TrainedModel, frame: pd.DataFrame, size: int, seed: int) -> ShapSummary:
    rng = np.random.default_rng(seed)
    if len(frame) > size:
        rows = np.sort(rng.choice(len(frame), size=size, replace=False))
        frame = frame.iloc[rows]
    sample = frame[list(model.features)].reset_index(drop=True)
    explanation = shap.TreeExplainer(model.booster)(sample)
    values = np.asarray(explanation.values, dtype=np.float64)
    expected = np.atleast_1d(np.asarray(explanation.base_values, dtype=np.float64))
    magnitude = np.abs(values).mean(axis=0)
    order = np.argsort(-magnitude, kind="stable")
    mean_abs = {model.features[i]: float(magnitude[i]) for i in order}
    return ShapSummary(sample, values, float(expected[-1]), mean_abs)


def distribution(frame: pd.DataFrame) -> dict[str, Any]:
    """Quantiles per feature of a population (NaN ignored); `null` where a feature is never set."""
    names = [f"p{q}" for q in QUANTILES]
    levels = [q / 100 for q in QUANTILES]
    features: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name].to_numpy(dtype=np.float64)
        present = values[~np.isnan(values)]
        quantiles = (
            dict(zip(names, np.quantile(present, levels).tolist(), strict=True))
            if len(present)
            else None
        )
        features[str(name)] = {
            "count": len(values),
            "missing_share": float(1 - len(present) / max(len(values), 1)),
            "mean": float(present.mean()) if len(present) else None,
            "quantiles": quantiles,
        }
    return {"population": "train", "quantiles": names, "features": features}

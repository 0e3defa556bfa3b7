"""The fast scorer: one LightGBM booster, one request at a time, one thread.

A request is a single row. LightGBM's Python `predict` costs tens of microseconds for it, but
only with `num_threads=1`: with OpenMP's default team on a 2-core machine the threads fight the
web server for the cores and the tail latency explodes. `pred_contrib` gives exact TreeSHAP
contributions (one per feature, plus the base value) in the model's raw margin space, so that
`base + sum(contributions) == margin` and `sigmoid(margin) == probability`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Score:
    probability: float
    margin: float


@dataclass(frozen=True)
class Contributions:
    values: dict[str, float]  # feature -> contribution to the margin
    base: float


def sigmoid(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-margin))


class Scorer:
    """Scores feature vectors with one booster; immutable, so swapping models is a reference
    assignment and requests in flight finish on the scorer they started with."""

    def __init__(self, booster: lgb.Booster, features: Sequence[str]) -> None:
        names = list(booster.feature_name())
        if names != list(features):
            raise ValueError(
                f"the model's features {names[:3]}... differ from {list(features)[:3]}..."
            )
        self.booster = booster
        self.features = tuple(features)

    @classmethod
    def from_model_string(cls, text: str) -> Scorer:
        booster = lgb.Booster(model_str=text)
        return cls(booster, booster.feature_name())

    def vector(self, values: Mapping[str, Any]) -> F64:
        """The row in the model's feature order; missing and None become NaN."""
        row = np.empty((1, len(self.features)), dtype=np.float64)
        for i, name in enumerate(self.features):
            value = values.get(name)
            row[0, i] = np.nan if value is None else float(value)
        return row

    def score(self, row: F64) -> Score:
        margin = float(self.booster.predict(row, raw_score=True, num_threads=1)[0])
        return Score(sigmoid(margin), margin)

    def contributions(self, row: F64) -> Contributions:
        raw = self.booster.predict(row, pred_contrib=True, num_threads=1)[0]
        values = {name: float(v) for name, v in zip(self.features, raw[:-1], strict=True)}
        return Contributions(values, float(raw[-1]))

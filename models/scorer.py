"""The fast scorer: one LightGBM booster, one request at a time, one thread.

A request is a single row, scored through LightGBM's single-row fast path (`_FastRaw`), with
one thread: with OpenMP's default team on a 2-core machine the threads fight the web server
for the cores and the tail latency explodes. `pred_contrib` gives exact TreeSHAP contributions
(one per feature, plus the base value) in the model's raw margin space, so that
`base + sum(contributions) == margin` and `sigmoid(margin) == probability`.
"""

from __future__ import annotations

import ctypes
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from lightgbm.basic import _LIB, _c_str, _safe_call  # type: ignore[attr-defined]

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


class _FastRaw:
    """LightGBM's single-row fast path (`LGBM_BoosterPredictForMatSingleRowFast`): the
    prediction configuration is prepared once, not at every call as `Booster.predict` does
    (about 10 us per row here instead of 30). One configuration serves every thread: LightGBM
    only reads it and locks the booster while predicting; each call has its own output."""

    _RAW_SCORE, _FLOAT64 = 1, 1  # C_API_PREDICT_RAW_SCORE, C_API_DTYPE_FLOAT64

    def __init__(self, booster: lgb.Booster, ncol: int) -> None:
        self.booster = booster  # kept alive as long as the configuration
        self.ncol = ncol
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(self._RAW_SCORE), ctypes.c_int(0),
                ctypes.c_int(-1), ctypes.c_int(self._FLOAT64), ctypes.c_int32(ncol),
                _c_str("num_threads=1"), ctypes.byref(self._handle),
            )
        )  # fmt: skip
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._handle).atexit = False

    def __call__(self, row: F64) -> float:
        data = np.ascontiguousarray(row, dtype=np.float64)
        if data.size != self.ncol:  # the C call reads ncol values, whatever it is given
            raise ValueError(f"a row of {data.size} values for a model of {self.ncol} features")
        out = np.zeros(1, dtype=np.float64)
        out_len = ctypes.c_int64()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                self._handle, data.ctypes.data_as(ctypes.c_void_p), ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )  # fmt: skip
        return float(out[0])


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
        self._raw = _FastRaw(booster, len(self.features))

    @classmethod
    def from_model_string(cls, text: str) -> Scorer:
        booster = lgb.Booster(model_str=text)
        return cls(booster, booster.feature_name())

    def vector(self, values: Mapping[str, Any]) -> F64:
        """The row in the model's feature order; missing and None become NaN."""
        get = values.get
        flat = [math.nan if (v := get(name)) is None else float(v) for name in self.features]
        return np.array([flat], dtype=np.float64)

    def score(self, row: F64) -> Score:
        """The probability and raw margin of one row (as `Booster.predict` gives them)."""
        margin = self._raw(row)
        return Score(sigmoid(margin), margin)

    def contributions(self, row: F64) -> Contributions:
        raw = self.booster.predict(row, pred_contrib=True, num_threads=1)[0]
        values = {name: float(v) for name, v in zip(self.features, raw[:-1], strict=True)}
        return Contributions(values, float(raw[-1]))

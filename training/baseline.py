"""The reference the model has to beat: a scikit-learn logistic regression on the same features.

Missing values are imputed with the training median (plus a missing-indicator column per feature
that has gaps, since "never seen" is information), then everything is standardised. No class
weights, like the model, so both are compared as calibrated probabilities.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from training.dataset import Dataset, Part

F64 = npt.NDArray[np.float64]
# Heavy-tailed counts and amounts reach hundreds of standard deviations; clipping keeps a few
# extreme rows from dominating the linear fit (the trees do not care).
CLIP = 10.0


def fit_baseline(dataset: Dataset, seed: int = 7) -> Pipeline:
    pipeline = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        FunctionTransformer(_clip),
        LogisticRegression(C=1.0, max_iter=5000, random_state=seed),
    )
    pipeline.fit(_matrix(dataset.train), dataset.train.y)
    return pipeline


def predict_baseline(pipeline: Pipeline, part: Part) -> F64:
    return np.asarray(pipeline.predict_proba(_matrix(part))[:, 1], dtype=np.float64)


def _matrix(part: Part) -> F64:
    # Infinite ratios (never produced by the spec, but a foreign log might) count as missing.
    values: F64 = np.array(part.X.to_numpy(dtype=np.float64), dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def _clip(x: F64) -> F64:
    return np.asarray(np.clip(x, -CLIP, CLIP), dtype=np.float64)

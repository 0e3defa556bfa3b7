"""The LightGBM binary classifier: trained on the train window, early-stopped on the validation
window, deterministic (the same data and config give the same model string, byte for byte).

Class imbalance is left in the data on purpose (`scale_pos_weight` 1, no resampling): the score
stays a calibrated probability, which the policy's expected-loss thresholds and the Brier score
need, and TreeSHAP contributions stay relative to the real base rate. Boosting ranks rare
positives well without reweighting; `docs/training.md` gives the reasoning and how to change it.

Training uses `num_threads` from the config (2 by default); the serving side loads the same model
and scores with one thread. The returned booster holds only the trees up to the best iteration,
so what is evaluated here is exactly what MLflow stores and serving loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from training.config import ModelConfig, Scalar
from training.dataset import Dataset

F64 = npt.NDArray[np.float64]

DEFAULT_PARAMS: dict[str, Scalar] = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "scale_pos_weight": 1.0,
    "seed": 7,
    "num_threads": 2,
}


@dataclass(frozen=True)
class TrainedModel:
    booster: lgb.Booster
    features: tuple[str, ...]
    best_iteration: int
    params: dict[str, Scalar]
    history: dict[str, list[float]]  # the early-stopping metric per round, train and validation

    def predict(self, frame: pd.DataFrame) -> F64:
        """Probabilities of the positive class."""
        return np.asarray(self.booster.predict(frame[list(self.features)]), dtype=np.float64)

    def model_string(self) -> str:
        return str(self.booster.model_to_string())


def parameters(config: ModelConfig) -> dict[str, Scalar]:
    """The full LightGBM parameters: defaults, the config's, then what the code insists on."""
    return {
        **DEFAULT_PARAMS,
        **config.params,
        "objective": "binary",
        "metric": config.early_stopping_metric,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def fit(
    dataset: Dataset,
    config: ModelConfig,
    on_round: Callable[[int, int], None] | None = None,
) -> TrainedModel:
    """Train with early stopping; `on_round(done, total)` is called after every boosting round."""
    params = parameters(config)
    names = list(dataset.features)
    train = lgb.Dataset(
        dataset.train.X, label=dataset.train.y, feature_name=names, free_raw_data=False
    )
    valid = lgb.Dataset(
        dataset.validation.X, label=dataset.validation.y, reference=train, free_raw_data=False
    )
    record: dict[str, Any] = {}
    callbacks: list[Callable[..., Any]] = [
        lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False),
        lgb.record_evaluation(record),
    ]
    if on_round is not None:
        total = config.num_boost_round

        def report(env: Any) -> None:
            on_round(env.iteration + 1, total)

        callbacks.append(report)
    booster = lgb.train(
        params,
        train,
        num_boost_round=config.num_boost_round,
        valid_sets=[train, valid],
        valid_names=["train", "validation"],
        callbacks=callbacks,
    )
    best = booster.best_iteration or booster.current_iteration()
    final = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    metric = str(params["metric"])
    history = {
        name: [float(v) for v in record[name][metric][:best]] for name in ("train", "validation")
    }
    return TrainedModel(final, tuple(names), best, params, history)

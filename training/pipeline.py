"""One training, end to end: event log -> features -> labels and split -> LightGBM -> baseline ->
evaluation -> SHAP -> MLflow run, registered model version with the alias `challenger`. The
boosting runs here or, with `compute.engine: dask`, on a Dask cluster (`training.distributed`).

`load_source` does the part that depends only on the log and the feature spec (reading, the
point-in-time feature matrix of every event); `train` does the rest for one training config, so a
caller comparing configs builds the features once. Progress is reported through a small protocol
that the CLI draws with rich and everyone else ignores.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from features.events import format_ts
from features.log import read_log
from features.offline import OfflineBuilder
from features.spec import SpecPlan, load_spec
from training import tracking
from training.baseline import fit_baseline, predict_baseline
from training.config import TrainingConfig
from training.dataset import Dataset, build_dataset, write_holdout
from training.evaluate import evaluate, headline, scores
from training.evaluate import reliability as calibration_table
from training.explain import DISTRIBUTION_FILE, ShapSummary, distribution, shap_summary
from training.model import TrainedModel, fit
from training.plots import write_figures

TRUTH_FILE = "truth.parquet"


class Progress(Protocol):
    def step(self, name: str) -> None: ...

    def advance(self, done: int, total: int) -> None: ...


class _Silent:
    def step(self, name: str) -> None:
        pass

    def advance(self, done: int, total: int) -> None:
        pass


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    artifacts: Path
    model_name: str
    experiment: str


@dataclass(frozen=True)
class Source:
    log_path: Path
    spec_path: Path
    plan: SpecPlan
    log: pd.DataFrame
    matrix: pd.DataFrame  # point-in-time features of every event of the log
    log_sha256: str
    truth: pd.DataFrame | None  # event_id, scenario (a simulated world's ground truth)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingResult:
    registered: tracking.Registered
    dataset: Dataset
    model: TrainedModel
    evaluation: dict[str, Any]
    timings: dict[str, float]


@contextmanager
def _timed(timings: dict[str, float], name: str, progress: Progress) -> Iterator[None]:
    progress.step(name)
    began = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - began


def load_source(log_path: Path, spec_path: Path, progress: Progress | None = None) -> Source:
    progress = progress or _Silent()
    timings: dict[str, float] = {}
    plan = load_spec(spec_path)
    with _timed(timings, "read the event log", progress):
        log = read_log(log_path)
        digest = tracking.sha256_of(log_path)
        truth_path = log_path.parent / TRUTH_FILE
        truth = pd.read_parquet(truth_path) if truth_path.exists() else None
    with _timed(timings, "build features", progress):
        matrix = OfflineBuilder(plan, log).build()
    return Source(log_path, spec_path, plan, log, matrix, digest, truth, timings)


def train(
    source: Source,
    config: TrainingConfig,
    registry: Registry,
    progress: Progress | None = None,
    config_path: Path | None = None,
) -> TrainingResult:
    progress = progress or _Silent()
    timings = dict(source.timings)
    with _timed(timings, "labels and split", progress):
        dataset = build_dataset(source.log, source.plan, source.matrix, config)
    with _timed(timings, "train LightGBM", progress):
        model = _fit(dataset, config, progress)
    test = dataset.test
    score = model.predict(test.X)
    baseline_score = None
    if config.evaluation.baseline:
        with _timed(timings, "baseline (logistic regression)", progress):
            baseline_score = predict_baseline(fit_baseline(dataset), test)
    with _timed(timings, "evaluate", progress):
        evaluation = evaluate(test, score, config.evaluation, baseline_score, source.truth)
        validation = scores(dataset.validation.y, model.predict(dataset.validation.X))
    curves = {"LightGBM": score}
    if baseline_score is not None:
        curves["logistic regression"] = baseline_score
    with tempfile.TemporaryDirectory(prefix="arbiter-train-") as tmp:
        run = Path(tmp) / "run"
        with _timed(timings, "explain (SHAP)", progress):
            summary = shap_summary(
                model, test.X, config.evaluation.shap_sample, int(model.params["seed"])
            )
            _figures(run / "plots", test.y, curves, config, model, summary)
        with _timed(timings, "log to MLflow", progress):
            model_files = _write_files(run, source, config, dataset, model, summary.mean_abs)
            _write_json(run / "evaluation.json", _report(dataset, evaluation, validation))
            registered = _record(
                run, model_files, source, config, registry, dataset, model, config_path,
                metrics={
                    **headline(evaluation),
                    **{f"validation_{k}": v for k, v in validation.items()},
                    "best_iteration": float(model.best_iteration),
                },
            )  # fmt: skip
    return TrainingResult(registered, dataset, model, evaluation, timings)


def _fit(dataset: Dataset, config: TrainingConfig, progress: Progress) -> TrainedModel:
    if config.compute.engine == "local":
        return fit(dataset, config.model, on_round=progress.advance)
    # Imported here: dask.distributed costs a second at import, paid only by who uses it.
    from training.distributed import fit_dask

    return fit_dask(dataset, config.model, config.compute)


def _figures(
    folder: Path,
    y: Any,
    curves: dict[str, Any],
    config: TrainingConfig,
    model: TrainedModel,
    summary: ShapSummary,
) -> None:
    bins = config.evaluation.calibration_bins
    reliability = {name: calibration_table(y, score, bins) for name, score in curves.items()}
    folder.mkdir(parents=True)
    write_figures(folder, y, curves, reliability, summary, _importance(model, "gain"))


def _record(
    run: Path,
    model_files: list[Path],
    source: Source,
    config: TrainingConfig,
    registry: Registry,
    dataset: Dataset,
    model: TrainedModel,
    config_path: Path | None,
    metrics: dict[str, float],
) -> tracking.Registered:
    client = tracking.configure(registry.tracking_uri)
    experiment = tracking.experiment_id(
        client, registry.experiment, registry.artifacts, registry.tracking_uri
    )
    return tracking.log_training(
        client,
        experiment,
        model_name=registry.model_name,
        run_name=f"{source.plan.name} {format_ts(dataset.test.end)[:10]}",
        model=model,
        example=dataset.test.X.head(5),
        params=_params(config, dataset, model),
        metrics=metrics,
        tags=_tags(source, dataset, config_path),
        artifacts=run,
        model_files=model_files,
    )


def _write_files(
    run: Path,
    source: Source,
    config: TrainingConfig,
    dataset: Dataset,
    model: TrainedModel,
    shap_mean: dict[str, float],
) -> list[Path]:
    """Lay out the run's artifact folder; returns the files that travel inside the model."""
    (run / "config").mkdir(parents=True)
    shutil.copyfile(source.spec_path, run / "config" / "feature_spec.yaml")
    (run / "config" / "training.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    write_holdout(dataset.test, run)
    dist = distribution(dataset.train.X)
    dist["feature_spec_version"] = source.plan.version
    dist["shap_mean_abs"] = shap_mean
    path = run.parent / DISTRIBUTION_FILE
    _write_json(path, dist)
    importance = {n: _importance(model, n) for n in ("gain", "split")}
    _write_json(run / "feature_importance.json", {"shap_mean_abs": shap_mean, **importance})
    return [path]


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _importance(model: TrainedModel, kind: str) -> dict[str, float]:
    values = model.booster.feature_importance(importance_type=kind)
    return {n: float(v) for n, v in zip(model.features, values, strict=True)}


def _report(dataset: Dataset, evaluation: dict[str, Any], validation: dict[str, float]) -> Any:
    return {
        "test": evaluation,
        "validation": validation,
        "windows": {
            p.name: {
                "start": format_ts(p.start),
                "end": format_ts(p.end),
                "events": len(p.y),
                "positives": p.positives,
            }
            for p in dataset.parts
        },
        "labels": {
            "immature_dropped": dataset.labels.immature,
            "positive_direct": dataset.labels.direct,
            "positive_by_account_rule": dataset.labels.by_account,
            "test_dropped_known_compromised": dataset.dropped_compromised,
        },
    }


def _params(config: TrainingConfig, dataset: Dataset, model: TrainedModel) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for section in ("labels", "split", "evaluation", "promotion", "compute"):
        for key, value in getattr(config, section).model_dump(mode="json").items():
            params[f"{section}.{key}"] = (
                json.dumps(value) if isinstance(value, dict | list) else value
            )
    for key, value in model.params.items():
        params[f"lightgbm.{key}"] = value
    params["lightgbm.num_boost_round"] = config.model.num_boost_round
    params["lightgbm.early_stopping_rounds"] = config.model.early_stopping_rounds
    params["best_iteration"] = model.best_iteration
    params["features"] = len(model.features)
    for part in dataset.parts:
        params[f"rows.{part.name}"] = len(part.y)
        params[f"positives.{part.name}"] = part.positives
    return params


def _tags(source: Source, dataset: Dataset, config_path: Path | None) -> dict[str, str]:
    tags = {
        "data.log": str(source.log_path),
        "data.log_sha256": source.log_sha256,
        "data.start": format_ts(dataset.log_start),
        "data.end": format_ts(dataset.labels.log_end),
        "feature_spec.name": source.plan.name,
        "feature_spec.version": source.plan.version,
        "code.version": tracking.code_version(),
        "training_config": str(config_path) if config_path else "(defaults)",
        "truth": "yes" if source.truth is not None else "no",
    }
    for part in dataset.parts:
        tags[f"data.{part.name}_window"] = f"{format_ts(part.start)} .. {format_ts(part.end)}"
        tags[f"data.{part.name}_start_ms"] = str(part.start)
        tags[f"data.{part.name}_end_ms"] = str(part.end)
    return tags

"""Training end to end against a real MLflow store (SQLite in a temporary folder): the run and
its artifacts, the registry aliases, the promotion gate, determinism, loading the champion in a
fresh process, and a log of another domain trained with no code change."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import DATA, ROOT
from training import tracking
from training.config import TrainingConfig, load_training_config
from training.dataset import build_dataset
from training.model import fit
from training.pipeline import Registry, Source, TrainingResult, load_source, train
from training.promote import compare, promote
from training.simulator import SimConfig, simulate, write_world

# 500 accounts over 28 days: ~220k events and a few positives in every window (seed chosen so;
# the fixture checks it rather than trusting it).
WORLD = SimConfig(accounts=500, days=45, seed=2)
NAME = "arbiter-fraud"
CONFIG = load_training_config(ROOT / "config" / "training.yaml")
PLOTS = ("pr_curve", "roc_curve", "threshold_curve", "calibration", "shap_summary")
ARTIFACTS = {
    *(f"plots/{p}.png" for p in (*PLOTS, "feature_importance")),
    "evaluation.json",
    "feature_importance.json",
    "holdout/holdout.parquet",
    "config/training.yaml",
    "config/feature_spec.yaml",
}
METRICS = (
    "test_roc_auc",
    "test_average_precision",
    "test_recall_at_0.1pct_fpr",
    "test_recall_at_1pct_fpr",
    "test_precision_top_10_per_day",
    "test_brier",
    "test_best_threshold_loss",
    "test_best_threshold",
    "test_threshold_at_1pct_fpr",
    "test_no_model_loss",
    "baseline_test_average_precision",
    "baseline_test_roc_auc",
    "baseline_test_recall_at_1pct_fpr",
    "validation_average_precision",
    "best_iteration",
)


@pytest.fixture(scope="module", autouse=True)
def quiet_mlflow():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Source:
    return small_world(tmp_path_factory)


def small_world(tmp_path_factory) -> Source:
    """A world of WORLD's size, simulated, written and loaded with the shipped spec."""
    out = tmp_path_factory.mktemp("world")
    write_world(simulate(WORLD), out, jsonl=False)
    return load_source(out / "events.parquet", ROOT / "config" / "features.yaml")


def new_registry(tmp_path_factory, name: str) -> Registry:
    folder = tmp_path_factory.mktemp(name)
    return Registry(f"sqlite:///{folder}/mlflow.db", folder / "artifacts", NAME, NAME)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Registry:
    return new_registry(tmp_path_factory, "mlflow")


@pytest.fixture(scope="module")
def first(source, store) -> TrainingResult:
    return train(source, CONFIG, store)


def use(registry: Registry, monkeypatch: pytest.MonkeyPatch):
    """Point the CLI (settings) and this process's MLflow at a store; returns its client."""
    monkeypatch.setenv("ARBITER_MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("ARBITER_MLFLOW_ARTIFACTS", str(registry.artifacts))
    return tracking.configure(registry.tracking_uri)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, " ".join(result.output.split())


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_the_world_has_positives_in_every_window(first):
    assert all(part.positives >= 2 for part in first.dataset.parts)


def test_training_logs_a_run_with_every_artifact_metric_and_tag(first, source, store, monkeypatch):
    client = use(store, monkeypatch)
    version = client.get_model_version_by_alias(NAME, "challenger")
    assert str(version.version) == first.registered.version == "1"
    run = client.get_run(version.run_id)
    assert artifact_paths(client, run.info.run_id) >= ARTIFACTS
    assert set(METRICS) <= set(run.data.metrics)
    model_ap = run.data.metrics["test_average_precision"]
    assert model_ap == pytest.approx(first.evaluation["model"]["average_precision"])
    # The operating point ops set thresholds against: 1% of the test window's good events
    # score at or above it, and the recall there is the run's recall at 1% FPR.
    point = run.data.metrics["test_threshold_at_1pct_fpr"]
    test = first.dataset.test
    score = first.model.predict(test.X)
    good, bad = score[test.y == 0], score[test.y == 1]
    assert 0 < point < 1 and (good >= point).mean() <= 0.01
    assert (bad >= point).mean() == pytest.approx(run.data.metrics["test_recall_at_1pct_fpr"])
    # Scenario truth sits beside the simulated log, so per-scenario recall is reported.
    assert any(k.startswith("test_recall_") and "fpr" not in k for k in run.data.metrics)
    tags = run.data.tags
    assert tags["data.log_sha256"] == tracking.sha256_of(source.log_path)
    assert tags["feature_spec.version"] == source.plan.version
    assert tags["code.version"] and tags["data.start"] < tags["data.end"]
    assert set(tags) >= {"data.train_window", "data.validation_window", "data.test_window"}
    assert run.data.params["labels.maturity"] == "10d"
    assert run.data.params["lightgbm.deterministic"] == "True"


def test_the_model_artifact_carries_its_signature_and_training_distribution(
    first, store, monkeypatch
):
    use(store, monkeypatch)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1"))
    distribution = json.loads((folder / "extra_files" / "feature_distribution.json").read_text())
    assert set(distribution["features"]) == set(first.model.features)
    amount = distribution["features"]["amount"]
    assert amount["quantiles"]["p1"] <= amount["quantiles"]["p50"] <= amount["quantiles"]["p99"]
    assert amount["quantiles"]["p50"] == pytest.approx(
        np.nanmedian(first.dataset.train.X["amount"])
    )
    model_file = (folder / "MLmodel").read_text()
    assert "signature" in model_file and "account_cards_24h" in model_file


def test_the_same_inputs_train_the_identical_model(first, source):
    dataset = build_dataset(source.log, source.plan, source.matrix, CONFIG)
    again = fit(dataset, CONFIG.model)
    assert again.model_string() == fit(dataset, CONFIG.model).model_string()
    assert again.model_string() == first.model.model_string()


def weak_config() -> TrainingConfig:
    raw = CONFIG.model_dump(mode="json")
    # Leaves may not hold fewer rows than the whole window: no split, a constant score.
    raw["model"]["params"]["min_data_in_leaf"] = 1_000_000
    return TrainingConfig.model_validate(raw)


def test_the_gate_refuses_a_worse_challenger_unless_forced_with_a_reason(
    first, source, store, monkeypatch
):
    client = use(store, monkeypatch)
    assert promote(client, NAME, CONFIG.promotion).outcome == "first"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    weak = train(source, weak_config(), store)
    assert weak.registered.version == "2"
    gate = compare(client, NAME, "2", "1", CONFIG.promotion)
    # Same log, same split: the holdouts tie, the challenger's is used, neither model saw it.
    assert gate.holdout_run == weak.registered.run_id and gate.notes == []
    assert (
        not gate.passed
        and gate.champion["average_precision"] > gate.challenger["average_precision"]
    )
    code, out = cli("promote")
    assert code == 1
    assert "version 2 refused: average precision" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_model_version(NAME, "2").tags["gate.result"] == "refused"

    reason = "weak on purpose: exercising the override"
    code, out = cli("promote", "--force", "--reason", reason)
    assert code == 0, out
    assert "forced to champion" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promotion.forced_reason"] == reason and tags["gate.result"] == "forced"
    assert client.get_model_version(NAME, "1").tags["promotion.superseded_by"] == "2"
    assert "challenger" not in client.get_registered_model(NAME).aliases

    code, out = cli("models", "list")
    assert code == 0 and re.search(r"│ 2 │ champion │[^\n]*│ forced", out)
    assert re.search(r"│ 1 │ +│[^\n]*│ first", out)


def test_the_champion_loads_in_a_fresh_process_with_the_training_probabilities(
    source, tmp_path_factory, monkeypatch
):
    registry = new_registry(tmp_path_factory, "mlflow-pyfunc")
    result = train(source, CONFIG, registry)
    client = use(registry, monkeypatch)
    assert promote(client, NAME, CONFIG.promotion).outcome == "first"
    folder = tmp_path_factory.mktemp("pyfunc")
    result.dataset.test.X.to_parquet(folder / "inputs.parquet")
    script = textwrap.dedent(
        f"""
        import mlflow.pyfunc, numpy as np, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{NAME}@champion")
        inputs = pd.read_parquet({str(folder / "inputs.parquet")!r})
        np.save({str(folder / "scores.npy")!r}, np.asarray(model.predict(inputs), dtype=float))
        """
    )
    env = {"MLFLOW_TRACKING_URI": registry.tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**_base_env(), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    scores = np.load(folder / "scores.npy")
    expected = result.model.predict(result.dataset.test.X)
    assert scores.shape == expected.shape
    assert np.allclose(scores, expected, rtol=0, atol=1e-12)


def test_a_log_of_another_domain_trains_with_no_code_change(tmp_path_factory, monkeypatch):
    registry = new_registry(tmp_path_factory, "mlflow-card")
    client = use(registry, monkeypatch)
    code, out = cli(
        "train",
        "--events", str(DATA / "card_payments.jsonl"),
        "--spec", str(DATA / "card_payments_spec.yaml"),
        "--config", str(DATA / "card_payments_training.yaml"),
    )  # fmt: skip
    assert code == 0, out
    assert "registered card-fraud version 1 (alias challenger)" in out
    version = client.get_model_version_by_alias("card-fraud", "challenger")
    run = client.get_run(version.run_id)
    # The report states the operating point the policy's thresholds are set against.
    point = run.data.metrics["test_threshold_at_1pct_fpr"]
    assert f"score at 1% FPR │ {point:.4f} │" in out
    assert run.data.tags["feature_spec.name"] == "card-payments"
    assert run.data.tags["truth"] == "no"
    holdout = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="holdout")
        + "/holdout.parquet"
    )
    assert "merchant_fraud_reports_30d" in holdout.columns


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ARBITER_"))}

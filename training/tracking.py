"""MLflow: one run per training, the model logged with `mlflow.lightgbm` and registered.

The tracking store and the model registry share one URI (`sqlite:///var/mlflow/mlflow.db` by
default, any MLflow tracking URI through `ARBITER_MLFLOW_TRACKING_URI`); with a local store the
experiment's artifacts go under `var/mlflow/artifacts`. A run holds params (the label definition,
split, LightGBM parameters), metrics (test, validation and baseline numbers), tags (data window,
event-log sha256, feature-spec version, code version) and the artifacts written by the pipeline.
The new model version gets the alias `challenger` (aliases, never the deprecated stages).
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from training.model import TrainedModel

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class Registered:
    run_id: str
    version: str
    model_uri: str  # models:/<logged model id>


def configure(tracking_uri: str) -> MlflowClient:
    """Point MLflow's tracking and registry at one URI (creating a local SQLite file's folder)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(client: MlflowClient, name: str, artifacts: Path, tracking_uri: str) -> str:
    """The experiment's id, created on first use. Artifacts go under `artifacts` unless a
    tracking server is used (http, databricks): the server decides where they go."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    served = tracking_uri.startswith(("http://", "https://", "databricks"))
    location = None if served else (artifacts / name).resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def code_version() -> str:
    """`git describe` of the working tree when there is one, else the installed version."""
    root = Path(__file__).resolve().parents[1]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return f"arbiter {metadata.version('arbiter')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_training(
    client: MlflowClient,
    experiment: str,
    *,
    model_name: str,
    run_name: str,
    model: TrainedModel,
    example: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    artifacts: Path,
    model_files: list[Path],
) -> Registered:
    """Log a run and its model, register a new version and give it the alias `challenger`."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    with mlflow.start_run(experiment_id=experiment, run_name=run_name) as run:
        mlflow.log_params({k: _param(v) for k, v in params.items()})
        mlflow.log_metrics(clean)
        mlflow.set_tags(tags)
        mlflow.log_artifacts(str(artifacts))
        signature = infer_signature(example, model.predict(example))
        info = mlflow.lightgbm.log_model(
            model.booster,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            # Given, so MLflow need not infer them (slow, and it would drag in the whole venv).
            pip_requirements=[
                f"lightgbm=={lgb.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
            extra_files=[str(p) for p in model_files],
            metadata={"features": list(model.features), "best_iteration": model.best_iteration},
        )
        run_id = run.info.run_id
    _ensure_registered(client, model_name)
    version = client.create_model_version(
        model_name,
        source=f"models:/{info.model_id}",
        run_id=run_id,
        tags={k: v for k, v in tags.items() if k.startswith(("data.", "feature_spec", "code"))},
        model_id=info.model_id,
    )
    client.set_registered_model_alias(model_name, CHALLENGER, str(version.version))
    return Registered(run_id, str(version.version), f"models:/{info.model_id}")


def _ensure_registered(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Arbiter fraud model (LightGBM, binary, probability of fraud)."
        )


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."

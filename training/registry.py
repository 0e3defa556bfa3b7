"""Reading the model registry: versions by number or alias, their models, runs and holdouts.

Writing (new versions, the `challenger` alias) is `training.tracking`; moving `champion` is
`training.promote`. MLflow's own errors are translated to `ModelNotFound` here, at the boundary.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow.artifacts
import mlflow.lightgbm
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from training.dataset import HOLDOUT_ARTIFACT, Part, read_holdout
from training.errors import ModelNotFound
from training.tracking import CHALLENGER, CHAMPION

KEY_METRICS = (
    "test_average_precision",
    "test_roc_auc",
    "test_recall_at_1pct_fpr",
    "baseline_test_average_precision",
)


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: tuple[str, ...]
    created_ms: int
    run_id: str
    metrics: dict[str, float]
    tags: dict[str, str]


def version(client: MlflowClient, name: str, number: str) -> ModelVersion:
    try:
        return client.get_model_version(name, number)
    except MlflowException as exc:
        raise ModelNotFound(f"model '{name}' has no version {number}") from exc


def by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding an alias, or None (also when the model is not registered at all)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def challenger_or(client: MlflowClient, name: str, number: str | None) -> ModelVersion:
    """The given version, or the one holding the alias `challenger`."""
    if number is not None:
        return version(client, name, number)
    found = by_alias(client, name, CHALLENGER)
    if found is None:
        raise ModelNotFound(
            f"model '{name}' has no version with the alias '{CHALLENGER}': train one with "
            "`arbiter train`, or name a version with --version"
        )
    return found


def load_booster(name: str, number: str) -> lgb.Booster:
    booster: lgb.Booster = mlflow.lightgbm.load_model(f"models:/{name}/{number}")
    return booster


def holdout_of(run_id: str) -> Part:
    with tempfile.TemporaryDirectory(prefix="arbiter-holdout-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=HOLDOUT_ARTIFACT, dst_path=tmp
            )
        except MlflowException as exc:
            raise ModelNotFound(f"run {run_id} has no stored holdout ({HOLDOUT_ARTIFACT})") from exc
        return read_holdout(Path(path))


def versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of a model, newest first, with its aliases and key test metrics."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        raise ModelNotFound(
            f"no registered model '{name}' at this tracking URI: train one with `arbiter train`"
        ) from exc
    aliases: dict[str, list[str]] = {}
    for alias, number in (registered.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for found in client.search_model_versions(f"name = '{name}'"):
        metrics: dict[str, float] = {}
        if found.run_id:
            run = client.get_run(found.run_id)
            metrics = {k: v for k, v in run.data.metrics.items() if k in KEY_METRICS}
        rows.append(
            VersionRow(
                version=str(found.version),
                aliases=tuple(sorted(aliases.get(str(found.version), []), key=_alias_order)),
                created_ms=int(found.creation_timestamp or 0),
                run_id=str(found.run_id or ""),
                metrics=metrics,
                tags=dict(found.tags or {}),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)


def _alias_order(alias: str) -> tuple[int, str]:
    return ({CHAMPION: 0, CHALLENGER: 1}.get(alias, 2), alias)

"""Loading the serving model from the MLflow model registry.

`alias_version(tracking_uri, name)` says which version holds the alias (cheap: what the
service polls). `load_model(tracking_uri, name, cache_dir)` resolves `models:/<name>@champion`,
downloads the version's model artifact once into `cache_dir/<name>/<version>/` (later starts
reuse it), reads the LightGBM flavor's model file named in its `MLmodel` file, and returns a
`LoadedModel`: the version's identity, a `Scorer`, and the training feature distribution logged
beside the model (`extra_files/feature_distribution.json`), if any.

MLflow's errors become `ModelUnavailable` here, at the boundary. Imports nothing from the other
Arbiter packages.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from models.scorer import Scorer

CHAMPION = "champion"
CHALLENGER = "challenger"
DISTRIBUTION_FILE = "feature_distribution.json"


class ModelUnavailable(Exception):
    """No model can be served: none holds the alias, or its artifact cannot be read."""

    code = "model_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AliasMissing(ModelUnavailable):
    """The registry answered: no version of the model holds the alias (none promoted yet, or
    the alias was taken away). Not a reason to serve a cached copy."""


_NOT_THERE = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str
    scorer: Scorer
    distribution: dict[str, Any] | None


def alias_version(tracking_uri: str, name: str, *, alias: str = CHAMPION) -> str:
    """The version of `name` holding `alias` now: one registry call, nothing downloaded (what
    the service polls to notice a promotion)."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return str(_by_alias(client, tracking_uri, name, alias).version)


def alias_identity(tracking_uri: str, name: str, *, alias: str = CHAMPION) -> str:
    """`version/run_id` of the version holding `alias` (`identity`): a model deleted and
    created again numbers its versions from 1 again, so the version alone can name another
    model."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = _by_alias(client, tracking_uri, name, alias)
    return f"{found.version}/{found.run_id or ''}"


def identity(model: LoadedModel) -> str:
    """What `alias_identity` says of the version `model` was loaded from."""
    return f"{model.version}/{model.run_id}"


def load_model(
    tracking_uri: str,
    name: str,
    cache_dir: Path,
    *,
    alias: str = CHAMPION,
    accept: Callable[[LoadedModel], LoadedModel] | None = None,
) -> LoadedModel:
    """The version of `name` holding `alias`, loaded and ready to score. The cache remembers
    which version that was (`load_cached` serves it when the registry does not answer), once
    `accept` (which raises `ModelUnavailable` for a model the caller cannot serve) took it."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    loaded = _load(
        client, tracking_uri, name, _by_alias(client, tracking_uri, name, alias), cache_dir
    )
    if accept is not None:
        loaded = accept(loaded)
    _remember(cache_dir / name / f"@{alias}.json", loaded)
    return loaded


def forget_cached(name: str, cache_dir: Path, *, alias: str = CHAMPION) -> None:
    """The registry says no version holds `alias`: a cached copy must not come back."""
    (cache_dir / name / f"@{alias}.json").unlink(missing_ok=True)


def _remember(pointer: Path, loaded: LoadedModel) -> None:
    """Which version held the alias, written so that a reader sees the old pointer or the new
    one, never half of one (several workers write it: each through its own temporary file)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pointer-", dir=pointer.parent)
    except OSError:  # the cache is a convenience: serving goes on without it
        return
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"version": loaded.version, "run_id": loaded.run_id}))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, pointer)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def load_cached(name: str, cache_dir: Path, *, alias: str = CHAMPION) -> LoadedModel:
    """The version that last held `alias` here, from the local cache, without the registry
    (for a start while MLflow does not answer). `ModelUnavailable` when nothing is cached."""
    pointer = cache_dir / name / f"@{alias}.json"
    try:
        seen = json.loads(pointer.read_text())
        version, run_id = str(seen["version"]), str(seen.get("run_id") or "")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"no cached {alias} of model '{name}' in {cache_dir}") from exc
    folder = _cached_folder(cache_dir / name, version, run_id)
    if folder is None:
        raise ModelUnavailable(f"the cached model '{name}' version {version} (run {run_id}) "
                               "is not on disk")  # fmt: skip
    booster, features, distribution = _read(folder)
    try:
        scorer = Scorer(booster, features)
    except ValueError as exc:
        raise ModelUnavailable(f"cached model '{name}' version {version}: {exc}") from exc
    return LoadedModel(name, version, run_id, scorer, distribution)


def load_version(tracking_uri: str, name: str, version: str, cache_dir: Path) -> LoadedModel:
    """That exact version of `name` (whatever holds the aliases now), ready to score: what a
    decision made with it is re-derived with."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelUnavailable(
            f"model '{name}' has no version {version} at {tracking_uri}"
        ) from exc
    return _load(client, tracking_uri, name, found, cache_dir)


def _load(
    client: MlflowClient, tracking_uri: str, name: str, found: ModelVersion, cache_dir: Path
) -> LoadedModel:
    version, run_id = str(found.version), str(found.run_id or "")
    # Version numbers are not unique over time (a model deleted and created again) nor across
    # registries sharing a data dir: a cached version is kept under its run id too.
    folder = _cached_folder(cache_dir / name, version, run_id)
    if folder is None:
        folder = cache_dir / name / (f"{version}-{run_id}" if run_id else version)
        _download(client, tracking_uri, name, version, folder)
    booster, features, distribution = _read(folder)
    try:
        scorer = Scorer(booster, features)
    except ValueError as exc:
        raise ModelUnavailable(f"model '{name}' version {version}: {exc}") from exc
    return LoadedModel(name, version, str(found.run_id or ""), scorer, distribution)


def _by_alias(client: MlflowClient, tracking_uri: str, name: str, alias: str) -> ModelVersion:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code not in _NOT_THERE:
            raise ModelUnavailable(
                f"the registry at {tracking_uri} failed to say which version of '{name}' is "
                f"{alias}: {exc.message}"
            ) from exc
        raise AliasMissing(
            f"model '{name}' has no version with the alias '{alias}' at {tracking_uri}: "
            "train one (`arbiter train`) and promote it"
        ) from exc


def _cached_folder(model_dir: Path, version: str, run_id: str) -> Path | None:
    """Where `version` of run `run_id` is cached: `<version>-<run_id>/`, or the layout before
    2026-12-08, `<version>/`, when its MLmodel names that run (or no run id is known)."""
    if run_id and (model_dir / f"{version}-{run_id}" / "MLmodel").is_file():
        return model_dir / f"{version}-{run_id}"
    legacy = model_dir / version
    if not (legacy / "MLmodel").is_file():
        return None
    if not run_id:
        return legacy
    try:
        recorded = yaml.safe_load((legacy / "MLmodel").read_text()).get("run_id")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return legacy if recorded == run_id else None


def _download(
    client: MlflowClient, tracking_uri: str, name: str, version: str, folder: Path
) -> None:
    """Download into a temporary sibling, then rename: a crash never leaves half a model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=folder.parent))
    try:
        uri = client.get_model_version_download_uri(name, version)
        download_artifacts(artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri)
        root = _model_root(tmp)
        try:
            root.rename(folder)
        except OSError:  # another worker got there first: keep its copy
            if not (folder / "MLmodel").is_file():
                raise
    except (MlflowException, OSError) as exc:
        raise ModelUnavailable(
            f"model '{name}' version {version} cannot be downloaded: {exc}"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_root(folder: Path) -> Path:
    """The folder holding `MLmodel` (download_artifacts may add a level)."""
    found = sorted(folder.rglob("MLmodel"), key=lambda p: len(p.parts))
    if not found:
        raise ModelUnavailable(f"no MLmodel file in the downloaded model ({folder})")
    return found[0].parent


def _read(folder: Path) -> tuple[lgb.Booster, list[str], dict[str, Any] | None]:
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelUnavailable(f"the MLmodel file in {folder} cannot be read: {exc}") from exc
    flavor = (meta.get("flavors") or {}).get("lightgbm")
    if not isinstance(flavor, dict) or "data" not in flavor:
        raise ModelUnavailable(f"the model in {folder} has no lightgbm flavor")
    if not str(flavor.get("model_class", "")).endswith("Booster"):
        raise ModelUnavailable(
            f"the model in {folder} is a {flavor.get('model_class')}, not a LightGBM Booster"
        )
    try:
        booster = lgb.Booster(model_file=str(folder / str(flavor["data"])))
    except (lgb.basic.LightGBMError, OSError) as exc:
        raise ModelUnavailable(f"the LightGBM model in {folder} cannot be read: {exc}") from exc
    features = (meta.get("metadata") or {}).get("features") or booster.feature_name()
    return booster, [str(f) for f in features], _distribution(folder, flavor)


def _distribution(folder: Path, flavor: dict[str, Any]) -> dict[str, Any] | None:
    for entry in flavor.get("extra_files") or []:
        path = folder / str(entry.get("path", ""))
        if path.name == DISTRIBUTION_FILE and path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
    return None

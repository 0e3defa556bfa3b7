"""A champion is served only if it can score the service's features: a version reading
features the spec does not serve is a failed load, the one serving stays, and the cache keeps
pointing at it. One trained on another spec version (its `feature_distribution.json`) is served
with a warning: the version changes with any edit of the spec."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import lightgbm as lgb
import mlflow
import numpy as np
from mlflow import MlflowClient

from api.app import create_app
from features.spec import load_spec
from tests.conftest import ROOT
from tests.integration.test_model_swap import FEATURES, NAME, score, settings_for, two_versions
from tests.server import running

SPEC_VERSION = load_spec(ROOT / "config" / "features.yaml").version


def register_with(uri, tmp_path, features, spec_version) -> str:
    """A version trained on `features` under a spec of version `spec_version`, recorded the
    way training/tracking.py records it."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(NAME).experiment_id
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, len(features)))
    y = (X[:, 0] + rng.normal(scale=0.5, size=400) > 1.0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbose": -1},
        lgb.Dataset(X, y, feature_name=features),
        num_boost_round=5,
    )
    dist = tmp_path / f"d-{uuid.uuid4().hex}" / "feature_distribution.json"
    dist.parent.mkdir()
    dist.write_text(json.dumps({"feature_spec_version": spec_version}))
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.set_tag("feature_spec.version", spec_version)
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            pip_requirements=[],
            metadata={"features": features},
            extra_files=[str(dist)],
        )
    version = client.create_model_version(
        NAME,
        source=f"models:/{info.model_id}",
        run_id=run.info.run_id,
        model_id=info.model_id,
        tags={"feature_spec.version": spec_version},
    )
    return str(version.version)


async def promoted(app, uri: str, version: str):
    """Move `champion` to `version` and let the app's watcher poll once: what it swapped in."""
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        NAME, "champion", version
    )
    return await asyncio.to_thread(app.state.runtime.model_watcher.check_now)


def test_a_champion_of_other_features_is_refused(tmp_path, redis_client):
    uri = two_versions(tmp_path / "mlflow")
    renamed = [f"v0_{name}" for name in FEATURES]  # an older spec's names
    other = register_with(uri, tmp_path, renamed, "0000000000000000")
    app = create_app(settings_for(tmp_path, uri))

    async def body(client: httpx.AsyncClient) -> None:
        swapped = await promoted(app, uri, other)
        scores = {(await score(client))["model_version"] for _ in range(3)}
        ready = (await client.get("/readyz")).json()["checks"]["model"]
        assert swapped is None, "a model reading none of the spec's features was swapped in"
        assert scores == {"1"} and ready["ok"] is False and ready["serving_version"] == "1"
        assert "does not serve: v0_" in ready["error"]
        pointer = tmp_path / "var" / "models" / NAME / "@champion.json"
        assert json.loads(pointer.read_text())["version"] == "1"  # a restart serves 1, not it

    running(app, body)


def test_a_champion_of_another_spec_version_is_served_with_a_warning(
    tmp_path, redis_client, caplog
):
    # The spec version hashes the whole spec, descriptions too: an edit that leaves every
    # feature as it was must not take every model out of service.
    uri = two_versions(tmp_path / "mlflow")
    other = register_with(uri, tmp_path, FEATURES, "0000000000000000")
    app = create_app(settings_for(tmp_path, uri))

    async def body(client: httpx.AsyncClient) -> None:
        swapped = await promoted(app, uri, other)
        assert swapped is not None and (await score(client))["model_version"] == other
        assert "trained on feature spec version 0000000000000000" in caplog.text

    running(app, body)

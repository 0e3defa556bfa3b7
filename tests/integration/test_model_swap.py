"""Model swaps inside the app: two tiny real LightGBM models registered in a temporary MLflow
store, `create_app` on real Redis and SQLite, its lifespan run and its routes called in process
(httpx's ASGI transport). Promoting version 2 is picked up by the app's watcher (`check_now()`,
the poll its background thread makes) while payments keep being scored, none failing; a version
that cannot be loaded keeps the old one serving; `/metrics` counts it all."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from api.app import create_app
from engine.settings import Settings
from features.spec import load_spec
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.own_servers import OwnMlflow
from tests.server import running

pytestmark = pytest.mark.integration

NAME = "arbiter-swap-test"
FEATURES = [f.name for f in load_spec(ROOT / "config" / "features.yaml").model.features]


def tiny_booster(seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, len(FEATURES)))
    y = (X[:, 0] + rng.normal(scale=0.5, size=400) > 1.0).astype(int)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": seed}
    return lgb.train(params, lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=5)


def register(client: MlflowClient, experiment: str, booster: lgb.Booster, alias: str) -> str:
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.lightgbm.log_model(
            booster, name="model", pip_requirements=[], metadata={"features": FEATURES}
        )
    version = client.create_model_version(
        NAME, source=f"models:/{info.model_id}", run_id=run.info.run_id, model_id=info.model_id
    )
    client.set_registered_model_alias(NAME, alias, str(version.version))
    return str(version.version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    return two_versions(tmp_path_factory.mktemp("swap-mlflow"))


def two_versions(folder: Path) -> str:
    """A tracking URI whose model holds version 1 as `champion`, version 2 as `challenger`."""
    return registry_of(folder, [(1, "champion"), (2, "challenger")])


def registry_of(folder: Path, versions: list[tuple[int, str]]) -> str:
    """A tracking URI whose model holds versions 1, 2, ... of `tiny_booster(seed)`, each with
    its alias."""
    uri = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment(
            NAME, artifact_location=(folder / "artifacts").resolve().as_uri()
        )
        client.create_registered_model(NAME)
        for number, (seed, alias) in enumerate(versions, 1):
            assert register(client, experiment, tiny_booster(seed), alias) == str(number)
    return uri


def settings_for(tmp_path: Path, uri: str, **changes: Any) -> Settings:
    values: dict[str, Any] = dict(
        redis_url=TEST_REDIS_URL,
        database_url=f"sqlite:///{tmp_path / 'arbiter.db'}",
        mlflow_tracking_uri=uri,
        model_name=NAME,
        data_dir=tmp_path / "var",
        feature_spec=ROOT / "config" / "features.yaml",
        policy_path=ROOT / "config" / "policy.yaml",
        policy_reload_seconds=3600,
        model_poll_seconds=3600,  # the test polls itself
        webhook_url=None,
    )
    return Settings(**{**values, **changes})


def payment() -> dict[str, Any]:
    return {
        "payment_id": f"pay-{uuid.uuid4().hex[:12]}", "account_id": f"acct-{uuid.uuid4().hex[:8]}",
        "amount": 25.0, "currency": "USD", "card_fp": f"card-{uuid.uuid4().hex[:8]}",
        "bin_country": "US", "billing_country": "US", "ip": "73.12.40.9",
    }  # fmt: skip


async def score(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/v1/payments/score", json=payment())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def promote(uri: str, version: str) -> None:
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        NAME, "champion", version
    )


def test_a_promotion_is_swapped_in_under_traffic_with_no_failed_request(
    tmp_path, registry, redis_client
):
    promote(registry, "1")
    app = create_app(settings_for(tmp_path, registry))

    async def body(client: httpx.AsyncClient) -> None:
        runtime = app.state.runtime
        assert (await score(client))["model_version"] == "1"

        # Payments keep coming, as a task on the app's event loop, during the swap.
        stop, seen, failures = asyncio.Event(), set(), []

        async def traffic() -> None:
            while not stop.is_set() or len(seen) < 2:
                response = await client.post("/v1/payments/score", json=payment())
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                seen.add(response.json()["model_version"])

        worker = asyncio.create_task(traffic())
        try:
            await asyncio.sleep(0.2)
            promote(registry, "2")
            swapped = await asyncio.to_thread(runtime.model_watcher.check_now)
            assert swapped is not None and swapped.version == "2"
            await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
        assert failures == [] and seen == {"1", "2"}
        assert (await score(client))["model_version"] == "2"

        ready = (await client.get("/readyz")).json()["checks"]["model"]
        assert ready == {"ok": True, "name": NAME, "version": "2"}
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = metrics.text
        assert f'arbiter_model_info{{alias="champion",name="{NAME}",version="2"}} 1' in text
        assert 'version="1"' not in text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("arbiter_decisions_total{")
        )
        assert counted >= 3 and 'arbiter_decisions_total{action="' in text
        assert f"arbiter_score_seconds_count {int(counted)}" in text

    running(app, body)


def test_a_version_that_cannot_load_keeps_the_old_one_and_is_reported(
    tmp_path, registry, redis_client
):
    promote(registry, "1")
    app = create_app(settings_for(tmp_path, registry))

    async def body(client: httpx.AsyncClient) -> None:
        runtime = app.state.runtime
        assert runtime.service.model.version == "1"
        # A new version whose artifacts are gone by the time it is promoted.
        mlflow_client = MlflowClient(tracking_uri=registry, registry_uri=registry)
        experiment = mlflow_client.get_experiment_by_name(NAME).experiment_id
        broken = register(mlflow_client, experiment, tiny_booster(3), "broken")
        uri = mlflow_client.get_model_version_download_uri(NAME, broken)
        shutil.rmtree(uri.removeprefix("file://"))
        promote(registry, broken)
        try:
            assert runtime.model_watcher.check_now() is None
            assert (await score(client))["model_version"] == "1"
            response = await client.get("/readyz")
            assert response.status_code == 200  # still ready: version 1 keeps scoring
            check = response.json()["checks"]["model"]
            assert check["ok"] is False and check["serving_version"] == "1"
            assert f"version {broken} cannot be downloaded" in check["error"]
            text = (await client.get("/metrics")).text
            assert 'arbiter_dependency_errors_total{dependency="model_load"} 1' in text
        finally:
            promote(registry, "1")
        assert runtime.model_watcher.check_now() is None
        assert (await client.get("/readyz")).json()["checks"]["model"]["ok"] is True

    running(app, body)


def test_the_challenger_shadows_the_champion_on_every_scored_payment(
    tmp_path, registry, redis_client
):
    promote(registry, "1")
    app = create_app(settings_for(tmp_path, registry, shadow_challenger=True))

    async def body(client: httpx.AsyncClient) -> None:
        decided = await score(client)
        assert decided["model_version"] == "1"
        record = (await client.get(f"/v1/decisions/{decided['decision_id']}")).json()
        assert record["shadow"]["version"] == "2" and 0.0 <= record["shadow"]["score"] <= 1.0
        assert (await client.get("/readyz")).json()["checks"]["shadow"]["version"] == "2"
        assert 'arbiter_model_info{alias="challenger"' in (await client.get("/metrics")).text

    running(app, body)


def test_with_the_registry_down_at_start_the_cached_champion_serves_and_says_so(
    tmp_path, registry, redis_client
):
    promote(registry, "1")
    first = create_app(settings_for(tmp_path, registry))

    async def loaded(client: httpx.AsyncClient) -> None:
        assert (await score(client))["model_version"] == "1"

    running(first, loaded)  # the champion is now in var/models, and remembered as such
    (tmp_path / "a-file").write_text("")  # a file where MLflow wants a folder: even root
    down = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"  # cannot open the registry
    app = create_app(settings_for(tmp_path, down))

    async def body(client: httpx.AsyncClient) -> None:
        ready = await client.get("/readyz")
        model = ready.json()["checks"]["model"]
        assert ready.status_code == 200, ready.text
        assert (model["version"], model["source"], model["ok"]) == ("1", "cache", False)
        assert model["error"]
        assert (await score(client))["model_version"] == "1"

    running(app, body)


def test_with_the_tracking_server_stopped_at_start_the_cached_champion_serves_until_it_is_back(
    tmp_path, registry, redis_client
):
    """The registry behind a real `mlflow server`, stopped and started again: a start while it
    is down serves the cached champion at once (the service's registry calls give up in
    seconds, not MLflow's default minutes) and follows the registry again once it is back."""
    promote(registry, "1")
    server = OwnMlflow(registry, tmp_path)
    server.start()
    try:
        first = create_app(settings_for(tmp_path, server.url))

        async def loaded(client: httpx.AsyncClient) -> None:
            assert (await score(client))["model_version"] == "1"

        running(first, loaded)  # through the server; the champion is cached in var/models
        server.stop()
        app = create_app(settings_for(tmp_path, server.url))

        async def body(client: httpx.AsyncClient) -> None:
            ready = await client.get("/readyz")
            model = ready.json()["checks"]["model"]
            assert ready.status_code == 200, ready.text
            assert (model["version"], model["source"], model["ok"]) == ("1", "cache", False)
            assert "127.0.0.1" in model["error"]
            assert (await score(client))["model_version"] == "1"
            server.start()
            promote(registry, "2")  # promoted while this service was cut off
            await asyncio.to_thread(app.state.runtime.model_watcher.check_now)
            model = (await client.get("/readyz")).json()["checks"]["model"]
            assert (model["version"], model["ok"]) == ("2", True) and "source" not in model
            assert (await score(client))["model_version"] == "2"

        running(app, body)
    finally:
        server.stop()


def test_a_champion_taken_away_is_not_brought_back_from_the_cache(tmp_path, registry, redis_client):
    promote(registry, "1")
    running(create_app(settings_for(tmp_path, registry)), score)  # cached, pointer written
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    client.delete_registered_model_alias(NAME, "champion")
    try:
        app = create_app(settings_for(tmp_path, registry))

        async def body(client: httpx.AsyncClient) -> None:
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and not ready.json()["checks"]["model"]["ok"]

        running(app, body)
        assert not (tmp_path / "var" / "models" / NAME / "@champion.json").exists()
    finally:
        promote(registry, "1")

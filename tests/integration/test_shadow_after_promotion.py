"""`arbiter promote` removes the `challenger` alias from the version it crowns
(docs/training.md, training/promote.py `_crown`): from the next poll nothing is shadowed, and
that is no error; a challenger that cannot be loaded is counted as `challenger_model_load`,
not as the champion's `model_load`."""

from __future__ import annotations

import asyncio
import shutil

import httpx
from mlflow import MlflowClient

from api.app import create_app
from tests.integration.test_model_swap import (
    NAME,
    register,
    score,
    settings_for,
    tiny_booster,
    two_versions,
)
from tests.server import running


def test_after_a_promotion_the_champion_is_not_shadowed_by_itself(tmp_path, redis_client):
    uri = two_versions(tmp_path / "mlflow")  # 1 champion, 2 challenger
    app = create_app(settings_for(tmp_path, uri, shadow_challenger=True))

    async def body(client: httpx.AsyncClient) -> None:
        runtime = app.state.runtime
        assert runtime.service.shadow.version == "2"
        # What `arbiter promote` does when 2 passes the gate (training/promote.py _crown).
        registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
        registry.set_registered_model_alias(NAME, "champion", "2")
        registry.delete_registered_model_alias(NAME, "challenger")
        for _ in range(3):  # three polls of each watcher (30 s at the default interval)
            await asyncio.to_thread(runtime.model_watcher.check_now)
            await asyncio.to_thread(runtime.shadow_watcher.check_now)

        decided = await score(client)
        assert decided["model_version"] == "2"
        record = (await client.get(f"/v1/decisions/{decided['decision_id']}")).json()
        ready = (await client.get("/readyz")).json()["checks"]
        metrics = (await client.get("/metrics")).text
        # No challenger holds the alias: nothing is shadowed, the champion is healthy.
        assert record["shadow"] is None, "the champion scored itself as its own shadow"
        assert ready["model"]["ok"] and ready["shadow"]["ok"], ready
        assert 'arbiter_model_info{alias="challenger"' not in metrics
        assert 'arbiter_dependency_errors_total{dependency="model_load"}' not in metrics, (
            "the champion's model_load counter counts every challenger poll"
        )

    running(app, body)


def test_a_failing_challenger_is_not_counted_as_a_champion_load_failure(tmp_path, redis_client):
    """The champion is fine; a challenger whose artifact is gone fails to load. The champion's
    `model_load` counter (the one docs/api.md's "Model swaps" tells ops to watch) counts it."""
    uri = two_versions(tmp_path / "mlflow")
    app = create_app(settings_for(tmp_path, uri, shadow_challenger=True))

    async def body(client: httpx.AsyncClient) -> None:
        runtime = app.state.runtime
        registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = registry.get_experiment_by_name(NAME).experiment_id
        broken = register(registry, experiment, tiny_booster(3), "challenger")
        shutil.rmtree(registry.get_model_version_download_uri(NAME, broken).removeprefix("file://"))
        await asyncio.to_thread(runtime.shadow_watcher.check_now)
        ready = (await client.get("/readyz")).json()["checks"]
        assert ready["model"] == {"ok": True, "name": NAME, "version": "1"}
        metrics = (await client.get("/metrics")).text
        assert 'arbiter_dependency_errors_total{dependency="model_load"}' not in metrics, (
            "a challenger failure is counted as the champion's model_load"
        )

    running(app, body)

"""Policy hot reload inside the app: `create_app` on a policy file in a temporary directory,
real Redis and SQLite, no model (its absence is reported apart), its lifespan run and its routes
called in process (httpx's ASGI transport; the uvicorn process is the e2e suite's). An edit is
picked up by the app's watcher (`check_now()`, the poll its background thread makes) and shown
by `/readyz`."""

from __future__ import annotations

import os

import httpx
import pytest
import yaml

from api.app import create_app
from engine.policy import InvalidPolicy
from engine.settings import Settings
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.server import running

pytestmark = pytest.mark.integration

RAW = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())


def write(path, raw: dict, tick: int) -> None:
    path.write_text(yaml.safe_dump(raw))
    os.utime(path, ns=(tick * 1_000_000_000, tick * 1_000_000_000))  # a distinct mtime per edit


def settings_for(tmp_path, policy) -> Settings:
    return Settings(
        redis_url=TEST_REDIS_URL,
        database_url=f"sqlite:///{tmp_path / 'arbiter.db'}",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_dir=tmp_path / "var",
        feature_spec=ROOT / "config" / "features.yaml",
        policy_path=policy,
        policy_reload_seconds=3600,  # the test polls itself
        webhook_url=None,
    )


async def policy_check(client: httpx.AsyncClient) -> dict:
    return (await client.get("/readyz")).json()["checks"]["policy"]


def test_an_edit_is_served_and_a_bad_one_is_reported_while_the_last_good_serves(
    tmp_path, redis_client
):
    path = tmp_path / "policy.yaml"
    write(path, RAW, 1)
    app = create_app(settings_for(tmp_path, path))

    async def body(client: httpx.AsyncClient) -> None:
        runtime = app.state.runtime
        first = await policy_check(client)
        assert first["ok"] and first["name"] == "default"

        write(path, {**RAW, "thresholds": {**RAW["thresholds"], "review": 0.30}}, 2)
        assert runtime.policy_watcher.check_now() is not None
        second = await policy_check(client)
        assert second["ok"] and second["version"] != first["version"]
        assert runtime.service.policy.model.thresholds.review == 0.30

        write(path, {**RAW, "thresholds": {**RAW["thresholds"], "review": 0.99}}, 3)
        assert runtime.policy_watcher.check_now() is None
        ready = (await client.get("/readyz")).json()
        refused = ready["checks"]["policy"]
        assert refused["ok"] is False and refused["serving_version"] == second["version"]
        assert "thresholds: Value error, must be ordered" in refused["error"]
        # Not a readiness failure: only the missing model is (this test trains none).
        assert ready["error"]["message"].startswith("model: ")
        assert "policy" not in ready["error"]["message"]
        assert runtime.service.policy.version == second["version"]

        write(path, RAW, 4)
        runtime.policy_watcher.check_now()
        assert await policy_check(client) == first

    running(app, body)


def test_an_app_on_an_invalid_policy_refuses_to_start(tmp_path, redis_client):
    path = tmp_path / "policy.yaml"
    rule = {**RAW["rules"][0], "when": {"feature": "nope", "above": 1}}
    write(path, {**RAW, "rules": [rule]}, 1)
    app = create_app(settings_for(tmp_path, path))

    async def body(client: httpx.AsyncClient) -> None:
        raise AssertionError("the app started")

    with pytest.raises(InvalidPolicy, match="feature spec does not provide: nope"):
        running(app, body)

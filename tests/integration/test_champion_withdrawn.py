"""A champion alias taken away while the service runs: the running watcher forgets the cached
pointer as the start does (api/app.py `from_cache`), so a restart while the registry is down
does not bring the withdrawn champion back."""

from __future__ import annotations

import asyncio

import httpx
from mlflow import MlflowClient

from api.app import create_app
from tests.integration.test_model_swap import NAME, score, settings_for, two_versions
from tests.server import running


def test_a_champion_taken_away_at_run_time_is_not_brought_back_from_the_cache(
    tmp_path, redis_client
):
    uri = two_versions(tmp_path / "mlflow")
    app = create_app(settings_for(tmp_path, uri))

    async def withdraw(client: httpx.AsyncClient) -> None:
        assert (await score(client))["model_version"] == "1"
        MlflowClient(tracking_uri=uri, registry_uri=uri).delete_registered_model_alias(
            NAME, "champion"
        )
        await asyncio.to_thread(app.state.runtime.model_watcher.check_now)  # AliasMissing

    running(app, withdraw)
    assert not (tmp_path / "var" / "models" / NAME / "@champion.json").exists()
    (tmp_path / "a-file").write_text("")
    down = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"  # the registry cannot be opened
    restarted = create_app(settings_for(tmp_path, down))

    async def body(client: httpx.AsyncClient) -> None:
        ready = await client.get("/readyz")
        assert ready.status_code == 503, "the withdrawn champion came back from the cache"

    running(restarted, body)

"""A version number names a model only inside one registry and one life of it: pointed at
another registry with the same data dir, or after the registered model is deleted and trained
again (numbers restart at 1), the service loads the version the alias names, not the cached
files of another run (each cached version keeps its run id), and a poll notices the new run."""

from __future__ import annotations

import httpx
from mlflow import MlflowClient

from api.app import create_app
from tests.integration.test_model_swap import (
    NAME,
    register,
    registry_of,
    settings_for,
    tiny_booster,
    two_versions,
)
from tests.server import running


def test_version_1_of_another_registry_is_not_served_from_the_cache(tmp_path, redis_client):
    first = two_versions(tmp_path / "first")  # version 1 = tiny_booster(1)

    async def nothing(client: httpx.AsyncClient) -> None:
        pass

    running(create_app(settings_for(tmp_path, first)), nothing)  # cached in var/models/
    second = registry_of(tmp_path / "second", [(5, "champion")])  # version 1 = tiny_booster(5)
    expected_run = (
        MlflowClient(tracking_uri=second, registry_uri=second).get_model_version(NAME, "1").run_id
    )
    app = create_app(settings_for(tmp_path, second))

    async def body(client: httpx.AsyncClient) -> None:
        model = app.state.runtime.service.model
        served = model.scorer.booster.model_to_string()
        assert model.run_id == expected_run
        assert served == tiny_booster(5).model_to_string(), (
            "the cached booster of the other registry serves under the new run id"
        )

    running(app, body)


def test_a_retrained_version_1_after_the_model_was_recreated_is_swapped_in(tmp_path, redis_client):
    uri = two_versions(tmp_path / "mlflow")
    app = create_app(settings_for(tmp_path, uri))

    async def body(client: httpx.AsyncClient) -> None:
        runtime = app.state.runtime
        registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
        registry.delete_registered_model(NAME)  # a reset of the model; numbers restart at 1
        registry.create_registered_model(NAME)
        experiment = registry.get_experiment_by_name(NAME).experiment_id
        assert register(registry, experiment, tiny_booster(5), "champion") == "1"
        runtime.model_watcher.check_now()
        model = runtime.service.model
        new_run = registry.get_model_version(NAME, "1").run_id
        assert model.run_id == new_run, "the new champion (same number) is never loaded"

    running(app, body)


def test_a_cache_of_the_layout_before_run_ids_still_serves_while_the_registry_is_down(
    tmp_path, redis_client
):
    uri = two_versions(tmp_path / "mlflow")

    async def nothing(client: httpx.AsyncClient) -> None:
        pass

    running(create_app(settings_for(tmp_path, uri)), nothing)  # caches version 1
    models = tmp_path / "var" / "models" / NAME
    (current,) = [p for p in models.iterdir() if p.name.startswith("1-")]
    current.rename(models / "1")  # as an older release left it: `<version>/`
    (tmp_path / "a-file").write_text("")
    down = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"  # the registry cannot be opened
    restarted = create_app(settings_for(tmp_path, down))

    async def body(client: httpx.AsyncClient) -> None:
        ready = (await client.get("/readyz")).json()["checks"]["model"]
        assert (ready["version"], ready["source"]) == ("1", "cache"), ready

    running(restarted, body)

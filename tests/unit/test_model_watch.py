"""`ModelWatcher` with a fake registry: a new version is loaded then swapped in, a failed load
keeps the model serving and is reported until the registry answers again."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine.model_watch import ModelWatcher


@dataclass(frozen=True)
class Model:
    version: str
    name: str = "m"


class Registry:
    """The alias points at `version`; loading `broken` versions fails."""

    def __init__(self, version: str | None = "1") -> None:
        self.version = version
        self.broken: set[str] = set()
        self.loads = 0

    def resolve(self) -> str:
        if self.version is None:
            raise LookupError("no version holds the alias")
        return self.version

    def load(self) -> Model:
        self.loads += 1
        version = self.resolve()
        if version in self.broken:
            raise OSError(f"version {version} cannot be downloaded")
        return Model(version)


def watcher(registry: Registry, swapped: list[Model], errors: list[str]) -> ModelWatcher[Model]:
    return ModelWatcher(
        registry.load, swapped.append, resolve=registry.resolve, interval_s=3600,
        on_error=errors.append,
    )  # fmt: skip


def test_the_first_check_loads_and_a_new_version_is_swapped_in_once():
    registry, swapped, errors = Registry("1"), [], []
    models = watcher(registry, swapped, errors)
    assert models.check_now() == Model("1") and models.serving_version == "1"
    assert models.check_now() is None and registry.loads == 1  # same version: not reloaded
    registry.version = "2"
    assert models.check_now() == Model("2")
    assert swapped == [Model("1"), Model("2")] and models.model == Model("2")
    assert models.last_error is None and errors == []


def test_a_failed_load_keeps_the_old_model_and_is_reported_until_it_loads():
    registry, swapped, errors = Registry("1"), [], []
    models = watcher(registry, swapped, errors)
    models.check_now()
    registry.version = "2"
    registry.broken.add("2")
    assert models.check_now() is None and models.check_now() is None
    assert models.serving_version == "1" and swapped == [Model("1")]
    assert models.last_error == "version 2 cannot be downloaded"
    assert errors == ["version 2 cannot be downloaded"] * 2  # every failed poll is counted
    registry.broken.clear()
    assert models.check_now() == Model("2") and models.last_error is None


def test_an_alias_that_cannot_be_resolved_keeps_serving():
    registry, swapped, errors = Registry("1"), [], []
    models = watcher(registry, swapped, errors)
    models.check_now()
    registry.version = None
    assert models.check_now() is None
    assert models.serving_version == "1" and models.last_error == "no version holds the alias"
    registry.version = "1"
    assert models.check_now() is None and models.last_error is None


def test_without_any_model_the_first_failure_leaves_nothing_serving():
    registry, swapped, errors = Registry(None), [], []
    models = watcher(registry, swapped, errors)
    assert models.check_now() is None and models.model is None
    assert models.last_error == "no version holds the alias" and swapped == []


def test_the_background_thread_polls_and_stops():
    registry, swapped = Registry("1"), threading.Event()
    models = ModelWatcher(
        registry.load, lambda _model: swapped.set(), resolve=registry.resolve, interval_s=0.01
    )
    models.start()
    try:
        assert swapped.wait(5.0)
    finally:
        models.stop()
    assert models.serving_version == "1"

"""What the end-to-end tests share: one simulated world, the payment model and the account model
trained on it with the shipped configurations into a temporary MLflow store and promoted
champion (once per session, about a minute and a half)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from training import tracking
from training.config import TrainingConfig, load_training_config
from training.pipeline import Registry, Source, load_source, train
from training.promote import promote
from training.simulator import SimConfig, simulate, write_world

NAME = "arbiter-fraud-e2e"
ACCOUNT_NAME = "arbiter-fraud-account-e2e"
# The size `make run` simulates: models trained on less miss the rarer scenarios (a world of a
# thousand accounts holds two card-testing rings), and the scenario tests would prove nothing.
WORLD = SimConfig(accounts=2000, days=60, seed=2)


@dataclass(frozen=True)
class Models:
    tracking_uri: str
    folder: Path
    source: Source
    payment: Registry
    account: Registry

    def config(self, name: str = "training.yaml", rounds: int | None = None) -> TrainingConfig:
        """A training config from config/; with `rounds`, a fixed number of boosting rounds
        at a higher learning rate (a quick model, for tests that only need another version)."""
        config = load_training_config(ROOT / "config" / name)
        if rounds is None:
            return config
        params = {**config.model.params, "learning_rate": 0.1}
        fast = config.model.model_copy(
            update={"num_boost_round": rounds, "early_stopping_rounds": rounds, "params": params}
        )
        return config.model_copy(update={"model": fast})

    def train_payment(self, rounds: int = 100) -> str:
        """Train (and register as challenger) another payment model version; its number."""
        return str(train(self.source, self.config(rounds=rounds), self.payment).registered.version)


def train_models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """The session's `models` fixture (tests/conftest.py, so that tests/integration and
    tests/e2e share one training)."""
    folder = tmp_path_factory.mktemp("e2e-mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        write_world(simulate(WORLD), folder, jsonl=False)
        source = load_source(folder / "events.parquet", ROOT / "config" / "features.yaml")
        made = Models(
            uri, folder, source,
            Registry(uri, folder / "artifacts", NAME, NAME),
            Registry(uri, folder / "artifacts", ACCOUNT_NAME, ACCOUNT_NAME),
        )  # fmt: skip
        client = tracking.configure(uri)
        for registry, config in ((made.payment, "training.yaml"),
                                 (made.account, "training-account.yaml")):  # fmt: skip
            settings = made.config(config)
            train(source, settings, registry)
            outcome = promote(client, registry.model_name, settings.promotion)
            assert outcome.promoted, outcome
    return made

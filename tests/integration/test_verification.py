"""Stored decisions verified against the exact model version that made them (`engine.verification`,
`arbiter decisions verify`): tiny real LightGBM models in a temporary MLflow registry (SQLite),
decisions made by `DecisionService` in process with version 1 on real Redis and a real decision
store (SQLite and PostgreSQL), then two later versions trained and promoted champion. Every
decision made with version 1 still matches it; a feature value altered in the database does
not; stored contributions equal an independent `shap.TreeExplainer`."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pytest
import redis
import shap
import sqlalchemy as sa
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli import decisions as decisions_cmds
from engine.deferred import DeferredContributions
from engine.errors import DecisionNotFound
from engine.policy import load_policy
from engine.records import StoredDecision
from engine.schema import decisions
from engine.service import DecisionService
from engine.store import DecisionStore
from engine.verification import TOLERANCE, Verifier
from features.online import OnlineStore
from features.spec import load_spec
from models.registry import ModelUnavailable, alias_version, load_version
from tests.conftest import ROOT, TEST_REDIS_URL, drop_postgres_schema, new_postgres_schema

pytestmark = pytest.mark.integration

NAME = "arbiter-verify-test"
PLAN = load_spec(ROOT / "config" / "features.yaml")
FEATURES = [f.name for f in PLAN.model.features]
AMOUNT = FEATURES.index("amount")
BACKENDS = ("sqlite", "postgresql")


def tiny_booster(seed: int) -> lgb.Booster:
    """A small real model whose score rises with the amount (so payments get varied actions)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(500, len(FEATURES)))
    X[:, AMOUNT] = rng.uniform(0, 200, size=500)
    y = (X[:, AMOUNT] / 100 + 0.3 * X[:, 1] + rng.normal(scale=0.3, size=500) > 1.0).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": seed,
              "deterministic": True, "num_threads": 1}  # fmt: skip
    return lgb.train(params, lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=20)


def register(uri: str, booster: lgb.Booster) -> str:
    """Log and register `booster` as the next version of NAME and promote it champion."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(NAME).experiment_id
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.lightgbm.log_model(
            booster, name="model", pip_requirements=[], metadata={"features": FEATURES}
        )
    version = str(
        client.create_model_version(
            NAME, source=f"models:/{info.model_id}", run_id=run.info.run_id,
            model_id=info.model_id,
        ).version
    )  # fmt: skip
    client.set_registered_model_alias(NAME, "champion", version)
    return version


def payment(**changes: Any) -> dict[str, Any]:
    body = {
        "payment_id": f"pay-{uuid.uuid4().hex[:12]}", "account_id": f"acct-{uuid.uuid4().hex[:8]}",
        "amount": 25.0, "currency": "USD", "card_fp": f"card-{uuid.uuid4().hex[:8]}",
        "bin_country": "US", "billing_country": "US", "ip": "73.12.40.9",
    }  # fmt: skip
    return {**body, **changes}


@dataclass
class World:
    uri: str  # the MLflow registry
    cache: Path  # where verifiers keep downloaded versions
    urls: dict[str, str]  # decision store URL per backend
    ids: dict[str, dict[str, list[str]]]  # backend -> kind of decision -> decision ids

    def store(self, backend: str) -> DecisionStore:
        return DecisionStore(self.urls[backend])

    def load(self, name: str, version: str) -> Any:
        return load_version(self.uri, name, version, self.cache)


def decide(service: DecisionService, cut_off: DecisionService, store: DecisionStore) -> dict:
    """Payments of every kind decided with version 1: their ids by kind."""
    ids: dict[str, list[str]] = {"scored": [], "adverse": [], "not_scored": []}
    returning = payment(amount=60.0)
    for amount in (5.0, 40.0, 80.0, 120.0, 160.0, 199.0):
        decided = service.score_payment(payment(amount=amount))
        ids["scored"].append(decided.decision_id)
    for amount in (90.0, 180.0):  # the same account and card again: other account features
        again = {**returning, "payment_id": f"pay-{uuid.uuid4().hex[:12]}", "amount": amount}
        ids["scored"].append(service.score_payment(again).decision_id)
    deny = service.score_payment(payment(ip="199.10.4.7"))  # deny-listed: declined, explained
    assert deny.action == "decline" and deny.score is not None
    ids["scored"].append(deny.decision_id)
    store.set_account_status("acct-suspended", "suspended", actor="test", reason="verify")
    ids["not_scored"].append(
        service.score_payment(payment(account_id="acct-suspended")).decision_id
    )
    degraded = cut_off.score_payment(payment())
    assert degraded.degraded
    ids["not_scored"].append(degraded.decision_id)
    ids["adverse"] = [i for i in ids["scored"] if store.get_decision(i).record.action != "allow"]
    ids["allow"] = [i for i in ids["scored"] if i not in ids["adverse"]]
    assert ids["adverse"] and len(ids["allow"]) >= 2, ids
    ids["deny"] = [deny.decision_id]
    return ids


@pytest.fixture(scope="module")
def world(tmp_path_factory, redis_server, postgres_admin) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("verify")
    uri = f"sqlite:///{folder}/mlflow.db"
    prefix = f"verify-{uuid.uuid4().hex[:8]}"  # beside other tests' keys in the test database
    schema, pg_url = new_postgres_schema(postgres_admin)
    made = World(uri, folder / "models", {"sqlite": f"sqlite:///{folder}/arbiter.db",
                                          "postgresql": pg_url}, {})  # fmt: skip
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
            patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.create_experiment(NAME, artifact_location=(folder / "art").resolve().as_uri())
            client.create_registered_model(NAME)
            assert register(uri, tiny_booster(1)) == "1"
            v1 = made.load(NAME, "1")
            policy = load_policy(ROOT / "config" / "policy.yaml", {f.name for f in PLAN.features})
            online = OnlineStore(redis_server, PLAN, prefix=prefix)
            down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
            for backend in BACKENDS:
                store = made.store(backend)
                store.migrate()
                common = dict(
                    store=store, policy=policy, model=v1, feature_spec_version=PLAN.version
                )
                service = DecisionService(features=online, **common)
                cut_off = DecisionService(features=OnlineStore(down, PLAN, prefix=prefix), **common)
                made.ids[backend] = decide(service, cut_off, store)
                # An allow decision read once: its contributions derived and stored beside it.
                deferred = DeferredContributions(store, made.load)
                assert deferred.decision(made.ids[backend]["allow"][0]).contributions is not None
                store.close()
            # Later models, trained on other data, promoted over version 1.
            assert register(uri, tiny_booster(2)) == "2"
            assert register(uri, tiny_booster(3)) == "3"
            assert alias_version(uri, NAME) == "3"
        yield made
    finally:
        for key in redis_server.scan_iter(match=f"{prefix}:*", count=1000):
            redis_server.delete(key)
        drop_postgres_schema(postgres_admin, schema)


def set_json(url: str, decision_id: str, **columns: Any) -> None:
    """Overwrite JSON columns of a stored decision, outside the store (tampering)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(decisions).where(decisions.c.decision_id == decision_id).values(**columns)
            )
    finally:
        engine.dispose()


def other_amount(world: World, record: Any) -> float:
    """An amount version 1 scores otherwise than the one the record was decided on."""
    v1 = world.load(NAME, "1").scorer
    return next(
        a for a in (1.0, 199.0, 60.0)
        if abs(v1.score(v1.vector({**record.features, "amount": a})).margin - record.raw_margin)
        > 1e-3
    )  # fmt: skip


def stored(world: World, backend: str, decision_id: str) -> StoredDecision:
    store = world.store(backend)
    try:
        return store.get_decision(decision_id)
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_decisions_made_with_version_1_match_it_after_later_versions_were_promoted(world, backend):
    ids = world.ids[backend]
    champion = world.load(NAME, "3")
    store = world.store(backend)
    try:
        # Wired as the app would: sharing the loaded versions of the deferred contributions.
        verifier = Verifier(store, DeferredContributions(store, world.load).model)
        results = {r.decision_id: r for r in verifier.verify_sample(None)}
        records = {i: store.get_decision(i) for i in results}
    finally:
        store.close()

    assert set(results) == set(ids["scored"]) | set(ids["not_scored"])
    for decision_id in ids["scored"]:
        result, record = results[decision_id], records[decision_id].record
        assert (result.status, result.model_name, result.model_version) == ("match", NAME, "1")
        assert result.margin_recorded == record.raw_margin and result.score_recorded == record.score
        assert abs(result.margin_derived - record.raw_margin) <= TOLERANCE
        # The champion scores the same features otherwise: version 1 was what verified it.
        now = champion.scorer.score(champion.scorer.vector(record.features)).margin
        assert abs(now - record.raw_margin) > 1e-6
    for decision_id in [*ids["adverse"], ids["allow"][0]]:  # contributions stored: compared
        assert 0.0 <= results[decision_id].max_contribution_diff <= TOLERANCE
    assert results[ids["allow"][1]].max_contribution_diff is None  # never read: none stored
    for decision_id in ids["not_scored"]:
        result = results[decision_id]
        assert result.status == "not_scored" and result.score_derived is None
    assert "ACCOUNT_SUSPENDED" in results[ids["not_scored"][0]].detail
    assert "degraded" in results[ids["not_scored"][1]].detail


@pytest.mark.parametrize("backend", BACKENDS)
def test_stored_values_altered_in_the_database_are_mismatches(world, backend):
    ids, url = world.ids[backend], world.urls[backend]
    altered, explained = ids["adverse"][0], ids["deny"][0]
    original = stored(world, backend, altered).record
    other = stored(world, backend, explained)
    features = {**original.features, "amount": other_amount(world, original)}
    worst = max(other.contributions, key=lambda k: abs(other.contributions[k]))
    nudged = {**other.contributions, worst: other.contributions[worst] + 1e-6}
    set_json(url, altered, features=features)
    set_json(url, explained, contributions=nudged)
    store = world.store(backend)
    try:
        verifier = Verifier(store, world.load)
        tampered = verifier.verify(altered)
        nudged_one = verifier.verify(explained)
        untouched = verifier.verify(next(i for i in ids["scored"] if i not in (altered, explained)))
    finally:
        set_json(url, altered, features=dict(original.features))
        set_json(url, explained, contributions=dict(other.contributions))
        store.close()

    assert tampered.status == "mismatch" and tampered.model_version == "1"
    assert tampered.detail.startswith(f"model {NAME} v1: margin differs by ")
    assert "contributions differ by up to" in tampered.detail
    assert tampered.max_contribution_diff > TOLERANCE
    assert nudged_one.status == "mismatch"
    assert f"contributions differ by up to 1e-06 ({worst})" in nudged_one.detail
    assert "from the recorded margin" in nudged_one.detail
    assert "margin differs" not in nudged_one.detail  # the score itself still reproduces
    assert untouched.status == "match"


def test_a_sample_is_drawn_by_its_seed_and_comes_in_chain_order(world):
    store = world.store("sqlite")
    try:
        verifier = Verifier(store, world.load)
        first = verifier.verify_sample(4, seed=7)
        again = verifier.verify_sample(4, seed=7)
        everything = verifier.verify_sample(None)
        more_than_stored = verifier.verify_sample(1000, seed=7)
        seqs = [store.get_decision(r.decision_id).seq for r in first]
    finally:
        store.close()
    assert len(first) == 4 and first == again
    assert seqs == sorted(seqs) and {r.decision_id for r in first} <= {
        r.decision_id for r in everything
    }
    assert more_than_stored == everything


def test_a_model_that_cannot_be_loaded_is_reported_not_raised(world):
    asked: list[tuple[str, str]] = []

    def gone(name: str, version: str) -> Any:
        asked.append((name, version))
        raise ModelUnavailable(f"model '{name}' version {version} cannot be downloaded: gone")

    store = world.store("sqlite")
    try:
        verifier = Verifier(store, gone)
        results = verifier.verify_sample(None)
        with pytest.raises(DecisionNotFound, match="no decision no-such-decision"):
            verifier.verify("no-such-decision")
    finally:
        store.close()
    statuses = {r.status for r in results}
    assert statuses == {"model_unavailable", "not_scored"}
    unavailable = next(r for r in results if r.status == "model_unavailable")
    assert unavailable.detail == (
        f"model {NAME} v1: model '{NAME}' version 1 cannot be downloaded: gone"
    )
    assert asked == [(NAME, "1")]  # one failed load per version in a sample, not per decision


def test_stored_contributions_equal_an_independent_tree_explainer(world):
    """The record's contributions, as stored and read back, against shap on the booster read
    from the registry by MLflow itself (not by `models.registry`)."""
    mlflow.set_tracking_uri(world.uri)
    mlflow.set_registry_uri(world.uri)
    booster = mlflow.lightgbm.load_model(f"models:/{NAME}/1")
    for decision_id in world.ids["sqlite"]["adverse"]:
        decision = stored(world, "sqlite", decision_id)
        record = decision.record
        row = np.array(
            [[np.nan if record.features.get(f) is None else record.features[f] for f in FEATURES]],
            dtype=np.float64,
        )
        explained = shap.TreeExplainer(booster)(row)
        theirs = dict(zip(FEATURES, explained.values[0], strict=True))
        ours = decision.contributions
        assert set(ours) == set(FEATURES)
        assert max(abs(ours[f] - theirs[f]) for f in FEATURES) <= 1e-9
        assert abs(decision.base_value - float(np.ravel(explained.base_values)[0])) <= 1e-9
        margin = float(booster.predict(row, raw_score=True)[0])
        assert abs(record.raw_margin - margin) <= 1e-9
        assert abs(decision.base_value + sum(ours.values()) - record.raw_margin) <= 1e-9


def arbiter(world: World, *args: str) -> tuple[int, str]:
    """`arbiter decisions verify` as users run it: the console script, in its own process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    environment.update(
        ARBITER_DATABASE_URL=world.urls["sqlite"], ARBITER_MLFLOW_TRACKING_URI=world.uri,
        ARBITER_DATA_DIR=str(world.cache.parent / "var"), ARBITER_REDIS_URL=TEST_REDIS_URL,
        MLFLOW_DISABLE_TELEMETRY="true", COLUMNS="200",
    )  # fmt: skip
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "arbiter"), "decisions", "verify", *args],
        capture_output=True, text=True, cwd=ROOT, env=environment, timeout=120,
    )  # fmt: skip
    return done.returncode, " ".join(done.stdout.split())


def test_the_cli_exits_0_on_intact_decisions_and_1_after_a_feature_value_was_altered(world):
    ids = world.ids["sqlite"]
    code, out = arbiter(world)
    assert code == 0, out
    scored, not_scored = len(ids["scored"]), len(ids["not_scored"])
    assert (
        f"│ match │ {scored} │ │ mismatch │ 0 │ │ not_scored │ {not_scored} │ "
        "│ model_unavailable │ 0 │" in out
    )
    assert out.endswith(f"{scored + not_scored} decisions verified")

    altered = ids["allow"][1]
    record = stored(world, "sqlite", altered).record
    set_json(world.urls["sqlite"], altered,
             features={**record.features, "amount": other_amount(world, record)})  # fmt: skip
    try:
        code, out = arbiter(world)
    finally:
        set_json(world.urls["sqlite"], altered, features=dict(record.features))
    assert code == 1, out
    assert out.startswith(f"mismatch {altered}: model {NAME} v1: margin differs by"), out
    assert f"│ match │ {scored - 1} │ │ mismatch │ 1 │" in out


def test_the_cli_exits_2_when_a_model_version_is_missing_from_the_registry(
    world, tmp_path, monkeypatch
):
    monkeypatch.setenv("ARBITER_DATABASE_URL", world.urls["sqlite"])
    monkeypatch.setenv("ARBITER_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path / "var"))
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `decisions` a sub-command
    decisions_cmds.register(app)

    result = CliRunner().invoke(app, ["decisions", "verify", "--sample", "3", "--seed", "1"])

    out = " ".join(result.output.split())
    assert result.exit_code == 2, out
    assert f"model {NAME} v1: model '{NAME}' has no version 1 at sqlite:///" in out
    assert out.endswith("3 decisions verified (a sample drawn with seed 1)")

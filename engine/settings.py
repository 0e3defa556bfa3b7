"""Settings from the environment (`ARBITER_` prefix), in one frozen object.

Only the CLI and the app factory build a `Settings`; everything else takes plain arguments.
Unknown `ARBITER_` variables are refused so a typo does not silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.connect import cluster_nodes, is_cluster_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARBITER_", frozen=True, extra="forbid")

    # One Redis (redis://host:port/db, rediss://, unix://) or a Redis Cluster:
    # redis+cluster://[user:password@]host:port[,host:port...] (rediss+cluster:// for TLS);
    # features/connect.py, docs/scaling.md.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "arb"
    # Connections the payment route's Redis pool opens at start, so that the first burst of
    # payments does not pay for them (about a millisecond of the event loop each); the pool
    # still grows past them under load. Not for a Redis Cluster (its pools are per node).
    redis_warm_connections: int = 16
    feature_spec: Path = Path("config/features.yaml")
    data_dir: Path = Path("var")
    dedupe_ttl_hours: int = 48
    # Decision store (SQLAlchemy URL): embedded SQLite by default, PostgreSQL in production.
    database_url: str = "sqlite:///var/arbiter.db"
    # How long the service waits for SQLite's write lock before the store counts as
    # unavailable (decisions then go to the journal): seconds.
    store_busy_timeout_seconds: float = 2.0
    # MLflow tracking store and model registry (one URI for both); any MLflow URI works.
    mlflow_tracking_uri: str = "sqlite:///var/mlflow/mlflow.db"
    mlflow_artifacts: Path = Path("var/mlflow/artifacts")
    # The serving process's calls to an MLflow tracking server: retries and timeout (seconds).
    # MLflow's own defaults (7 retries with backoff, 120 s) take about four minutes to give up
    # on a server that is down; the service would not start meanwhile. MLflow's own
    # MLFLOW_HTTP_REQUEST_* variables, when set, win.
    mlflow_request_retries: int = 2
    mlflow_request_timeout_seconds: int = 5
    model_name: str = "arbiter-fraud"
    # The account-level model (scores an account's activity; `config/training-account.yaml`).
    # Optional: without a champion of it, account decisions use the policy's account rules.
    account_model_name: str = "arbiter-fraud-account"
    # How long a payment waits for Redis (features, flag, the event) before it is decided
    # degraded with FEATURES_UNAVAILABLE (milliseconds; docs/security.md).
    redis_budget_ms: float = 50
    # Decisions the store cannot take (it is down) are fsync'd here and replayed into it once
    # it is back (engine/journal.py); unset: `data_dir`/journal. One folder for all the
    # workers of a host, on local disk.
    journal_dir: Path | None = None
    # How often Redis's suspension flags are made to match the store (seconds).
    flag_sync_seconds: float = 30
    # How often the service asks the registry which version holds `champion` (seconds); a new
    # one is loaded fully, then swapped in.
    model_poll_seconds: float = 10
    # Also score every payment with the `challenger` (recorded as the decision's `shadow`,
    # never acted on).
    shadow_challenger: bool = False
    training_config: Path = Path("config/training.yaml")
    # The ops policy (thresholds, lists, rules) the scoring service decides with.
    policy_path: Path = Path("config/policy.yaml")
    # How often the service looks for a changed policy file (seconds).
    policy_reload_seconds: float = 2.0
    # Customer notifications (the outbox) are POSTed here; unset: nothing is delivered, the
    # outbox keeps them. Failed deliveries retry after base * 2**attempt seconds (capped).
    webhook_url: str | None = None
    webhook_timeout_seconds: float = 5
    # 80 attempts at the default backoff (2 s doubling, at most an hour): about 3 days.
    notify_max_attempts: int = 80
    notify_backoff_seconds: float = 2
    # Objection deadlines per jurisdiction, and the reason-code catalogue of rationales.
    objections_config: Path = Path("config/objections.yaml")
    reasons_catalogue: Path = Path("config/reasons.yaml")
    # Records of accounts closed longer ago than this are purged (`arbiter retention purge`).
    retention_days: int = 7 * 365 + 2
    # `/metrics` without credentials (when false, the auth issue puts it behind a token).
    metrics_public: bool = True

    @field_validator(
        "dedupe_ttl_hours", "webhook_timeout_seconds", "notify_max_attempts",
        "notify_backoff_seconds", "policy_reload_seconds", "model_poll_seconds",
        "retention_days", "redis_budget_ms", "mlflow_request_timeout_seconds",
        "store_busy_timeout_seconds",
    )  # fmt: skip
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("notify_backoff_seconds")
    @classmethod
    def _under_the_cap(cls, value: float) -> float:
        from engine.notifier import Backoff  # the cap the notifier's backoff keeps

        if value > Backoff.cap_s:
            raise ValueError(f"must be at most {Backoff.cap_s:g} (the longest wait between tries)")
        return value

    @field_validator("redis_warm_connections", "mlflow_request_retries")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if is_cluster_url(value):
            cluster_nodes(value)  # a ValueError says what is wrong
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must be a redis://, rediss:// or unix:// URL, or redis+cluster://host:port"
                "[,host:port...] for a Redis Cluster"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


def load_settings() -> Settings:
    known = set(Settings.model_fields)
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith("ARBITER_")
        and not name.startswith("ARBITER_TEST_")
        and name[len("ARBITER_") :].lower() not in known
    )
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]} (known: {', '.join(sorted(known))})")
    return Settings()

"""The app factory: `create_app(settings)` (uvicorn: `api.app:create_app --factory`).

The API takes care of HTTP (schemas, status codes, the error body) and delegates every
decision to `engine.service.DecisionService`. At startup the lifespan builds what the service
needs from the settings: the policy, the feature spec and the online store (Redis), the
decision store (migrated to head) and the champion model; a `PolicyWatcher` then reloads the
policy file when it changes (docs/policy.md). A missing champion does not stop
the app: it starts, `/readyz` says why it is not ready, and scoring answers 503
`model_not_loaded` until one is there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# LightGBM scores with one thread; idle OpenMP threads must not spin beside the web server.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import redis
from fastapi import FastAPI

from api import errors
from api.deps import Runtime
from api.responses import OrjsonResponse
from api.routes import accounts, decisions, health, payments
from engine.errors import StoreError
from engine.notifier import NotifierThread, webhook_notifier
from engine.policy import Policy
from engine.policy_watch import PolicyWatcher
from engine.service import DecisionService
from engine.settings import Settings, load_settings
from engine.store import DecisionStore
from features.online import OnlineStore
from features.spec import load_spec
from models.registry import ModelUnavailable, load_model

log = logging.getLogger("arbiter.api")
# The hot path waits this long for Redis before deciding without features (degraded).
REDIS_TIMEOUT_S = 0.5


def build_runtime(settings: Settings) -> Runtime:
    plan = load_spec(settings.feature_spec)

    def swap(new: Policy) -> None:
        service.policy = new  # rebinding is atomic: a request in flight keeps the one it took

    watcher = PolicyWatcher(
        settings.policy_path, swap, features={f.name for f in plan.features},
        interval_s=settings.policy_reload_seconds,
    )  # fmt: skip
    policy = watcher.load()  # no last good policy yet: an invalid file refuses to start
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    online = OnlineStore(
        client, plan, prefix=settings.redis_prefix,
        dedupe_ttl_ms=settings.dedupe_ttl_hours * 3_600_000,
    )  # fmt: skip
    store = DecisionStore(settings.database_url)
    problems: dict[str, str] = {}
    try:
        store.migrate()
    except StoreError as exc:
        problems["store"] = exc.message
        log.error("decision store: %s", exc.message)
    try:
        model = load_model(
            settings.mlflow_tracking_uri, settings.model_name, settings.data_dir / "models"
        )
        log.info("serving model %s version %s", model.name, model.version)
    except ModelUnavailable as exc:
        model = None
        problems["model"] = exc.message
        log.error("model: %s", exc.message)
    descriptions = {f.name: f.description for f in plan.model.features if f.description}
    service = DecisionService(
        features=online, store=store, policy=policy, model=model,
        feature_spec_version=plan.version, descriptions=descriptions,
    )  # fmt: skip
    return Runtime(settings, service, store, client, problems, policy_watcher=watcher)


def start_notifier(settings: Settings, store: DecisionStore) -> NotifierThread | None:
    """Deliver the outbox from a background thread when a webhook is configured. Each uvicorn
    worker runs one; the store's leases keep them from sending the same entry twice at once."""
    if settings.webhook_url is None:
        log.info("no ARBITER_WEBHOOK_URL: notifications stay in the outbox")
        return None
    notifier = webhook_notifier(
        store, settings.webhook_url, timeout_s=settings.webhook_timeout_seconds,
        max_attempts=settings.notify_max_attempts, backoff_s=settings.notify_backoff_seconds,
    )  # fmt: skip
    worker = NotifierThread(notifier)
    worker.start()
    log.info("delivering notifications to %s", settings.webhook_url)
    return worker


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings or load_settings())
        app.state.runtime = runtime
        if runtime.policy_watcher is not None:
            runtime.policy_watcher.start()
        notifier = start_notifier(runtime.settings, runtime.store)
        app.state.notifier = notifier.notifier if notifier else None  # counters, for /metrics
        try:
            yield
        finally:
            # Waits at most one send for the delivery in flight; one cut short is retaken later.
            if notifier and not notifier.stop(timeout=runtime.settings.webhook_timeout_seconds + 1):
                log.warning("the notification worker did not stop in time")
            if runtime.policy_watcher is not None:
                runtime.policy_watcher.stop()
            runtime.store.close()
            runtime.redis.close()

    app = FastAPI(
        title="Arbiter",
        summary="Fraud decisions on payments and accounts, with their rationale.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    errors.install(app)
    for module in (payments, decisions, accounts, health):
        app.include_router(module.router)
    return app

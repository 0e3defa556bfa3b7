"""The app factory: `create_app(settings)` (uvicorn: `api.app:create_app --factory`).

The API takes care of HTTP (schemas, status codes, the error body) and delegates every
decision to `engine.service.DecisionService`. At startup the lifespan builds what the service
needs from the settings: the policy, the feature spec and the online store (Redis), the
decision store (migrated to head) and the champion model. A missing champion does not stop
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
from engine.policy import load_policy
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
    policy = load_policy(settings.policy_path)  # no last good policy yet: refuse to start
    plan = load_spec(settings.feature_spec)
    unknown = policy.unknown_features(set(plan.output) | {f.name for f in plan.features})
    if unknown:
        log.warning("the policy names features the spec does not provide: %s", unknown)
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
    return Runtime(settings, service, store, client, problems)


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings or load_settings())
        app.state.runtime = runtime
        try:
            yield
        finally:
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

"""The app factory: `create_app(settings)` (uvicorn: `api.app:create_app --factory`).

The API takes care of HTTP (schemas, status codes, the error body) and delegates every
decision to `engine.service.DecisionService`. At startup the lifespan builds what the service
needs from the settings: the policy, the feature spec and the online store (Redis), the
decision store (migrated to head) and the champion model; a `PolicyWatcher` then reloads the
policy file when it changes (docs/policy.md) and a `ModelWatcher` swaps in the version the
`champion` alias moves to (and, with `shadow_challenger`, follows the `challenger`); another
follows the account model's `champion` (optional: account decisions fall back to the policy's
account rules); a `FlagSync` keeps Redis's suspension flags in step with the store. A missing
champion does not stop the app: it starts, `/readyz` says why it is not ready, and scoring
answers 503 `model_not_loaded` until one is there.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

# LightGBM scores with one thread; idle OpenMP threads must not spin beside the web server.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from api import errors, fast
from api.deps import Runtime
from api.responses import OrjsonResponse
from api.routes import (
    accounts,
    decisions,
    echo,
    events,
    health,
    metrics,
    objections,
    pages,
    payments,
)
from api.schemas import ErrorBody
from engine.deadlines import InvalidDeadlines, load_deadlines
from engine.deferred import DeferredContributions
from engine.errors import StoreError
from engine.flags import FlagSync
from engine.group_commit import GroupCommitter
from engine.journal import DecisionJournal
from engine.keys import KeyRing
from engine.metrics import Metrics
from engine.model_watch import ModelWatcher
from engine.notifier import NotifierThread, webhook_notifier
from engine.objections import ObjectionDesk
from engine.policy import Policy
from engine.policy_watch import PolicyWatcher
from engine.rationales import Rationales
from engine.service import DecisionService
from engine.settings import Settings, load_settings
from engine.store import DecisionStore, now_ms
from explanations.catalogue import InvalidCatalogue, load_catalogue
from features.connect import redis_clients, warm
from features.online import OnlineStore
from features.spec import SpecPlan, load_spec
from models.registry import (
    CHALLENGER,
    CHAMPION,
    AliasMissing,
    LoadedModel,
    ModelUnavailable,
    alias_identity,
    alias_version,
    forget_cached,
    identity,
    load_cached,
    load_model,
    load_version,
)

log = logging.getLogger("arbiter.api")
# The hot path waits this long for Redis before deciding without features (degraded).
REDIS_TIMEOUT_S = 0.5
SWITCH_INTERVAL_S = 0.0005


def build_runtime(settings: Settings) -> Runtime:
    limit_registry_calls(settings)
    plan = load_spec(settings.feature_spec)

    def swap(new: Policy) -> None:
        remember(new)
        service.policy = new  # rebinding is atomic: a request in flight keeps the one it took

    def remember(policy: Policy) -> None:
        try:  # the thresholds a rationale states years later come from here
            store.remember_policy(policy.version, thresholds_of(policy))
        except StoreError as exc:
            log.error("policy %s not recorded in the store: %s", policy.version, exc.message)

    watcher = PolicyWatcher(
        settings.policy_path, swap, features={f.name for f in plan.features},
        text_features=plan.text_features(),
        interval_s=settings.policy_reload_seconds,
    )  # fmt: skip
    policy = watcher.load()  # no last good policy yet: an invalid file refuses to start
    # The payment route awaits Redis on the event loop (`async_client`); the rest uses `client`.
    # One Redis or a Redis Cluster, as the URL says (features/connect.py).
    client, async_client = redis_clients(settings.redis_url, REDIS_TIMEOUT_S)
    online = OnlineStore(
        client, plan, prefix=settings.redis_prefix,
        dedupe_ttl_ms=settings.dedupe_ttl_hours * 3_600_000, async_client=async_client,
    )  # fmt: skip
    store = DecisionStore(settings.database_url, busy_timeout_s=settings.store_busy_timeout_seconds)
    problems: dict[str, str] = {}
    try:
        store.migrate()
    except StoreError as exc:
        problems["store"] = exc.message
        log.error("decision store: %s", exc.message)
    remember(policy)
    metrics = Metrics()
    descriptions = {f.name: f.description for f in plan.model.features if f.description}
    # Decisions are written by one thread, many per transaction (engine/group_commit.py); while
    # the store is down, to the local journal until it is back (engine/journal.py).
    journal = DecisionJournal(settings.journal_dir or settings.data_dir / "journal")
    writer = GroupCommitter(store, journal=journal)
    service = DecisionService(
        features=online, store=writer, policy=policy, model=None,
        feature_spec_version=plan.version, descriptions=descriptions, metrics=metrics,
    )  # fmt: skip

    service.redis_budget_s = settings.redis_budget_ms / 1000
    writer.on_adopted = service.flags.set  # a dead worker's journaled suspensions count here

    def champion(new: LoadedModel) -> None:
        service.model = new  # loaded fully before: a request in flight keeps the one it took

    def challenger(new: LoadedModel | None) -> None:
        service.shadow = new  # None: no challenger now (a promotion took its alias away)

    def account_champion(new: LoadedModel) -> None:
        service.account_model = new

    models = model_watcher(settings, CHAMPION, champion, metrics, plan=plan)
    models.check_now()  # the first load; without a champion the app starts, not ready
    from_cache(models, settings.model_name, settings, plan)
    account_models = model_watcher(
        settings, CHAMPION, account_champion, metrics, name=settings.account_model_name,
        error_label="account_model_load", plan=plan,
    )  # fmt: skip
    account_models.check_now()  # optional: without one, account decisions use the rules
    from_cache(account_models, settings.account_model_name, settings, plan)
    flags = FlagSync(service.flags, interval_s=settings.flag_sync_seconds)
    flags.check_now()
    shadows = None
    if settings.shadow_challenger:
        shadows = model_watcher(
            settings,
            CHALLENGER,
            challenger,
            metrics,
            error_label="challenger_model_load",
            on_absent=challenger,
            plan=plan,
        )
        shadows.check_now()
    uri, cache = settings.mlflow_tracking_uri, settings.data_dir / "models"
    deferred = DeferredContributions(store, lambda n, v: load_version(uri, n, v, cache))
    desk = None
    try:
        desk = ObjectionDesk(
            store.database, load_deadlines(settings.objections_config), clock=now_ms,
            on_reinstated=lambda account_id: service.flags.set({account_id: None}),
            explain=lambda decision_id: reasons_for(rationales, store, decision_id),
        )  # fmt: skip
    except InvalidDeadlines as exc:
        problems["objections"] = exc.message
        log.error("objections: %s", exc.message)
    keys = KeyRing(store.database)
    keys.reload()  # now, while the store answers: the keys keep working if it goes down later
    rationales = None
    try:
        catalogue = load_catalogue(settings.reasons_catalogue)
        rationales = Rationales(store, deferred, catalogue, desk=desk, clock=now_ms)
        # A decision's reasons and its notice name features in the catalogue's words too.
        words, flag_features = catalogue.feature_wording()
        service.descriptions.update(words)
        service.flag_features = flag_features
        service.customer_texts.update({c: r.text for c, r in catalogue.model.rules.items()})
    except InvalidCatalogue as exc:
        problems["rationales"] = exc.message
        log.error("rationales: %s", exc.message)
    return Runtime(
        settings, service, store, client, problems, policy_watcher=watcher,
        model_watcher=models, shadow_watcher=shadows, metrics=metrics, deferred=deferred,
        account_model_watcher=account_models, flag_sync=flags, writer=writer,
        redis_async=async_client, desk=desk, rationales=rationales,
        keys=keys,
    )  # fmt: skip


def limit_registry_calls(settings: Settings) -> None:
    """A tracking server that is down fails the service's registry calls in seconds, so a
    start without the registry serves the cached champion at once (MLflow reads these per
    call; a value already in the environment is kept)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_request_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_request_timeout_seconds)
    )


def for_spec(model: LoadedModel, plan: SpecPlan) -> LoadedModel:
    """`model`, if it can score this service's features: every feature it reads is one the
    spec serves. Else `ModelUnavailable`, a failed load: the model serving stays (docs/api.md);
    a model of other features would score every row on missing values. A model whose run
    recorded another spec version is served, with a warning: the version hashes the whole
    spec, descriptions included, so it changes with edits that leave the features as they were
    (a change that does alter one needs a retraining, docs/features.md)."""
    served = {f.name for f in plan.features}
    unknown = [f for f in model.scorer.features if f not in served]
    if unknown:
        raise ModelUnavailable(
            f"model {model.name} version {model.version} reads features the spec "
            f"{plan.name} {plan.version} does not serve: {', '.join(unknown[:5])}"
        )
    trained = (model.distribution or {}).get("feature_spec_version")
    if trained is not None and trained != plan.version:
        log.warning("model %s version %s was trained on feature spec version %s; this service "
                    "serves %s: if a feature's definition changed, retrain", model.name,
                    model.version, trained, plan.version)  # fmt: skip
    return model


def from_cache(
    watcher: ModelWatcher[LoadedModel], name: str, settings: Settings, plan: SpecPlan
) -> None:
    """The registry did not answer at start: serve the champion this machine last loaded (the
    watcher says so in /readyz, and follows the alias once the registry answers)."""
    if watcher.model is not None or watcher.last_error is None:
        return
    cache = settings.data_dir / "models"
    try:
        alias_version(settings.mlflow_tracking_uri, name)
    except AliasMissing:  # the registry answered: no champion (none yet, or taken away)
        forget_cached(name, cache)
        return
    except Exception:  # any failure to answer: the registry is down
        pass
    else:
        return  # the registry answers and names a version that failed to load: not ours
    try:
        cached = for_spec(load_cached(name, cache), plan)
    except ModelUnavailable:
        return  # nothing cached (or not for this spec): start without one, not ready
    watcher.adopt(cached, "cache")


def thresholds_of(policy: Policy) -> dict[str, Any]:
    """What a rationale needs of a policy version, years later: its thresholds (the lists hold
    personal data, and are not kept)."""
    document = policy.model.model_dump(mode="json")
    return {
        "thresholds": document.get("thresholds"),
        "segments": [{"name": s.get("name"), "thresholds": s.get("thresholds")}
                     for s in document.get("segments") or ()],
        "account": {"thresholds": (document.get("account") or {}).get("thresholds")},
    }  # fmt: skip


def reasons_for(rationales: Rationales | None, store: DecisionStore, decision_id: str) -> list[str]:
    """The customer-facing reasons of a decision, as its rationale states them."""
    if rationales is None:
        return []
    customer = rationales.customer_view(store.get_decision(decision_id))
    return [str(reason["text"]) for reason in customer.get("reasons") or ()]


def model_watcher(
    settings: Settings,
    alias: str,
    on_change: Callable[[LoadedModel], None],
    metrics: Metrics,
    *,
    name: str | None = None,
    error_label: str = "model_load",
    on_absent: Callable[[None], None] | None = None,
    plan: SpecPlan,
) -> ModelWatcher[LoadedModel]:
    """A watcher of `alias` of model `name` (default: the payment model) in the registry:
    polls the version holding it, loads a new one. When the registry says no version holds
    the alias, the cached copy is forgotten (a restart must not bring it back); with
    `on_absent` (the challenger's), the model is dropped too and that is no error, else the
    one serving stays and the poll counts as failed."""
    uri, cache = settings.mlflow_tracking_uri, settings.data_dir
    name = name or settings.model_name

    def absent(exc: Exception) -> bool:
        if not isinstance(exc, AliasMissing):
            return False
        try:
            forget_cached(name, cache / "models", alias=alias)
        except OSError as oops:  # a read-only data dir: the next start asks the registry anyway
            log.warning("model %s: the cached %s pointer stays: %s", name, alias, oops)
        if on_absent is None:
            return False
        on_absent(None)
        return True

    return ModelWatcher(
        lambda: load_model(uri, name, cache / "models", alias=alias,
                           accept=lambda model: for_spec(model, plan)),
        on_change,
        resolve=lambda: alias_identity(uri, name, alias=alias), identify=identity,
        interval_s=settings.model_poll_seconds, alias=alias,
        on_error=lambda _message: metrics.dependency_errors.inc(error_label), on_absent=absent,
    )  # fmt: skip


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


class ArbiterApp(FastAPI):
    """FastAPI, with the billing system's door (and its echo floor) served by `api.fast`: the
    plain case without the framework's layers, anything else handed to them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] in fast.PATHS
            and scope["method"] == "POST"
            and hasattr(self.state, "runtime")
        ):
            scope["app"] = self
            await fast.serve(self, super().__call__, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings or load_settings())
        app.state.runtime = runtime
        watchers = [
            runtime.policy_watcher, runtime.model_watcher, runtime.shadow_watcher,
            runtime.account_model_watcher, runtime.flag_sync,
        ]  # fmt: skip
        for watcher in watchers:
            if watcher is not None:
                watcher.start()
        if runtime.writer is not None:
            runtime.writer.start()  # replays what an earlier process left in the journal
        if runtime.redis_async is not None:
            await warm(runtime.redis_async, runtime.settings.redis_warm_connections)
        # What start-up made (libraries, models: millions of objects) stays for the process's
        # life: kept out of the collector's full passes, which would otherwise walk it all and
        # stall every request for a few hundred milliseconds now and then.
        gc.collect()
        gc.freeze()
        # A thread back from I/O (the decision writer's commit, a store read) waits for the
        # interpreter at most this long while another thread computes (CPython's default is
        # 5 ms, per wait: several round trips of one request add up to tens of milliseconds).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        notifier = start_notifier(runtime.settings, runtime.store)
        app.state.notifier = notifier.notifier if notifier else None  # counters, for /metrics
        try:
            yield
        finally:
            # Waits at most one send for the delivery in flight; one cut short is retaken later.
            if notifier and not notifier.stop(timeout=runtime.settings.webhook_timeout_seconds + 1):
                log.warning("the notification worker did not stop in time")
            for watcher in watchers:
                if watcher is not None:
                    watcher.stop()
            # A last replay; what stays journaled is adopted by the next process. The journal
            # is closed only once the writer has ended (it might still be journaling).
            writer = runtime.writer
            if writer is not None and writer.stop() and writer.journal is not None:
                writer.journal.close()
            runtime.store.close()
            runtime.redis.close()
            if runtime.redis_async is not None:
                await runtime.redis_async.aclose()

    app = ArbiterApp(
        title="Arbiter",
        summary="Fraud decisions on payments and accounts, with their rationale.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # What any route may answer besides its own (docs/security.md): the one error body.
        responses={
            401: {"model": ErrorBody, "description": "no API key, or an unknown or revoked one"},
            403: {"model": ErrorBody, "description": "the key lacks a role this route admits"},
            413: {"model": ErrorBody, "description": "the body is larger than 8 MiB"},
            422: {"model": ErrorBody, "description": "invalid input (the field is named)"},
        },
    )
    errors.install(app)
    for module in (payments, events, decisions, objections, pages, accounts, health, metrics, echo):
        app.include_router(module.router)
    return app

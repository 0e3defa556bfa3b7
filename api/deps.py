"""What routes may ask for, as `Annotated` aliases (`service: ServiceDep`). The providers are
`async def`: FastAPI would run plain functions in its thread pool, a hand-off per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import redis
from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from engine.deferred import DeferredContributions
from engine.flags import FlagSync
from engine.group_commit import GroupCommitter
from engine.metrics import Metrics
from engine.model_watch import ModelWatcher
from engine.policy_watch import PolicyWatcher
from engine.service import DecisionService
from engine.settings import Settings
from engine.store import DecisionStore
from models.registry import LoadedModel


@dataclass
class Runtime:
    """What the app built at startup. `problems` says why a part is missing (for /readyz)."""

    settings: Settings
    service: DecisionService
    store: DecisionStore
    redis: redis.Redis
    problems: dict[str, str] = field(default_factory=dict)
    policy_watcher: PolicyWatcher | None = None  # reloads the policy file (None: never)
    model_watcher: ModelWatcher[LoadedModel] | None = None  # follows `champion` (None: never)
    shadow_watcher: ModelWatcher[LoadedModel] | None = None  # follows `challenger` when shadowing
    metrics: Metrics = field(default_factory=Metrics)
    deferred: DeferredContributions | None = None  # contributions of allow decisions, on read
    account_model_watcher: ModelWatcher[LoadedModel] | None = None  # the account model
    flag_sync: FlagSync | None = None  # Redis's suspension flags, kept in step with the store
    writer: GroupCommitter | None = None  # the decision writer (group commit)
    redis_async: AsyncRedis | None = None  # the payment route's Redis client


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_service(request: Request) -> DecisionService:
    runtime: Runtime = request.app.state.runtime
    return runtime.service


async def get_store(request: Request) -> DecisionStore:
    runtime: Runtime = request.app.state.runtime
    return runtime.store


async def get_deferred(request: Request) -> DeferredContributions:
    runtime: Runtime = request.app.state.runtime
    return runtime.deferred or DeferredContributions(runtime.store, _no_models)


def _no_models(name: str, version: str) -> LoadedModel:
    raise LookupError(f"no model loader: {name} v{version}")


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DeferredDep = Annotated[DeferredContributions, Depends(get_deferred)]
ServiceDep = Annotated[DecisionService, Depends(get_service)]
StoreDep = Annotated[DecisionStore, Depends(get_store)]

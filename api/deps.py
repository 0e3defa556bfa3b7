"""What routes may ask for, as `Annotated` aliases (`service: ServiceDep`). The providers are
`async def`: FastAPI would run plain functions in its thread pool, a hand-off per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from api import auth
from engine.deferred import DeferredContributions
from engine.errors import ObjectionsUnavailable, RationalesUnavailable
from engine.flags import FlagSync
from engine.group_commit import GroupCommitter
from engine.keys import KeyRing, Principal
from engine.metrics import Metrics
from engine.model_watch import ModelWatcher
from engine.objections import ObjectionDesk
from engine.policy_watch import PolicyWatcher
from engine.rationales import Rationales
from engine.service import DecisionService
from engine.settings import Settings
from engine.store import DecisionStore
from features.connect import AsyncClient, SyncClient
from models.registry import LoadedModel


@dataclass
class Runtime:
    """What the app built at startup. `problems` says why a part is missing (for /readyz)."""

    settings: Settings
    service: DecisionService
    store: DecisionStore
    redis: SyncClient  # one Redis or a Redis Cluster (features/connect.py)
    problems: dict[str, str] = field(default_factory=dict)
    policy_watcher: PolicyWatcher | None = None  # reloads the policy file (None: never)
    model_watcher: ModelWatcher[LoadedModel] | None = None  # follows `champion` (None: never)
    shadow_watcher: ModelWatcher[LoadedModel] | None = None  # follows `challenger` when shadowing
    metrics: Metrics = field(default_factory=Metrics)
    deferred: DeferredContributions | None = None  # contributions of allow decisions, on read
    account_model_watcher: ModelWatcher[LoadedModel] | None = None  # the account model
    flag_sync: FlagSync | None = None  # Redis's suspension flags, kept in step with the store
    writer: GroupCommitter | None = None  # the decision writer (group commit)
    redis_async: AsyncClient | None = None  # the payment route's Redis client
    desk: ObjectionDesk | None = None  # objection cases
    rationales: Rationales | None = None  # rationale documents of decisions
    keys: KeyRing | None = None  # the API keys (api/auth.py)


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


async def get_desk(request: Request) -> ObjectionDesk:
    runtime: Runtime = request.app.state.runtime
    if runtime.desk is None:
        raise ObjectionsUnavailable(runtime.problems.get("objections", "objections are off"))
    return runtime.desk


async def get_rationales(request: Request) -> Rationales:
    runtime: Runtime = request.app.state.runtime
    if runtime.rationales is None:
        raise RationalesUnavailable(runtime.problems.get("rationales", "rationales are off"))
    return runtime.rationales


def _no_models(name: str, version: str) -> LoadedModel:
    raise LookupError(f"no model loader: {name} v{version}")


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# The callers each door admits (api/auth.py); the value is the caller, its name the actor.
ScorerKey = Annotated[Principal, Depends(auth.SCORER)]
IngestKey = Annotated[Principal, Depends(auth.INGEST)]
CaseReader = Annotated[Principal, Depends(auth.READ_CASES)]
CaseWorker = Annotated[Principal, Depends(auth.SUPPORT)]
OpsKey = Annotated[Principal, Depends(auth.OPS)]
ReviewerKey = Annotated[Principal, Depends(auth.REINSTATE)]
AccountReader = Annotated[Principal, Depends(auth.ACCOUNT_STATUS)]
PrivacyKey = Annotated[Principal, Depends(auth.PRIVACY)]
DeferredDep = Annotated[DeferredContributions, Depends(get_deferred)]
ServiceDep = Annotated[DecisionService, Depends(get_service)]
StoreDep = Annotated[DecisionStore, Depends(get_store)]
DeskDep = Annotated[ObjectionDesk, Depends(get_desk)]
RationalesDep = Annotated[Rationales, Depends(get_rationales)]

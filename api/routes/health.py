"""`/healthz` (the process answers) and `/readyz` (it can decide: model loaded, Redis
reachable, decision store writable, policy valid), with the detail of each check.

A check with a `problem` makes the service not ready (503). A refused policy edit is reported
as the policy check's `error` (`ok` false) but the service stays ready: the last good policy,
`serving_version`, keeps deciding (docs/policy.md). A model that failed to load (or a registry
that does not answer) is reported the same way while an earlier version keeps scoring; the
`shadow` check (with `shadow_challenger`), the `account_model` check (without an account model,
account decisions use the policy's account rules) and the `objections` and `rationales` checks
(an invalid config/objections.yaml or config/reasons.yaml) never fail readiness. `pid` names
the worker process that answered (each uvicorn worker follows the policy and the registry on
its own)."""

from __future__ import annotations

import os
from typing import Any

import redis
from fastapi import APIRouter, Request

from api.deps import Runtime, RuntimeDep
from api.errors import request_id
from api.responses import OrjsonResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, runtime: RuntimeDep) -> OrjsonResponse:
    checks = _checks(runtime)
    failing = [name for name, check in checks.items() if "problem" in check]
    if not failing:
        return OrjsonResponse({"ready": True, "pid": os.getpid(), "checks": checks})
    message = "; ".join(f"{name}: {checks[name]['problem']}" for name in failing)
    error = {"code": "not_ready", "message": message, "request_id": request_id(request)}
    body = {"ready": False, "pid": os.getpid(), "checks": checks, "error": error}
    return OrjsonResponse(body, status_code=503)


def _checks(runtime: Runtime) -> dict[str, dict[str, Any]]:
    service = runtime.service
    model = service.model
    checks: dict[str, dict[str, Any]] = {}
    watcher = runtime.model_watcher
    failed = watcher.last_error if watcher else None
    if model is None:
        problem = failed or runtime.problems.get("model", "no model loaded")
        checks["model"] = {"ok": False, "problem": problem}
    else:
        checks["model"] = {"ok": True, "name": model.name, "version": model.version}
        if watcher is not None and watcher.source != "registry":
            # Started while the registry did not answer: a cached copy of the last champion.
            checks["model"]["source"] = watcher.source
        if failed is not None:  # still ready: the model loaded before keeps scoring
            checks["model"].update(ok=False, error=failed, serving_version=model.version)
    if runtime.shadow_watcher is not None:
        shadow = service.shadow
        checks["shadow"] = (
            {"ok": True, "name": shadow.name, "version": shadow.version}
            if shadow is not None
            else {"ok": True, "version": None, "detail": "no version holds the challenger alias"}
        )
        if runtime.shadow_watcher.last_error is not None:  # never a readiness failure
            checks["shadow"].update(ok=False, error=runtime.shadow_watcher.last_error)
    # Optional: without an account model, account decisions use the policy's account rules.
    account_model, account_watcher = service.account_model, runtime.account_model_watcher
    checks["account_model"] = (
        {"ok": True, "name": account_model.name, "version": account_model.version}
        if account_model is not None
        else {"ok": True, "name": None, "detail": "none loaded: account rules only"}
    )
    if account_watcher is not None and account_watcher.last_error:
        # None promoted, or a promoted version that fails to load: the error says which.
        checks["account_model"]["error"] = account_watcher.last_error
        if account_model is not None:
            checks["account_model"]["ok"] = False
    try:
        runtime.redis.ping()
        checks["redis"] = {"ok": True}
    except redis.RedisError as exc:
        checks["redis"] = {"ok": False, "problem": f"Redis does not answer: {exc}"}
    store_problem = runtime.store.writable_problem()
    checks["store"] = (
        {"ok": True, "backend": runtime.store.backend}
        if store_problem is None
        else {"ok": False, "problem": store_problem}
    )
    writer = runtime.writer
    if writer is not None and writer.journal is not None:
        checks["store"]["journal_pending"] = writer.journal_pending
        if store_problem is not None and writer.journal_error is None:
            # Still ready: decisions go to the local journal until the store is back.
            checks["store"]["error"] = checks["store"].pop("problem")
        elif writer.journal_error is not None:
            checks["store"]["journal_problem"] = writer.journal_error
    policy = service.policy
    checks["policy"] = {"ok": True, "name": policy.model.name, "version": policy.version}
    refused = runtime.policy_watcher.last_error if runtime.policy_watcher else None
    if refused is not None:
        # Still ready: the last good policy keeps deciding. An `error` (not a `problem`) does
        # not fail readiness; it says the file on disk was refused.
        checks["policy"].update(ok=False, error=refused, serving_version=policy.version)
    # The right to object's parts: reported, never a readiness failure (payments are decided
    # without them); their routes answer 503 saying why.
    for name, part in (("objections", runtime.desk), ("rationales", runtime.rationales)):
        checks[name] = (
            {"ok": True}
            if part is not None
            else {"ok": False, "error": runtime.problems.get(name, "not configured")}
        )
    return checks

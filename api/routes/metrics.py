"""`/metrics`: Prometheus' text format, from the runtime's `engine.metrics.Metrics`.

The service counts as it decides; what is kept elsewhere (the models serving, the notifier's
delivery totals) is copied in at the scrape. Public while `metrics_public` is true (the
default); the auth issue puts it behind a token otherwise.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from api.deps import RuntimeDep
from engine.metrics import CONTENT_TYPE
from engine.notifier import Notifier

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, runtime: RuntimeDep) -> PlainTextResponse:
    registry = runtime.metrics
    service = runtime.service
    models = (
        ("champion", service.model), ("challenger", service.shadow),
        ("champion", service.account_model),
    )  # fmt: skip
    serving: dict[tuple[str, ...], float] = {
        (alias, model.name, model.version): 1.0 for alias, model in models if model is not None
    }
    registry.model_info.replace(serving)
    notifier: Notifier | None = getattr(request.app.state, "notifier", None)
    if notifier is not None:
        totals = notifier.counters.snapshot()
        registry.notifications.mirror({(outcome,): n for outcome, n in totals.items()})
    return PlainTextResponse(registry.render(), media_type=CONTENT_TYPE)

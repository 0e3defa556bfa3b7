"""`/metrics`: Prometheus' text format, from the runtime's `engine.metrics.Metrics`.

The service counts as it decides; what is kept elsewhere (the models serving, the notifier's
delivery totals) is copied in at the scrape. Public while `metrics_public` is true (the
default, for a scraper on the internal network); otherwise it needs an `ops` key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from api import auth
from api.deps import RuntimeDep
from engine.metrics import CONTENT_TYPE
from engine.notifier import Notifier

router = APIRouter(tags=["health"])


async def metrics_gate(request: Request) -> None:
    """Open while `metrics_public` is true; else an `ops` key (or admin) is needed."""
    if not request.app.state.runtime.settings.metrics_public:
        await auth.METRICS(request)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_gate)])
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
    if runtime.writer is not None:
        registry.group_commit.mirror(
            {("transactions",): runtime.writer.batches, ("decisions",): runtime.writer.appended}
        )
    journal = runtime.writer.journal if runtime.writer is not None else None
    if journal is not None:
        registry.journal.replace(
            {("pending",): journal.pending, ("journaled",): journal.journaled,
             ("replayed",): journal.replayed}
        )  # fmt: skip
    return PlainTextResponse(registry.render(), media_type=CONTENT_TYPE)

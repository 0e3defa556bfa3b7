"""`arbiter notify ...`: deliver the outbox's customer notifications, and see how it stands."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from cli.settings import settings_or_exit
from cli.stores import open_decision_store
from engine.errors import StoreError
from engine.notifier import webhook_notifier
from engine.settings import Settings
from engine.store import now_ms

console = Console(highlight=False)
notify_app = typer.Typer(help="Deliver customer notifications to the webhook; see the outbox.")


def _fail(message: str, settings: Settings) -> typer.Exit:
    console.print(f"[red]{message} (ARBITER_DATABASE_URL={settings.database_url})[/red]")
    return typer.Exit(2)


@notify_app.command("run")
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between looks at the outbox")
    ] = 1.0,
) -> None:
    """Deliver due notifications to ARBITER_WEBHOOK_URL, retrying failures with backoff.

    Any number of workers may run at once (here and in the API): each entry is leased to one."""
    settings = settings_or_exit()
    if settings.webhook_url is None:
        console.print("[red]no webhook to deliver to: set ARBITER_WEBHOOK_URL[/red]")
        raise typer.Exit(2)
    store = open_decision_store(settings, console)
    notifier = webhook_notifier(
        store, settings.webhook_url, timeout_s=settings.webhook_timeout_seconds,
        max_attempts=settings.notify_max_attempts, backoff_s=settings.notify_backoff_seconds,
    )  # fmt: skip
    try:
        if once:
            counts = notifier.drain(now_ms())
            console.print(
                f"delivered {counts.delivered}, to retry {counts.retried}, dead {counts.dead}"
            )
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()  # the delivery in flight finishes and is marked

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        console.print(f"delivering notifications to {settings.webhook_url} (Ctrl-C stops)")
        notifier.run_forever(stop, interval)
        totals = notifier.counters.snapshot()
        console.print(
            f"stopped: delivered {totals['delivered']}, failed attempts {totals['failed']}, "
            f"dead {totals['dead']}"
        )
    except StoreError as exc:
        raise _fail(exc.message, settings) from exc
    finally:
        notifier.close()
        store.close()


@notify_app.command("status")
def status(
    limit: Annotated[int, typer.Option(min=1, help="How many dead notifications to list")] = 20,
) -> None:
    """Count the outbox's notifications by status and list the dead ones (given up)."""
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        counts = store.notification_counts()
        dead = store.dead_notifications(limit)
    except StoreError as exc:
        raise _fail(exc.message, settings) from exc
    finally:
        store.close()
    console.print(", ".join(f"{name} {n:,}" for name, n in counts.items()))
    if not dead:
        return
    console.print(f"dead notifications (newest {len(dead)} of {counts['dead']:,}):")
    for entry in dead:
        created = datetime.fromtimestamp(entry.created_at / 1000, UTC)
        console.print(
            f"  {entry.id}  {created:%Y-%m-%d %H:%M:%S}  account {entry.account_id}  "
            f"decision {entry.decision_id or '-'}  {entry.attempts} attempts  "
            f"{entry.last_error or '-'}",
            soft_wrap=True,
            markup=False,  # errors such as "[Errno 111]" are text, not markup
        )


@notify_app.command("requeue")
def requeue(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Dead notifications' ids (see `notify status`)")
    ] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Every dead notification")] = False,
) -> None:
    """Send dead notifications again (after the receiver is fixed): each is due now, with its
    full retries; `notify run` or the API's worker delivers them."""
    if bool(ids) == all_dead:
        console.print("[red]give the ids of dead notifications, or --all (not both)[/red]")
        raise typer.Exit(2)
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        done = store.requeue_dead_notifications(None if all_dead else ids)
    except StoreError as exc:
        raise _fail(exc.message, settings) from exc
    finally:
        store.close()
    console.print(f"requeued {len(done):,}: {', '.join(map(str, done)) or '-'}")
    missed = sorted(set(ids or ()) - set(done))
    if missed:
        console.print(f"[red]not dead (left alone): {', '.join(map(str, missed))}[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")

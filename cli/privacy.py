"""`arbiter audit ...`, `arbiter retention ...`, `arbiter labels ...`: the privacy officer's and
the data scientist's doors to the audit trail, retention and the labels objections produce."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.settings import settings_or_exit
from cli.stores import open_decision_store
from engine import audit, privacy
from engine.database import reading
from engine.errors import StoreError
from engine.store import now_ms

console = Console(highlight=False)
audit_app = typer.Typer(help="The audit trail: who read or changed what (hash-chained).")
retention_app = typer.Typer(help="Retention: purge closed accounts' records, legal holds.")
labels_app = typer.Typer(help="Label events for retraining (overturned objections).")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit trail's hash chain; name the first broken link (exit 1)."""
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        with reading(store.database) as conn:
            count, broken = 0, None
            events = list(audit.walk(conn))
            count = len(events)
            broken = audit.first_break(events)
    except StoreError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        store.close()
    if broken is not None:
        console.print(f"[red]audit trail broken at {broken}[/red]")
        raise typer.Exit(1)
    console.print(f"the audit trail of {count:,} events is intact")


@retention_app.command("purge")
def retention_purge(
    actor: str = typer.Option(..., help="who runs the purge (recorded in the audit trail)"),
    days: int | None = typer.Option(
        None, min=1, help="retention in days (default: ARBITER_RETENTION_DAYS, 7 years)"
    ),
) -> None:
    """Purge the records of accounts closed longer ago than the retention period (legal holds
    excepted); decisions and audit entries become tombstones, so the chains still verify."""
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        keep = days if days is not None else settings.retention_days
        report = privacy.purge(store.database, now=now_ms(), actor=actor, retention_days=keep)
    except StoreError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        store.close()
    console.print(
        f"purged {report.accounts} account(s): {report.decisions} decision(s) tombstoned, "
        f"{report.objections} objection(s), {report.notifications} notification(s) deleted, "
        f"{report.audit_events} audit event(s) tombstoned; {report.held} kept under legal hold"
    )


@retention_app.command("hold")
def retention_hold(
    account_id: str,
    reason: str = typer.Option(..., help="why (litigation, authority request, ...)"),
    actor: str = typer.Option(..., help="who places the hold"),
    release: bool = typer.Option(False, "--release", help="lift the hold instead"),
) -> None:
    """Place (or with --release lift) a legal hold: retention does not purge the account."""
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        privacy.set_hold(store.database, account_id, hold=not release, reason=reason,
                         actor=actor, at=now_ms())  # fmt: skip
    except StoreError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        store.close()
    console.print(f"{account_id}: legal hold {'lifted' if release else 'placed'}")


@labels_app.command("export")
def labels_export(
    out: Annotated[Path | None, typer.Option(help="JSONL file (default: standard output)")] = None,
    since: int = typer.Option(0, help="only labels recorded since (epoch ms)"),
) -> None:
    """Label events from decided objections, as JSONL events for `arbiter ingest` and training."""
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        events = privacy.labels_since(store.database, since)
    finally:
        store.close()
    text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"{len(events)} label event(s) written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.add_typer(retention_app, name="retention")
    app.add_typer(labels_app, name="labels")

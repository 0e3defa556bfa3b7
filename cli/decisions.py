"""`arbiter decisions ...`: look after the decision store (schema, hash chain)."""

from __future__ import annotations

import typer
from rich.console import Console

from cli.settings import settings_or_exit
from cli.stores import open_decision_store
from engine.errors import StoreError
from engine.store import DecisionStore

console = Console(highlight=False)
decisions_app = typer.Typer(help="Look after the decision store: its schema and its hash chain.")


def _fail(exc: StoreError, url: str) -> typer.Exit:
    console.print(f"[red]{exc.message} (ARBITER_DATABASE_URL={url})[/red]")
    return typer.Exit(2)


@decisions_app.command("verify-chain")
def verify_chain() -> None:
    """Recompute the hash chain of every decision; name the first broken record (exit 1)."""
    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    try:
        head = store.chain_head()
        if head is None:
            console.print("the chain is empty: no decision is stored")
            return
        seq, digest = head
        broken = store.verify_chain(through_seq=seq)
    except StoreError as exc:
        raise _fail(exc, settings.database_url) from exc
    finally:
        store.close()
    if broken is not None:
        console.print(f"[red]chain broken at {broken}[/red]")
        raise typer.Exit(1)
    console.print(f"the chain of {seq:,} records is intact; head {digest}")


@decisions_app.command("migrate")
def migrate() -> None:
    """Create or upgrade the decision store's schema (Alembic, to head)."""
    settings = settings_or_exit()
    store = DecisionStore(settings.database_url)
    try:
        store.migrate()
    except StoreError as exc:
        raise _fail(exc, settings.database_url) from exc
    finally:
        store.close()
    console.print("the decision store's schema is up to date")


def register(app: typer.Typer) -> None:
    app.add_typer(decisions_app, name="decisions")

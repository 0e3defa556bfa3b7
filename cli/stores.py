"""Opening the decision store for a command: the existing, migrated one, or exit 2 saying why."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import typer
from rich.console import Console

from engine.errors import StoreError
from engine.settings import Settings
from engine.store import DecisionStore


def open_decision_store(settings: Settings, console: Console) -> DecisionStore:
    """The store at ARBITER_DATABASE_URL; a missing SQLite file or schema exits 2 (a command
    that only reads must not create an empty store by accident)."""
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        console.print(f"[red]no decision store at {url.database} (ARBITER_DATABASE_URL)[/red]")
        raise typer.Exit(2)
    store = DecisionStore(settings.database_url)
    try:
        problem = store.schema_problem()
    except StoreError as exc:
        store.close()
        console.print(f"[red]{exc.message} (ARBITER_DATABASE_URL={settings.database_url})[/red]")
        raise typer.Exit(2) from exc
    if problem is not None:
        store.close()
        console.print(f"[red]{problem}[/red]")
        raise typer.Exit(2)
    return store

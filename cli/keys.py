"""`arbiter keys ...`: API keys for the HTTP API (engine/keys.py, docs/security.md)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.settings import settings_or_exit
from engine.errors import EngineError
from engine.keys import ROLES, create_key, list_keys, revoke_key
from engine.store import DecisionStore, now_ms
from features.events import format_ts

console = Console(highlight=False)
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.")


def format_ts_or_dash(ms: int | None) -> str:
    return "-" if ms is None else format_ts(ms)


def _store() -> DecisionStore:
    settings = settings_or_exit()
    store = DecisionStore(settings.database_url)
    store.migrate()  # a fresh machine's first key may come before the first start
    return store


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who uses it: the actor recorded in audit events")],
    role: Annotated[list[str], typer.Option(help=f"repeatable: {', '.join(ROLES)}")],
    actor: Annotated[str, typer.Option(help="who creates it (audit)")] = "cli",
    quiet: Annotated[bool, typer.Option("--quiet", help="print the key alone")] = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    store = _store()
    try:
        info, key = create_key(store.database, name=name, roles=role, actor=actor, at=now_ms())
    except EngineError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        store.close()
    if quiet:
        print(key)
        return
    console.print(f"key for {info.name} ({', '.join(info.roles)}), id {info.key_id}:")
    print(key)
    console.print("[yellow]it is shown this once: keep it in your secret store[/yellow]")


@keys_app.command("revoke")
def revoke(
    name_or_id: str,
    actor: Annotated[str, typer.Option(help="who revokes it (audit)")] = "cli",
) -> None:
    """Revoke the active key(s) with that name or id (effective within seconds)."""
    store = _store()
    try:
        ids = revoke_key(store.database, name_or_id, actor=actor, at=now_ms())
    finally:
        store.close()
    if not ids:
        console.print(f"[red]no active key named or numbered {name_or_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked: {', '.join(ids)}")


@keys_app.command("list")
def list_() -> None:
    """Every key: id, name, roles, when created, by whom, revoked (never the key itself)."""
    store = _store()
    try:
        keys = list_keys(store.database)
    finally:
        store.close()
    table = Table("id", "name", "roles", "created", "by", "revoked")
    for k in keys:
        table.add_row(k.key_id, k.name, ", ".join(k.roles), format_ts_or_dash(k.created_at),
                      k.created_by, format_ts_or_dash(k.revoked_at))  # fmt: skip
    console.print(table)


@keys_app.command("local")
def local(
    prefix: Annotated[str, typer.Option(help="names: <prefix>-<role>")] = "local",
) -> None:
    """For a developer's machine (`make run`): revoke the previous <prefix>-<role> keys and
    print a fresh key per role, one `role key` line each."""
    store = _store()
    now = now_ms()
    try:
        lines = []
        for role in ROLES:
            name = f"{prefix}-{role}"
            revoke_key(store.database, name, actor="keys local", at=now)
            _, key = create_key(store.database, name=name, roles=[role], actor="keys local",
                                at=now)  # fmt: skip
            lines.append(f"{role:9} {key}")
    finally:
        store.close()
    print("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")

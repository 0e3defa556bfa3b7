"""`arbiter decisions ...`: look after the decision store (schema, hash chain, and the
decisions re-derived with the model versions that made them)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.settings import settings_or_exit
from cli.stores import open_decision_store
from engine.errors import StoreError
from engine.store import DecisionStore
from engine.verification import STATUSES, Verifier

console = Console(highlight=False)
decisions_app = typer.Typer(
    help="Look after the decision store: its schema, its hash chain, its decisions re-derived."
)


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


@decisions_app.command("verify")
def verify(
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Verify N decisions drawn at random (default: every one)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample: the same seed, the same draw")] = 0,
) -> None:
    """Re-derive each decision's score and contributions from its stored feature values with
    the exact model version that made it (from the registry, not the current champion).

    Prints a line per mismatch and per decision whose model is unavailable, then the counts.

    Exit 0: no mismatch, every model loaded. Exit 1: at least one mismatch, whatever else.

    Exit 2: no mismatch, but a decision's model version is unavailable, or no usable store.
    """
    from models.registry import load_version  # MLflow is slow to import: only when verifying

    settings = settings_or_exit()
    store = open_decision_store(settings, console)
    uri, cache = settings.mlflow_tracking_uri, settings.data_dir / "models"
    verifier = Verifier(store, lambda name, version: load_version(uri, name, version, cache))
    try:
        results = verifier.verify_sample(sample, seed=seed)
    except StoreError as exc:
        raise _fail(exc, settings.database_url) from exc
    finally:
        store.close()
    for result in results:
        if result.status in ("mismatch", "model_unavailable"):
            colour = "red" if result.status == "mismatch" else "yellow"
            console.print(
                f"[{colour}]{result.status}[/{colour}] {escape(result.decision_id)}: "
                f"{escape(result.detail)}"
            )
    counts = Counter(result.status for result in results)
    table = Table()
    table.add_column("status")
    table.add_column("decisions", justify="right")
    for status in STATUSES:
        table.add_row(status, f"{counts[status]:,}")
    console.print(table)
    drawn = f" (a sample drawn with seed {seed})" if sample is not None else ""
    console.print(f"{len(results):,} decisions verified{drawn}")
    if counts["mismatch"]:
        raise typer.Exit(1)
    if counts["model_unavailable"]:
        raise typer.Exit(2)


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

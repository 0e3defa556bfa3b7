"""`arbiter simulate`: write a seeded, deterministic world of the platform to a directory."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from features.events import parse_ts
from training.simulator import InvalidSimConfig, SimConfig, SimulatedWorld, simulate, write_world
from training.simulator.config import DEFAULT_START, MINUTE_MS


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)


def simulate_command(
    accounts: Annotated[int, typer.Option(help="Number of accounts.")] = 2000,
    days: Annotated[int, typer.Option(help="Length of the simulated window in days.")] = 60,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same arguments give the same world.")
    ] = 7,
    start: Annotated[
        str | None,
        typer.Option(help=f"Window start, ISO 8601 with a time zone (default {DEFAULT_START})."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            help="Window end instead of --start: 'now' (rounded down to the minute) or ISO 8601."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory to write the world into.")] = Path(
        "var/world"
    ),
    jsonl: Annotated[
        bool, typer.Option("--jsonl/--no-jsonl", help="Also write events.jsonl.")
    ] = True,
) -> None:
    """Simulate the platform's customers and fraud; write events, accounts, truth and summary."""
    config = _config(accounts, days, seed, start, end)
    began = time.perf_counter()
    world = simulate(config)
    simulated = time.perf_counter() - began
    write_world(world, out, jsonl=jsonl)
    total = time.perf_counter() - began
    _report(world, out, simulated, total)


def _config(accounts: int, days: int, seed: int, start: str | None, end: str | None) -> SimConfig:
    if start is not None and end is not None:
        raise typer.BadParameter("give --start or --end, not both", param_hint="--end")
    try:
        if end is not None:
            end_ms = _now_ms() if end.strip().lower() == "now" else parse_ts(end)
            return SimConfig.ending_at(end_ms, accounts=accounts, days=days, seed=seed)
        start_ms = parse_ts(start if start is not None else DEFAULT_START)
        return SimConfig(accounts=accounts, days=days, seed=seed, start_ms=start_ms)
    except InvalidSimConfig as exc:
        raise typer.BadParameter(str(exc)) from exc
    except ValueError as exc:
        raise typer.BadParameter(f"not a time: {exc}", param_hint="--start/--end") from exc


def _now_ms() -> int:
    now = int(dt.datetime.now(tz=dt.UTC).timestamp() * 1000)
    return now - now % MINUTE_MS


def _report(world: SimulatedWorld, out: Path, simulated: float, total: float) -> None:
    summary: dict[str, Any] = world.summary
    console = Console()
    events = Table(
        title=f"{summary['events']:,} events", caption=f"{summary['start']} .. {summary['end']}"
    )
    events.add_column("type")
    events.add_column("events", justify="right")
    for kind, count in summary["events_by_type"].items():
        events.add_row(kind, f"{count:,}")
    console.print(events)
    fraud = Table(title="fraud scenarios (ground truth: truth.parquet, accounts.parquet)")
    for column in ("scenario", "accounts", "account rate", "events", "payments"):
        fraud.add_column(column, justify="left" if column == "scenario" else "right")
    for name, row in summary["scenarios"].items():
        fraud.add_row(
            name,
            f"{row['accounts']:,}",
            f"{row['account_rate']:.2%}",
            f"{row['events']:,}",
            f"{row['payments']:,}",
        )
    rates = summary["base_rates"]
    fraud.add_row(
        "all fraud (share)",
        "",
        f"{rates['fraud_accounts']:.2%}",
        f"{rates['fraud_events']:.2%}",
        f"{rates['fraud_payments']:.2%}",
        style="bold",
    )
    console.print(fraud)
    speed = summary["events"] / simulated if simulated else 0.0
    written = total - simulated
    console.print(
        f"simulated in {simulated:.1f}s ({speed:,.0f} events/s); wrote {out}/ in {written:.1f}s"
    )

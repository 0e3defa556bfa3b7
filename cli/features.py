"""`arbiter ingest` and `arbiter features ...`: load logs, look at features, prove parity."""

from __future__ import annotations

import datetime as dt
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.settings import settings_or_exit
from engine.settings import Settings
from features.bulk import BulkLoader
from features.connect import SyncClient, redis_client
from features.errors import FeatureError
from features.events import parse_ts, validate_frame
from features.log import frame_records, read_log, write_parquet
from features.offline import build_features
from features.online import OnlineStore
from features.parity import check
from features.spec import SpecPlan, load_spec

console = Console()
features_app = typer.Typer(
    help="Look at features, build them offline, prove online/offline parity."
)

SpecOpt = Annotated[Path | None, typer.Option("--spec", help="Feature spec (default: settings)")]


def _spec(path: Path | None, settings: Settings) -> SpecPlan:
    try:
        return load_spec(path or settings.feature_spec)
    except FeatureError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


def connect(url: str) -> SyncClient:
    try:
        client = redis_client(url, 10)
        client.ping()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        console.print(
            f"[red]Redis does not answer at {url} ({exc}). Start one with `make redis`, or set "
            "ARBITER_REDIS_URL.[/red]"
        )
        raise typer.Exit(3) from None
    return client


def store_for(settings: Settings, plan: SpecPlan, url: str | None = None) -> OnlineStore:
    return OnlineStore(
        connect(url or settings.redis_url),
        plan,
        prefix=settings.redis_prefix,
        dedupe_ttl_ms=settings.dedupe_ttl_hours * 3_600_000,
    )


def _load(log: Path, *, platform: bool) -> Any:
    try:
        frame = read_log(log)
        if platform:
            validate_frame(frame)
    except FeatureError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    return frame


def ingest(
    log: Annotated[Path, typer.Argument(help="Event log (.parquet or .jsonl)")],
    spec: SpecOpt = None,
    batch: Annotated[int, typer.Option(help="Events per Redis round trip")] = 2000,
    validate: Annotated[bool, typer.Option(help="Check events against the platform schema")] = True,
    mode: Annotated[
        str,
        typer.Option(
            help="auto: bulk when Redis holds none of the log's entities or events, else stream; "
            "stream: event by event through the apply script; bulk: refuse unless fresh"
        ),
    ] = "auto",
) -> None:
    """Apply an event log to the online store (idempotent by event_id)."""
    if mode not in ("auto", "stream", "bulk"):
        raise typer.BadParameter("must be auto, stream or bulk", param_hint="--mode")
    settings = settings_or_exit()
    plan = _spec(spec, settings)
    frame = _load(log, platform=validate)
    store = store_for(settings, plan)
    started = time.perf_counter()
    if mode != "stream":
        loader = BulkLoader(store)
        if loader.is_fresh(frame):
            loaded = loader.load(frame)
            elapsed = time.perf_counter() - started
            console.print(
                f"{loaded:,} events applied, 0 already known, in {elapsed:.1f} s "
                f"({loaded / elapsed:,.0f} events/s, bulk load); spec {plan.version}"
            )
            return
        if mode == "bulk":
            console.print("[red]Redis already holds entities or events of this log; use "
                          "--mode stream (or auto) to apply it event by event[/red]")  # fmt: skip
            raise typer.Exit(2)
    records = list(frame_records(frame))
    known = store.seen(records)
    records = [record for record, k in zip(records, known, strict=True) if not k]
    applied = 0
    with Progress(
        TextColumn("ingest"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("ingest", total=len(records))
        # Prepare chunk i+1 while chunk i is applied: Python and Redis each keep a core busy.
        with ThreadPoolExecutor(max_workers=1) as sender:
            pending: Future[int] | None = None
            for i in range(0, len(records), batch):
                chunk = records[i : i + batch]
                calls = store.prepare(chunk)
                if pending is not None:
                    applied += pending.result()
                pending = sender.submit(store.send, calls)
                progress.advance(task, len(chunk))
            if pending is not None:
                applied += pending.result()
    elapsed = time.perf_counter() - started
    console.print(
        f"{applied:,} events applied, {len(frame) - applied:,} already known, "
        f"in {elapsed:.1f} s ({len(frame) / elapsed:,.0f} events/s, streamed); "
        f"spec {plan.version}"
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


@features_app.command("show")
def show(
    account: Annotated[str, typer.Option(help="account_id")],
    ip: Annotated[str | None, typer.Option(help="IP of a hypothetical request")] = None,
    card: Annotated[str | None, typer.Option(help="card_fp of a hypothetical payment")] = None,
    at: Annotated[str | None, typer.Option(help="As of (ISO 8601); default now")] = None,
    spec: SpecOpt = None,
) -> None:
    """The online features of an account (and optionally an IP and card) as of a moment."""
    settings = settings_or_exit()
    plan = _spec(spec, settings)
    store = store_for(settings, plan)
    ts = parse_ts(at) if at else int(time.time() * 1000)
    event: dict[str, Any] = {"event_id": "show", "type": "query", "ts": ts, "account_id": account}
    if ip:
        event["ip"] = ip
    if card:
        event["card_fp"] = card
    values = store.read(event)
    moment = dt.datetime.fromtimestamp(ts / 1000, tz=dt.UTC).isoformat()
    table = Table(title=f"features of {account} as of {moment} (spec {plan.version})")
    table.add_column("feature")
    table.add_column("value", justify="right")
    for name in plan.output:
        table.add_row(name, _fmt(values[name]))
    console.print(table)


@features_app.command("build")
def build(
    log: Annotated[Path, typer.Argument(help="Event log (.parquet or .jsonl)")],
    out: Annotated[Path, typer.Option(help="Where to write the feature matrix")] = Path(
        "var/features.parquet"
    ),
    spec: SpecOpt = None,
) -> None:
    """The point-in-time feature matrix of every event of a log (offline builder)."""
    settings = settings_or_exit()
    plan = _spec(spec, settings)
    frame = _load(log, platform=False)
    started = time.perf_counter()
    try:
        matrix = build_features(plan, frame)
    except FeatureError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    elapsed = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(matrix, out)
    console.print(
        f"{len(matrix):,} events x {len(plan.output)} features in {elapsed:.1f} s -> {out} "
        f"(spec {plan.version})"
    )


@features_app.command("parity")
def parity(
    log: Annotated[Path, typer.Argument(help="Event log (.parquet or .jsonl)")],
    redis_url: Annotated[
        str, typer.Option(help="A scratch Redis database: it is FLUSHED first")
    ] = "redis://127.0.0.1:6379/14",
    spec: SpecOpt = None,
    limit: Annotated[int, typer.Option(help="Replay only the first N events")] = 0,
) -> None:
    """Replay a log through Redis and compare every feature with the offline builder."""
    settings = settings_or_exit()
    plan = _spec(spec, settings)
    frame = _load(log, platform=False)
    if limit:
        frame = frame.head(limit).reset_index(drop=True)
    client = connect(redis_url)
    client.flushdb()
    store = OnlineStore(client, plan, prefix=settings.redis_prefix)
    started = time.perf_counter()
    mismatches = check(store, frame)
    elapsed = time.perf_counter() - started
    cells = len(frame) * len(plan.output)
    if mismatches:
        for m in mismatches[:20]:
            console.print(f"{m.event_id} {m.feature}: offline {m.offline!r} online {m.online!r}")
        console.print(f"[red]{len(mismatches):,} of {cells:,} values differ[/red]")
        raise typer.Exit(1)
    console.print(
        f"[green]parity: {cells:,} values over {len(frame):,} events agree within 1e-9[/green] "
        f"({elapsed:.1f} s)"
    )


@features_app.command("check")
def check_spec(spec: Annotated[Path, typer.Argument(help="Feature spec to validate")]) -> None:
    """Validate a feature spec and print its version and features."""
    try:
        plan = load_spec(spec)
    except FeatureError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"{spec}: valid, version {plan.version}: {len(plan.output)} features over "
        f"{len(plan.primitives)} stored aggregates, entities {', '.join(plan.entity_keys)}"
    )


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.add_typer(features_app, name="features")

"""`arbiter train`, `arbiter promote` and `arbiter models list`: the data scientist's loop.

Reads settings (tracking URI, artifact folder, model name, default configs) and the training
config; everything else is `training.*`. Domain errors are printed as one red line and exit 2;
a refused promotion exits 1. MLflow, LightGBM and SHAP are imported when a command runs, so the
other `arbiter` commands do not pay for them at start-up.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

# MLflow: no usage telemetry from a fraud engine, and no tqdm bars inside our own progress.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cli.settings import settings_or_exit
from engine.settings import Settings
from features.errors import FeatureError
from training.config import TrainingConfig, load_training_config, parse_training_config
from training.errors import TrainingError

if TYPE_CHECKING:
    from training.pipeline import Registry, TrainingResult
    from training.promote import Promotion

console = Console()
models_app = typer.Typer(help="Registered model versions.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Training config (default: settings)")
]


DaskLocalOpt = Annotated[
    int | None,
    typer.Option(
        "--dask-local", min=1, help="Boost on a LocalCluster of N worker processes, 1 thread each"
    ),
]
DaskSchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--dask-scheduler", help="Boost on the Dask cluster of this scheduler (tcp://...)"
    ),
]


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("promote")(promote_command)
    app.add_typer(models_app, name="models")


class RichSteps:
    """`training.pipeline.Progress` drawn as one rich line per step (a bar for boosting)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def step(self, name: str) -> None:
        self.finish()
        self.task = self.progress.add_task(name, total=None)

    def advance(self, done: int, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=done, total=total)

    def finish(self) -> None:
        """Show the current step as complete (boosting: the rounds it ran)."""
        if self.task is not None:
            done = self.progress.tasks[-1].completed or 1
            self.progress.update(self.task, total=done, completed=done)
            self.task = None


def _config(path: Path | None, settings: Settings) -> tuple[TrainingConfig, Path]:
    chosen = path or settings.training_config
    try:
        return load_training_config(chosen), chosen
    except TrainingError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


def _on_dask(
    config: TrainingConfig, path: Path, local: int | None, scheduler: str | None
) -> TrainingConfig:
    """The config with its `compute` section pointed at the cluster the options name."""
    if local is None and scheduler is None:
        return config
    if local is not None and scheduler is not None:
        raise typer.BadParameter(
            "give --dask-local or --dask-scheduler, not both", param_hint="--dask-scheduler"
        )
    raw = config.model_dump(mode="python")
    raw["compute"] |= {"engine": "dask", "scheduler": scheduler}
    if local is not None:
        raw["compute"]["workers"] = local
    try:
        return parse_training_config(raw, f"training config {path} with the --dask options")
    except TrainingError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


def _registered(path: Path | None) -> tuple[Settings, TrainingConfig, str]:
    """The settings, the training config and the registered model name it names (for the
    commands that talk to the registry), with MLflow's chatter quieted."""
    settings = settings_or_exit()
    training_config, _ = _config(path, settings)
    _quiet_mlflow()
    return settings, training_config, training_config.model_name or settings.model_name


def _quiet_mlflow() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, TrainingError | FeatureError):
        console.print(f"[red]{exc.message}[/red]")
        return typer.Exit(2)
    console.print(f"[red]MLflow: {exc}[/red]")
    return typer.Exit(3)


def train_command(
    events: Annotated[Path, typer.Option("--events", help="Event log (.parquet or .jsonl)")],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Feature spec (default: settings)")
    ] = None,
    config: ConfigOpt = None,
    dask_local: DaskLocalOpt = None,
    dask_scheduler: DaskSchedulerOpt = None,
) -> None:
    """Train on an event log, evaluate, log to MLflow, register the model as `challenger`.
    With --dask-local or --dask-scheduler (or `compute:` in the config) the boosting runs on a
    Dask cluster."""
    from mlflow.exceptions import MlflowException

    from training.pipeline import Registry, load_source, train

    settings = settings_or_exit()
    training_config, config_path = _config(config, settings)
    training_config = _on_dask(training_config, config_path, dask_local, dask_scheduler)
    name = training_config.model_name or settings.model_name
    target = Registry(
        tracking_uri=settings.mlflow_tracking_uri,
        artifacts=settings.mlflow_artifacts,
        model_name=name,
        experiment=training_config.experiment or name,
    )
    _quiet_mlflow()
    columns = (
        SpinnerColumn(), TextColumn("{task.description:<32}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(),
    )  # fmt: skip
    try:
        with Progress(*columns, console=console) as progress:
            steps = RichSteps(progress)
            source = load_source(events, spec or settings.feature_spec, steps)
            result = train(source, training_config, target, steps, config_path)
            steps.finish()
    except (TrainingError, FeatureError, MlflowException) as exc:
        raise _fail(exc) from None
    _report_training(result, target, config)


def _report_training(result: TrainingResult, target: Registry, config: Path | None = None) -> None:
    windows = Table(title="split (time-ordered, gaps of the label maturity)")
    for column in ("window", "from", "to", "events", "positive"):
        windows.add_column(
            column, justify="left" if column in ("window", "from", "to") else "right"
        )
    for part in result.dataset.parts:
        start, end = (
            dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC) for t in (part.start, part.end)
        )
        windows.add_row(
            part.name, f"{start:%Y-%m-%d %H:%M}", f"{end:%Y-%m-%d %H:%M}",
            f"{len(part.y):,}", f"{part.positives:,}",
        )  # fmt: skip
    console.print(windows)
    evaluation = result.evaluation
    metrics = Table(title=f"test window: {evaluation['events']:,} events")
    metrics.add_column("metric")
    metrics.add_column("LightGBM", justify="right")
    metrics.add_column("logistic regression", justify="right")
    baseline = evaluation.get("baseline", {})
    for key, value in evaluation["model"].items():
        other = baseline.get(key)
        metrics.add_row(key, f"{value:.4f}", "-" if other is None else f"{other:.4f}")
    top = evaluation["top_k_per_day"]
    other_top = evaluation.get("baseline_top_k_per_day", {}).get("precision")
    metrics.add_row(
        f"precision of top {int(top['k'])}/day",
        f"{top['precision']:.4f}",
        "-" if other_top is None else f"{other_top:.4f}",
    )
    metrics.add_row("score at 1% FPR", f"{evaluation['threshold_at_1pct_fpr']:.4f}", "-")
    best = evaluation["best_threshold"]
    metrics.add_row(
        "lowest expected loss", f"{best['loss']:,.0f} at {best['threshold']:g}",
        f"(no model: {evaluation['expected_loss'][-1]['loss']:,.0f})",
    )  # fmt: skip
    console.print(metrics)
    if "per_scenario" in evaluation:
        console.print(
            "recall at the 1%-FPR threshold per scenario (truth.parquet): "
            + ", ".join(
                f"{k} {v['recall']:.0%} of {int(v['events'])}"
                for k, v in evaluation["per_scenario"].items()
                if k != "benign"
            )
        )
    machines = result.model.params.get("num_machines")
    if machines:
        console.print(
            f"boosted on Dask: {machines} workers, {result.model.best_iteration} rounds kept "
            "(best validation log loss)"
        )
    done = result.registered
    seconds = sum(result.timings.values())
    console.print(
        f"[green]registered {target.model_name} version {done.version} "
        f"(alias challenger), run {done.run_id}[/green] in {seconds:.1f} s\n"
        f"look at it: mlflow ui --backend-store-uri {target.tracking_uri}\n"
        "promote it: arbiter promote" + (f" --config {config}" if config else "")
    )


def promote_command(
    version: Annotated[
        str | None, typer.Option("--version", help="Version to promote (default: challenger)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Override the gate")] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the gate is overridden (with --force)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Make a version `champion` if it passes the gate against the current champion."""
    from mlflow.exceptions import MlflowException

    from training import tracking
    from training.promote import promote

    if force and not (reason and reason.strip()):
        raise typer.BadParameter(
            '--force needs --reason "..." (it is recorded)', param_hint="--reason"
        )
    settings, training_config, name = _registered(config)
    try:
        client = tracking.configure(settings.mlflow_tracking_uri)
        result = promote(
            client, name, training_config.promotion, version, reason if force else None
        )
    except (TrainingError, MlflowException) as exc:
        raise _fail(exc) from None
    _report_promotion(name, result)
    if result.outcome == "refused":
        raise typer.Exit(1)


def _report_promotion(name: str, result: Promotion) -> None:
    from training.promote import AP, RECALL

    gate = result.gate
    if gate is not None:
        table = Table(
            title=f"gate on the holdout of run {gate.holdout_run} ({gate.holdout_events:,} events)"
        )
        table.add_column("metric")
        table.add_column(f"challenger v{result.version}", justify="right")
        table.add_column(f"champion v{gate.champion_version}", justify="right")
        for key in (AP, RECALL):
            table.add_row(key, f"{gate.challenger[key]:.4f}", f"{gate.champion[key]:.4f}")
        console.print(table)
        for note in gate.notes:
            console.print(f"[yellow]note: {note}[/yellow]")
    messages = {
        "first": f"[green]{name} version {result.version} is the first champion[/green]",
        "passed": f"[green]{name} version {result.version} passed the gate: now champion[/green]",
        "forced": f"[yellow]{name} version {result.version} forced to champion "
        "(reason recorded)[/yellow]",
        "already_champion": f"{name} version {result.version} is already champion",
        "refused": f"[red]{name} version {result.version} refused: "
        + "; ".join(gate.reasons if gate else [])
        + '[/red]\n(override with --force --reason "...")',
    }
    console.print(messages[result.outcome])


@models_app.command("list")
def list_models(config: ConfigOpt = None) -> None:
    """Versions of the model, their aliases and key test metrics."""
    from mlflow.exceptions import MlflowException

    from training import registry, tracking

    settings, _, name = _registered(config)
    try:
        client = tracking.configure(settings.mlflow_tracking_uri)
        rows = registry.versions(client, name)
    except (TrainingError, MlflowException) as exc:
        raise _fail(exc) from None
    table = Table(title=f"{name} at {settings.mlflow_tracking_uri}")
    for column in ("v", "aliases", "created (UTC)", "AP", "AUC", "R@1%FPR", "base AP", "gate"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        created = dt.datetime.fromtimestamp(row.created_ms / 1000, tz=dt.UTC)
        table.add_row(
            row.version,
            ", ".join(row.aliases),
            f"{created:%m-%d %H:%M}",
            *(_num(row.metrics.get(k)) for k in registry.KEY_METRICS),
            row.tags.get("gate.result", ""),
        )
    console.print(table)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"

"""`arbiter policy ...`: check a policy file, and backtest it on the stored decisions.

`check FILE` validates the file as the service would (including the features its rules and
triggers name, against ARBITER_FEATURE_SPEC) and prints what it decides with. `backtest FILE`
replays the decisions in the store (ARBITER_DATABASE_URL) under the proposed policy, from their
recorded scores and feature values, and prints how many would move from each action to each
other. Decisions made without a score (degraded, account already suspended) cannot be replayed:
they are counted apart. See docs/policy.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.table import Table

from cli.settings import settings_or_exit
from cli.stores import open_decision_store
from engine.backtest import WhatIf, replay
from engine.errors import StoreError
from engine.policy import Action, InvalidPolicy, Policy, load_policy
from engine.policy_model import Thresholds
from engine.reasons import text_of
from engine.settings import Settings
from explanations.catalogue import InvalidCatalogue, load_catalogue
from features.errors import FeatureError
from features.spec import load_spec

console = Console(highlight=False, soft_wrap=True)
policy_app = typer.Typer(help="Check an ops policy file; backtest it on the stored decisions.")

ACTIONS: tuple[Action, ...] = get_args(Action)
FileArg = Annotated[Path, typer.Argument(help="The policy file (YAML), e.g. config/policy.yaml")]


# --- commands -------------------------------------------------------------------------------


def _load(path: Path, settings: Settings) -> Policy:
    """The policy as the service would load it, or exit 2 with the message."""
    try:
        plan = load_spec(settings.feature_spec)
    except FeatureError as exc:
        console.print(f"[red]{exc.message} (ARBITER_FEATURE_SPEC={settings.feature_spec})[/red]")
        raise typer.Exit(2) from None
    try:
        return load_policy(path, features={f.name for f in plan.features},
                           text_features=plan.text_features())  # fmt: skip
    except InvalidPolicy as exc:
        console.print(f"[red]invalid: {exc.message}[/red]")
        raise typer.Exit(2) from None


def _limits(t: Thresholds) -> str:
    return f"review >= {t.review}, decline >= {t.decline}, suspend_account >= {t.suspend_account}"


@policy_app.command("check")
def check(path: FileArg) -> None:
    """Validate a policy file (exit 2 with the message if invalid) and show what it decides."""
    policy = _load(path, settings_or_exit())
    m = policy.model
    console.print(f"[green]valid[/green]: policy {m.name} version {policy.version}")
    console.print(f"thresholds: {_limits(m.thresholds)}")
    for segment in m.segments:
        when = segment.when.model_dump(exclude_none=True)
        console.print(f"segment {segment.name} when {when}: {_limits(segment.thresholds)}")
    for kind, lists in (("allow", m.lists.allow), ("deny", m.lists.deny)):
        sizes = {name: len(entries) for name, entries in lists.model_dump().items() if entries}
        console.print(f"{kind} lists: {sizes or 'empty'}")
    for rule in m.rules:
        bound = f"> {rule.when.above}" if rule.when.above is not None else f"< {rule.when.below}"
        console.print(
            f"rule {rule.name}: {rule.when.feature} {bound} -> {rule.action} ({rule.reason})"
        )
    console.print(f"triggers: {len(m.triggers)}; degraded action: {m.degraded_action}")
    a = m.account
    console.print(
        f"account decisions: review >= {a.thresholds.review}, suspend_account >= "
        f"{a.thresholds.suspend_account}; cooldown {a.cooldown_seconds} s"
    )
    for account_rule in a.rules:
        conditions = " and ".join(
            f"{cond.feature} {'>' if cond.above is not None else '<'} "
            f"{cond.above if cond.above is not None else cond.below}"
            for cond in account_rule.when
        )
        console.print(
            f"account rule {account_rule.name}: {conditions} -> {account_rule.action} "
            f"({account_rule.reason})"
        )
    _unworded(policy, settings_or_exit())


def _unworded(policy: Policy, settings: Settings) -> None:
    """Warn (exit 0) of the rules' reasons the reasons catalogue does not word: the customer's
    notice would give the engine's text, or the code re-cased, and the rationale a generic
    sentence."""
    try:
        words = load_catalogue(settings.reasons_catalogue).model.rules
    except InvalidCatalogue as exc:
        console.print(f"[yellow]warning: the reasons catalogue cannot be read: {exc.message}")
        return
    m = policy.model
    for reason in dict.fromkeys([r.reason for r in m.rules] + [r.reason for r in m.account.rules]):
        if reason not in words:
            console.print(
                f"[yellow]warning: reason {reason} has no customer words in "
                f"{settings.reasons_catalogue} (`rules`): the notice reads {text_of(reason)!r} "
                "and the rationale a generic sentence[/yellow]"
            )


@policy_app.command("backtest")
def backtest(
    path: FileArg,
    since: Annotated[
        str | None,
        typer.Option(help="Replay decisions from this time (ISO 8601; UTC unless it says)"),
    ] = None,
) -> None:
    """Replay the stored decisions under a proposed policy: what would move where."""
    settings = settings_or_exit()
    policy = _load(path, settings)
    since_ms = _since(since)
    store = open_decision_store(settings, console)
    try:
        result = replay(policy, store.decisions_since(since_ms))
    except StoreError as exc:
        console.print(f"[red]{exc.message} (ARBITER_DATABASE_URL={settings.database_url})[/red]")
        raise typer.Exit(2) from None
    finally:
        store.close()
    _report(policy, result)


def _since(text: str | None) -> int:
    if text is None:
        return 0
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        console.print(f"[red]--since {text!r} is not an ISO 8601 date or time[/red]")
        raise typer.Exit(2) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)


def _report(policy: Policy, result: WhatIf) -> None:
    console.print(f"proposed policy {policy.model.name} version {policy.version}")
    if result.versions:
        recorded = ", ".join(f"{v} ({n:,})" for v, n in result.versions.most_common())
        console.print(f"recorded under policy versions: {recorded}")
    table = Table(title="recorded action (rows) -> action under the proposed policy (columns)")
    table.add_column("recorded")
    for action in ACTIONS:
        table.add_column(action, justify="right")
    table.add_column("total", justify="right")
    for was in ACTIONS:
        cells = []
        for now in ACTIONS:
            n = result.moves[(was, now)]
            cells.append(f"[yellow]{n:,}[/yellow]" if n and was != now else f"{n:,}")
        table.add_row(was, *cells, f"{sum(result.moves[(was, a)] for a in ACTIONS):,}")
    totals = [f"{sum(result.moves[(a, now)] for a in ACTIONS):,}" for now in ACTIONS]
    table.add_row("total", *totals, f"{result.replayed:,}", style="bold")
    console.print(table)
    milder = result.changed - result.stricter
    console.print(
        f"{result.changed:,} of {result.replayed:,} decisions would change "
        f"({result.stricter:,} stricter, {milder:,} milder)"
    )
    if result.unscored:
        apart = ", ".join(
            f"{why} -> {action}: {n:,}" for (why, action), n in sorted(result.unscored.items())
        )
        console.print(f"not replayed: {sum(result.unscored.values()):,} ({apart})")
    console.print(
        "[dim]IP, card, BIN country and destination lists are not in the records: "
        "a replay applies the account lists, rules, segments and thresholds only[/dim]"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")

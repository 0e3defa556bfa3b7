"""The settings every `arbiter` command starts from: read once, refused with one red line."""

from __future__ import annotations

import typer
from rich.console import Console

from engine.settings import Settings, load_settings

_console = Console(stderr=True, highlight=False)


def settings_or_exit() -> Settings:
    """The environment's settings, or exit 2 saying which setting is wrong."""
    try:
        return load_settings()
    except ValueError as exc:
        _console.print(f"[red]settings: {exc}[/red]")
        raise typer.Exit(2) from None

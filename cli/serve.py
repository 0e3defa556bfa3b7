"""`arbiter serve`: the HTTP API under uvicorn (httptools and uvloop), one worker by default,
on loopback unless told otherwise.

Settings come from the environment (`ARBITER_*`), read by the app factory at startup, in each
worker; workers are stateless (each follows the policy file and the registry on its own). With
SQLite keep one worker: the decision store has one writer at a time (docs/decisions.md).
"""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes. Keep 1 with SQLite (one writer); more need PostgreSQL.",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Serve the decision API (POST /v1/payments/score, /readyz, /docs)."""
    import uvicorn  # here, so other commands do not pay for importing the web stack

    from api.logs import LOG_CONFIG  # JSON lines with request ids (docs/security.md)

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=LOG_CONFIG,
        access_log=False,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

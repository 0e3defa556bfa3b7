"""`arbiter serve`: the HTTP API under uvicorn, one worker, on loopback unless told otherwise.

Settings come from the environment (`ARBITER_*`), read by the app factory at startup; more
workers are more processes of this command (or a process manager), each stateless.
"""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the decision API (POST /v1/payments/score, /readyz, /docs)."""
    import uvicorn  # here, so other commands do not pay for importing the web stack

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=1,
        log_level=log_level,
        access_log=False,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

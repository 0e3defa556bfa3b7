"""A real uvicorn process serving the app (`api.app:create_app --factory`) for end-to-end tests:
its own SQLite file (or the URL given), the given Redis and MLflow store, and any other
`ARBITER_` settings; its log is kept and shown when it fails to start. And `running`: the app
in process, for tests that reach into its runtime."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(
        self,
        folder: Path,
        *,
        tracking_uri: str,
        model_name: str,
        redis_url: str,
        database_url: str | None = None,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
        env.update(
            ARBITER_REDIS_URL=redis_url,
            ARBITER_DATABASE_URL=database_url or f"sqlite:///{folder}/arbiter.db",
            ARBITER_MLFLOW_TRACKING_URI=tracking_uri,
            ARBITER_MODEL_NAME=model_name,
            ARBITER_DATA_DIR=str(folder / "var"),
            MLFLOW_DISABLE_TELEMETRY="true",
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        )
        env.update({f"ARBITER_{k.upper()}": v for k, v in settings.items()})
        command = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), "--no-access-log"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.database_url = env["ARBITER_DATABASE_URL"]
        self.env = env  # what the CLI needs to reach the same stores

    def wait(self, path: str = "/healthz", timeout: float = 40.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code < 600:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"the server did not answer {path} in {timeout} s:\n{self.log.read_text()}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def running(app: FastAPI, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run `body` against the app in process (httpx's ASGI transport), its lifespan started
    and stopped around it."""

    async def main() -> Any:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                return await body(client)

    return asyncio.run(main())

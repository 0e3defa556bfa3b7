"""A real uvicorn process serving the app (`api.app:create_app --factory`) for end-to-end tests:
its own SQLite file (or the URL given), the given Redis and MLflow store, and any other
`ARBITER_` settings; its log is kept and shown when it fails to start. And `running`: the app
in process, for tests that reach into its runtime. Both come with API keys: a server has one
per role (`keys`, `client(role)`), `key(name, *roles)` makes more."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from engine.keys import ROLES, create_key
from engine.store import DecisionStore, now_ms
from tests.conftest import ROOT, TEST_REDIS_BUDGET_MS


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
        workers: int = 1,
        **settings: str,
    ) -> None:
        """`workers`: uvicorn worker processes (more than one needs a PostgreSQL store)."""
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
            ARBITER_REDIS_BUDGET_MS=TEST_REDIS_BUDGET_MS,  # unless a test sets its own
        )
        env.update({f"ARBITER_{k.upper()}": v for k, v in settings.items()})
        # A key per role (and admin), made in the store before the server starts.
        self.database_url = env["ARBITER_DATABASE_URL"]
        tag = uuid.uuid4().hex[:6]  # several servers may share one store
        self.keys = {role: self.key(f"test-{role}-{tag}", role) for role in ROLES}
        command = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory"]
        many = ["--workers", str(workers)] if workers > 1 else []
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), "--no-access-log", *many],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
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

    def key(self, name: str, *roles: str) -> str:
        """A new API key named `name` (the actor it records) with `roles`."""
        return new_key(self.database_url, name, *roles)

    def client(self, role: str = "admin", *, key: str | None = None) -> httpx.Client:
        """A client sending the key of `role` (or `key`); `role=""`: no key at all."""
        chosen = key or (self.keys[role] if role else None)
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.url, timeout=30.0, headers=headers)

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate, then kill if it does not end within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def new_key(database_url: str, name: str, *roles: str) -> str:
    """An API key made straight in the decision store (migrated first if new)."""
    store = DecisionStore(database_url)
    try:
        store.migrate()
        _, key = create_key(store.database, name=name, roles=roles, actor="tests", at=now_ms())
    finally:
        store.close()
    return key


def running(app: FastAPI, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run `body` against the app in process (httpx's ASGI transport), its lifespan started
    and stopped around it; the client sends an admin key."""

    async def main() -> Any:
        async with app.router.lifespan_context(app):
            store = app.state.runtime.store
            _, key = create_key(store.database, name=f"test-admin-{uuid.uuid4().hex[:6]}",
                                roles=["admin"], actor="tests", at=now_ms())  # fmt: skip
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://app",
                                         headers=headers) as client:  # fmt: skip
                return await body(client)

    return asyncio.run(main())

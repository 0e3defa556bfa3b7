"""Every door of the API against every role (api/auth.py, docs/security.md): no key is 401, a
key without a role the route admits is 403, a key with one gets past the check. The matrix is
read off the app itself, so a new route without a declaration fails here. Also: revocation, the
key's name as the actor, where keys may come from."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from api.app import create_app
from api.auth import OPEN, Allow
from engine.keys import ROLES, create_key, revoke_key
from engine.settings import Settings
from engine.store import now_ms
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.server import running

pytestmark = pytest.mark.integration


def settings_for(tmp_path, **more: Any) -> Settings:
    return Settings(
        redis_url=TEST_REDIS_URL, database_url=f"sqlite:///{tmp_path / 'arbiter.db'}",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", data_dir=tmp_path / "var",
        feature_spec=ROOT / "config" / "features.yaml", webhook_url=None, **more,
    )  # fmt: skip


def declared(dependant: Any) -> tuple[str, ...] | None:
    """The roles a route admits (its `Allow` dependencies), None when it declares none. The
    check must come first: before any other dependency could answer (a 503) or do work."""
    found: list[str] = []
    stack = list(dependant.dependencies)
    seen = False
    while stack:
        dependency = stack.pop()
        if isinstance(dependency.call, Allow):
            seen = True
            found += dependency.call.roles
        stack += dependency.dependencies
    if seen:
        first = dependant.dependencies[0].call
        assert isinstance(first, Allow), f"{dependant.path}: the role check is not first"
    return tuple(found) if seen else None


def routes(app) -> list[tuple[str, set[str], Any]]:
    """(path, methods, dependant) of every API route, those of included routers too; the
    plain Starlette routes (the docs) must be open."""
    found = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found.append((route.path, set(route.methods), route.dependant))
        elif hasattr(route, "effective_candidates"):  # FastAPI's included router
            found += [(c.path, set(c.methods), c.dependant) for c in route.effective_candidates()]
        else:
            assert route.path in OPEN, f"{route.path} is not an API route and not open"
    return found


def doors(app) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path, roles) of every route; fails for a route that declares no roles."""
    out, undeclared = [], []
    for path, methods, dependant in routes(app):
        roles = declared(dependant)
        if path == "/metrics":
            roles = ("ops",)  # with metrics_public=false (this test's setting)
        for method in sorted(methods):
            if roles is None:
                if path not in OPEN:
                    undeclared.append(f"{method} {path}")
                continue
            out.append((method, path, roles))
    assert not undeclared, f"routes with no roles declared (api/auth.py): {undeclared}"
    return out


def test_every_route_admits_exactly_the_roles_it_declares(tmp_path):
    app = create_app(settings_for(tmp_path, metrics_public=False))

    async def body(client: httpx.AsyncClient) -> None:
        del client.headers["authorization"]  # `running`'s admin key: each call sends its own
        database = app.state.runtime.store.database
        keys = {}
        for role in ROLES:
            _, keys[role] = create_key(database, name=f"matrix-{role}", roles=[role],
                                       actor="tests", at=now_ms())  # fmt: skip
        checked = 0
        for method, path, roles in doors(app):
            url = re.sub(r"\{[^}]+\}", "x", path)
            payload = {} if method in ("POST", "PUT", "PATCH") else None

            async def call(key: str | None, url: str = url, method: str = method,
                           payload: Any = payload) -> httpx.Response:  # fmt: skip
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                return await client.request(method, url, json=payload, headers=headers)

            nobody = await call(None)
            assert nobody.status_code == 401, (method, path, nobody.text)
            assert nobody.json()["error"]["code"] == "unauthenticated"
            assert nobody.headers["www-authenticate"].startswith("Bearer")
            for role, key in keys.items():
                answer = await call(key)
                if role == "admin" or role in roles:
                    assert answer.status_code not in (401, 403, 500), (
                        method,
                        path,
                        role,
                        answer.text,
                    )
                else:
                    assert answer.status_code == 403, (method, path, role, answer.text)
                    assert answer.json()["error"]["code"] == "forbidden"
                checked += 1
        assert checked >= 16 * len(ROLES)  # every door was tried (16 today)
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert (await client.get(path)).status_code != 401

    running(app, body)


def test_keys_are_revoked_named_and_read_only_from_their_places(tmp_path):
    app = create_app(settings_for(tmp_path))

    async def body(client: httpx.AsyncClient) -> None:
        del client.headers["authorization"]
        database = app.state.runtime.store.database
        _, key = create_key(database, name="rev-eve", roles=["reviewer"], actor="dpo",
                            at=now_ms())  # fmt: skip
        for header in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            answer = await client.get("/v1/objections", headers=header)
            assert answer.status_code == 200, answer.text
        # A cookie is taken by the read-only pages only, never by the API.
        client.cookies.set("arbiter_key", key)
        assert (await client.get("/v1/objections")).status_code == 401
        assert (await client.get("/ui/objections")).status_code == 200
        assert (await client.post("/v1/decisions/x/objections", json={})).status_code == 401
        client.cookies.clear()
        wrong = {"Authorization": f"Bearer {key[:-2]}xx"}
        assert (await client.get("/v1/objections", headers=wrong)).status_code == 401
        # The pages' sign-in: only case-reading keys, only from this site.
        _, scorer = create_key(database, name="billing", roles=["scorer"], actor="dpo",
                               at=now_ms())  # fmt: skip
        assert (await client.post("/ui/login", data={"key": scorer})).status_code == 401
        signed = await client.post("/ui/login", data={"key": key})
        assert signed.status_code == 303 and "HttpOnly" in signed.headers["set-cookie"]
        assert "SameSite=strict" in signed.headers["set-cookie"]
        elsewhere = await client.post("/ui/login", data={"key": key},
                                      headers={"Origin": "https://evil.example"})  # fmt: skip
        assert elsewhere.status_code == 403
        client.cookies.clear()
        # Revoked: refused once the key ring reloads (at most `refresh_s`; forced here).
        assert revoke_key(database, "rev-eve", actor="dpo", at=now_ms())
        app.state.runtime.keys._tried_at = -1e18
        refused = await client.get("/v1/objections", headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "the API key is unknown or revoked"

    running(app, body)

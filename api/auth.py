"""Who may open which door: every route declares the roles it admits (`Allow`), and the test of
the authorization matrix (tests/integration/test_authorization.py) fails for a route that
declares none, unless it is one of `OPEN`.

A key comes in `Authorization: Bearer <key>` or `X-API-Key: <key>`; the support pages (GET
/ui/...) also read it from the `arbiter_key` cookie that `/ui/login` sets, since a browser
does not send headers of its own (cookies are never accepted for a change: no cross-site
request can act with them). No key, or an unknown or revoked one: 401; a key without a role
the route admits: 403 (engine/keys.py: roles; `admin` passes every check). The key's name is the
actor a route records (`Principal.name`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from fastapi import Request

from engine.errors import Forbidden, Unauthenticated
from engine.keys import KeyRing, Principal

COOKIE = "arbiter_key"
# Routes with no key: liveness, readiness, the API's own description, the login page.
OPEN = frozenset({
    "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
    "/ui/login",
})  # fmt: skip


class Allow:
    """A dependency admitting keys with one of `roles` (or `admin`); it gives the caller."""

    def __init__(self, *roles: str) -> None:
        self.roles = roles

    def __repr__(self) -> str:
        return f"Allow{self.roles}"

    async def __call__(self, request: Request) -> Principal:
        token = _token(request)
        if token is None:
            raise Unauthenticated(
                "an API key is needed: send it as 'Authorization: Bearer <key>' "
                "(`arbiter keys create`)"
            )
        principal = await authenticate(request.app.state.runtime.keys, token)
        if principal is None:
            raise Unauthenticated("the API key is unknown or revoked")
        if not principal.may(self.roles):
            raise Forbidden(
                f"key '{principal.name}' may not do this: it needs the role "
                f"{' or '.join(self.roles)}"
            )
        request.state.principal = principal
        return principal


async def authenticate(keys: KeyRing, token: str) -> Principal | None:
    """`KeyRing.authenticate` without blocking the event loop: the store is read, when it must
    be, in a thread."""
    if keys.stale():
        await asyncio.to_thread(keys.reload)
    found = keys.lookup(token)
    if found is None and keys.worth_retrying(token):
        await asyncio.to_thread(keys.reload)
        found = keys.lookup(token)
    return found


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in raw ASGI headers, read as `Allow` reads it: `Authorization` if present (a
    scheme other than Bearer: no key), else `X-API-Key`."""
    api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" else None
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip()
    return api_key


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    key = request.headers.get("x-api-key")
    if key is not None:
        return key.strip()
    if request.method == "GET" and request.url.path.startswith("/ui/"):
        return request.cookies.get(COOKIE)
    return None


# The doors (docs/security.md has the table).
SCORER = Allow("scorer")
INGEST = Allow("ingest")
READ_CASES = Allow("support", "reviewer", "privacy")  # rationales, records, cases
SUPPORT = Allow("support", "reviewer")  # open cases, move them on
OPS = Allow("ops")
REINSTATE = Allow("reviewer")  # lift a suspension outside an objection
ACCOUNT_STATUS = Allow("scorer", "support", "reviewer", "ops")
PRIVACY = Allow("privacy")
METRICS = Allow("ops")
# Case transitions only a reviewer may make (the others: support or reviewer).
REVIEWER_ACTIONS = frozenset({"start_review", "decide", "extend", "reject", "close"})

"""Every error the API answers with, rendered one way:

    {"error": {"code": "...", "message": "...", "request_id": "..."}}

(validation errors add the `field` at fault). Domain errors carry their own stable `code`;
`STATUS` maps them to HTTP in one table. Anything unexpected is a 500 with a generic message:
the traceback goes to the log, never to the client. `RequestId` gives every request an id
(the caller's `X-Request-ID` if sane, else a new one), echoed in the response header.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import logs
from api.responses import OrjsonResponse
from api.screen import BodyScreen
from engine.deferred import ContributionsMismatch
from engine.errors import (
    AccountNotFound,
    AccountNotSuspended,
    AccountSuspended,
    DecisionNotFound,
    DecisionPurged,
    EngineError,
    Forbidden,
    InvalidAccountStatus,
    InvalidTransition,
    ModelNotLoaded,
    ObjectionConflict,
    ObjectionNotFound,
    ObjectionsUnavailable,
    PaymentConflict,
    RationalesUnavailable,
    SameReviewer,
    StoreError,
    StoreUnavailable,
    Unauthenticated,
)
from engine.keys import InvalidKey
from features.errors import FeatureError, FeatureStoreUnavailable, InvalidEvent

log = logging.getLogger("arbiter.api")

# Errors about one field of the request: their body names it.
_FIELDED = (InvalidEvent, PaymentConflict)
# Most specific first; the first class an error is an instance of decides.
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (InvalidKey, 422),
    (InvalidEvent, 422),
    (InvalidAccountStatus, 422),
    (DecisionNotFound, 404),
    (DecisionPurged, 410),
    (AccountNotFound, 404),
    (AccountSuspended, 409),
    (AccountNotSuspended, 409),
    (PaymentConflict, 409),
    (ObjectionNotFound, 404),
    (ObjectionConflict, 409),
    (InvalidTransition, 409),
    (SameReviewer, 403),
    (ObjectionsUnavailable, 503),
    (RationalesUnavailable, 503),
    (ModelNotLoaded, 503),
    (StoreUnavailable, 503),
    (FeatureStoreUnavailable, 503),
    (StoreError, 500),
    (ContributionsMismatch, 500),
)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request, status: int, code: str, message: str, field: str | None = None
) -> OrjsonResponse:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id(request)}
    if field is not None:
        body["field"] = field
    return OrjsonResponse({"error": body}, status_code=status)


async def _domain(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, EngineError | FeatureError)
    status, body, headers = render_domain(exc, request_id(request))
    return OrjsonResponse(body, status_code=status, headers=headers)


def internal_error(rid: str | None) -> dict[str, Any]:
    """The body of every 500: nothing of what went wrong, only the id to find it in the log."""
    return {"error": {"code": "internal_error", "message": "internal error", "request_id": rid}}


def render_domain(
    exc: EngineError | FeatureError, rid: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A domain error's status, body and headers (also `api.fast`'s, which has no Request)."""
    status = next((s for cls, s in STATUS if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    if status == 500:
        log.error("%s: %s", type(exc).__name__, exc.message, exc_info=exc)
        error: dict[str, Any] = {"code": "internal_error", "message": "internal error"}
    else:
        error = {"code": exc.code, "message": exc.message}
    error["request_id"] = rid
    if status != 500 and isinstance(exc, _FIELDED) and exc.field is not None:
        error["field"] = exc.field
    if status == 503:  # a dependency is down or nothing is loaded yet: worth a retry
        headers["retry-after"] = "1"
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="arbiter"'
    return status, {"error": error}, headers


async def _validation(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # its `loc` is the byte offset, not a field
        at = first.get("loc", ())[-1:]
        where = f" (at character {at[0]})" if at and isinstance(at[0], int) else ""
        return error_response(request, 422, "invalid_request",
                              f"the body is not JSON in UTF-8{where}", "body")  # fmt: skip
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    # `events[1].segments`, as the docs and the events door name a field of a list's item.
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
    if first.get("type") == "extra_forbidden":
        message = f"field '{field}' is not allowed"
    elif first.get("type") == "missing":
        message = f"field '{field}' is required"
    else:
        what = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        message = f"field '{field}': {what}" if field else what
    return error_response(request, 422, "invalid_request", message, field)


async def _http(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 JSON)
        return error_response(request, 422, "invalid_request",
                              "the body is not JSON in UTF-8", "body")  # fmt: skip
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> OrjsonResponse:
    log.error("unexpected error (request %s)", request_id(request), exc_info=exc)
    return error_response(request, 500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, _domain)
    app.add_exception_handler(FeatureError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyScreen)  # inside RequestId (added last, so outermost)
    app.add_middleware(RequestId)


class RequestId:
    """Pure ASGI (no per-request task, unlike `BaseHTTPMiddleware`): the hot path pays little."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = logs.request_id.set(rid)  # every log line of this request carries it

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Here, not in Starlette's outermost handler: the log line and the 500 keep the
            # request's id.
            log.error("unexpected error (request %s)", rid, exc_info=exc)
            if started:
                raise
            body = internal_error(rid)
            await OrjsonResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)

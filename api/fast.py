"""The lean door: `POST /v1/payments/score` and its floor `POST /v1/echo`, served straight from
ASGI, without Starlette's routing and middleware stack or FastAPI's dependency solving.

A profile of the score route (docs/BENCHMARKS.md, issue 7) put about a third of the event
loop's time in those layers: each middleware's wrapped `send`, the router's path matching, the
dependency graph, the body's validation through FastAPI's field machinery, the response's
re-wrapping. This door does the same work in one function:

* the request id (the caller's `X-Request-ID` if sane, else a new one), as `api.errors.RequestId`;
* the API key (a scorer's, or admin), as `api.auth.Allow`;
* the body, read whole within `MAX_BODY_BYTES`, screened for card numbers (`api.screen`),
  parsed and validated against the same `ScoreRequest` the OpenAPI schema shows;
* the decision, and the response with a `Server-Timing` header (the phases, in ms).

It answers only the plain case. Anything else (no key or a key that may not score, a body too
large, a card number, JSON that does not parse, a field that does not validate, a content type
other than `application/json`) is handed, body and all, to the full FastAPI app before anything
happened: every refusal keeps the one shape and wording the rest of the API uses, from the one
place that renders it (tests/integration/test_fast_door.py compares the two answers). Errors
of the decision itself (Redis and the store down, no model) are rendered by
`api.errors.render_domain`, as the app's handler renders them. The score's phases, as
Server-Timing names: parse (key, body, screen, validation), features (the Redis round trip
and the features), model, shadow, policy, shap (adverse decisions only), decide (all of the
decision before the store), store (waiting for the group commit), decision (the service's
whole call), total (up to the response's first byte).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import logs
from api.auth import authenticate, bearer
from api.errors import REQUEST_ID, internal_error, render_domain
from api.routes.payments import score_body
from api.schemas import ScoreRequest
from api.screen import MAX_BODY_BYTES, screen
from engine.errors import EngineError
from features.errors import FeatureError

log = logging.getLogger("arbiter.api")

SCORE, ECHO = "/v1/payments/score", "/v1/echo"
PATHS = frozenset({SCORE, ECHO})
_ROLES = ("scorer",)
_JSON = (b"content-type", b"application/json")
# An integer of 20 digits or more: past 64 bits orjson reads it as a float, where the full app
# (the standard library) keeps it exact.
_WIDE = re.compile(rb"\d{20}")
# The record's timings as Server-Timing names (`decide` ends before the store is waited for).
_PHASES = {"features_ms": "features", "model_ms": "model", "shadow_ms": "shadow",
           "policy_ms": "policy", "contributions_ms": "shap", "total_ms": "decide",
           "store_ms": "store"}  # fmt: skip


class Fallback(Exception):
    """Not the plain case: the full app answers (nothing has happened yet)."""


async def serve(app: Any, full: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `scope` (a POST to one of `PATHS`), or hand it to `full` with its body."""
    started = time.perf_counter()
    headers = scope["headers"]
    given = content_type = None
    for name, value in headers:  # the first of a repeated header, as Starlette reads it
        if name == b"x-request-id" and given is None:
            given = value
        elif name == b"content-type" and content_type is None:
            content_type = value
    rid = (given or b"").decode("latin-1")
    if not REQUEST_ID.match(rid):
        rid = uuid.uuid4().hex
    body, more = b"", True
    token = logs.request_id.set(rid)  # the key check's log lines carry it too
    try:
        try:
            if content_type is None or content_type.split(b";")[0].strip().lower() != _JSON[1]:
                raise Fallback  # FastAPI's strict content type: without it, not JSON
            runtime = app.state.runtime
            key = bearer(headers)
            if key is None:
                raise Fallback
            principal = await authenticate(runtime.keys, key)
            if principal is None or not principal.may(_ROLES):
                raise Fallback
            body, more, gone = await _read(receive)
            if gone:
                return
            if more or len(body) > MAX_BODY_BYTES or _WIDE.search(body) or screen(body):
                raise Fallback
            parsed = orjson.loads(body)
            if not isinstance(parsed, dict):
                raise Fallback
            if scope["path"] != ECHO:
                payment = ScoreRequest.model_validate(parsed).model_dump(exclude_none=True)
        except Exception:  # not the plain case (or a check that failed): the full app's answer
            scope.setdefault("state", {})
            await full(scope, _replay(body, more, receive), send)
            return
        scope.setdefault("state", {})["request_id"] = rid
        if scope["path"] == ECHO:
            await _answer(send, rid, 200, {"echo": parsed}, None)
        else:
            await _score(runtime, payment, rid, started, send)
    finally:
        logs.request_id.reset(token)


async def _score(runtime: Any, payment: dict[str, Any], rid: str, started: float,
                 send: Send) -> None:  # fmt: skip
    parsed_at = time.perf_counter()
    try:
        decision = await runtime.service.score_payment_async(payment)
    except (EngineError, FeatureError) as exc:
        status, error, extra = render_domain(exc, rid)
        await _answer(send, rid, status, error, None, extra)
        return
    except Exception as exc:  # as `api.errors.RequestId`: logged with the id, a generic 500
        log.error("unexpected error (request %s)", rid, exc_info=exc)
        await _answer(send, rid, 500, internal_error(rid), None)
        return
    decided_at = time.perf_counter()
    content = score_body(decision)
    phases = {"parse": (parsed_at - started) * 1000}
    if not decision.replayed:  # a retry's timings are its first decision's
        phases.update((_PHASES[k], v) for k, v in decision.timings.items() if k in _PHASES)
    phases["decision"] = (decided_at - parsed_at) * 1000
    await _answer(send, rid, 200, content, phases, started=started)


async def _answer(send: Send, rid: str, status: int, content: Any,
                  phases: dict[str, float] | None, extra: dict[str, str] | None = None,
                  started: float | None = None) -> None:  # fmt: skip
    rendered = orjson.dumps(content)
    headers = [_JSON, (b"content-length", str(len(rendered)).encode()),
               (b"x-request-id", rid.encode())]  # fmt: skip
    for name, value in (extra or {}).items():
        headers.append((name.encode(), value.encode()))
    if phases is not None and started is not None:
        phases["total"] = (time.perf_counter() - started) * 1000
        timing = ", ".join(f"{name};dur={value:.3f}" for name, value in phases.items())
        headers.append((b"server-timing", timing.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": rendered})


async def _read(receive: Receive) -> tuple[bytes, bool, bool]:
    """The body as far as read, whether more of it follows (past `MAX_BODY_BYTES` this door
    stops reading: the full app answers 413), and whether the client is gone."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more and size <= MAX_BODY_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False, True
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), more, False


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` for the full app: what this door read first, then the rest of the stream."""
    pending = [body] if body or not more else []

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": more}
        return await receive()

    return replay

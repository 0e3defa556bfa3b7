"""The body screen: what no request may bring in, checked before any route sees it.

* A body larger than `max_bytes` is refused with 413 (`body_too_large`), read no further.
* A payment card number anywhere in a JSON body (a run of 13 to 19 digits, spaces or dashes
  between them allowed, passing the Luhn check, starting like a card: 2 to 6) is refused with
  422 (`card_number`), naming the field; the number itself is neither stored, logged nor echoed.
  Arbiter works with card fingerprints and never needs the number. E.164 phone numbers (`+`
  first) and JSON numbers of 13 digits starting with 1 (epoch milliseconds) are not cards.

Pure ASGI, like `api.errors.RequestId`: the body is read once, screened, and handed on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.responses import OrjsonResponse

MAX_BODY_BYTES = 8 * 1024 * 1024  # a batch of 5,000 events is about 1.5 MB
RUN = re.compile(r"(?<![\d+])\d(?:[ -]?\d){12,18}(?!\d)")
_CHANGING = (b"POST", b"PUT", b"PATCH")


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_card_number(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn(digits)


def card_field(value: Any, path: str = "") -> str | None:
    """The path of the first value that holds a card number (`events[3].note`), or None."""
    for where, item in _leaves(value, path):
        if isinstance(item, str):
            if any(is_card_number(m.group()) for m in RUN.finditer(item)):
                return where or "body"
        elif isinstance(item, int) and not isinstance(item, bool) and is_card_number(str(item)):
            return where or "body"
    return None


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                yield (where, key)  # a key can hold a number too
                stack.append((f"{where}.{key}" if where else str(key), inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in enumerate(item))
        else:
            yield where, item


class BodyScreen:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].encode() not in _CHANGING:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(
                scope,
                receive,
                send,
                413,
                "body_too_large",
                f"the body is larger than {self.max_bytes:,} bytes",
                None,
            )
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(
                    scope,
                    receive,
                    send,
                    413,
                    "body_too_large",
                    f"the body is larger than {self.max_bytes:,} bytes",
                    None,
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body[:1] in (b"{", b"[") or body.lstrip()[:1] in (b"{", b"["):
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None  # the route's validation names the problem
            field = card_field(parsed) if parsed is not None else None
            if field is not None:
                message_text = (
                    f"field '{field}' holds what looks like a payment card number: never send "
                    "card numbers to Arbiter (send the card's fingerprint); nothing was stored"
                )
                await self._refuse(scope, receive, send, 422, "card_number", message_text, field)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                      message: str, field: str | None) -> None:  # fmt: skip
        error: dict[str, Any] = {
            "code": code,
            "message": message,
            "request_id": scope.get("state", {}).get("request_id"),
        }
        if field is not None:
            error["field"] = field
        await OrjsonResponse({"error": error}, status_code=status)(scope, receive, send)

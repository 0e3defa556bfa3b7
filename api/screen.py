"""The body screen: what no request may bring in, checked before any route sees it.

* A body larger than its route allows is refused with 413 (`body_too_large`), read no further:
  8 MiB for the event pipeline's batches, 256 KiB anywhere else (a payment is a few hundred
  bytes).
* A body that is not UTF-8 is refused with 422 (the JSON routes read UTF-8 only; another
  encoding would hide digits from the screen).
* A payment card number anywhere in a body is refused with 422 (`card_number`), naming the
  field; the number itself is neither stored, logged nor echoed. A card number: 13 to 19
  digits, alone or in the printed groups (4-4-4-4[-3], Amex 4-6-5, spaces, dashes or dots),
  not inside a longer word or number, starting 2 to 6, passing the Luhn check. Digits of any
  script count (full-width `４１１１`, Arabic-Indic `٤١١١`): a number typed on another
  keyboard is still the card's. Not cards: E.164
  phone numbers (`+` first, or the `dest_number` and `dest_prefix` fields, up to 15 digits),
  epoch milliseconds (13 digits within 2000..2100), digits inside ids (UUIDs, hex digests).

Before any of it, a changing request (POST, PUT, PATCH) to a door that needs a key gets 401 if
it brings none that is valid (`api.auth`): nobody unknown makes the server read a body. The
common case costs one regular-expression pass over the raw bytes; only a body with a
candidate is parsed (to name the field, or to find digits written as JSON escapes). Pure ASGI,
like `api.errors.RequestId`: the body is read once, screened, and handed on.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import OPEN, authenticate, bearer
from api.responses import OrjsonResponse

MAX_BODY_BYTES = 256 * 1024
MAX_BATCH_BYTES = 8 * 1024 * 1024  # POST /v1/events: 5,000 events are about 1.5 MB
_BATCH_PATHS = ("/v1/events",)
# A run: 13 to 19 digits, or the printed groups, not after a letter, digit, `+`, `_`, `.` or `-`
# nor before a letter, digit or `_`. Written to start with its first digit, then the check of
# the character before it (a look-behind over that digit): a pattern that starts with `\d` is
# only tried where a digit stands, one that starts with the look-behind at every character.
# On text, `\d` is a decimal digit of any script (on the raw bytes, ASCII's alone).
_REST = r"\d{12,18}|\d{3}(?:[ .-]\d{4}){3}(?:[ .-]?\d{1,3})?|\d{3}[ .-]\d{6}[ .-]\d{5}"
RUN = re.compile(rf"\d(?<![\dA-Za-z+_.-]\d)(?:{_REST})(?![\dA-Za-z_])")
_RUN_BYTES = re.compile(RUN.pattern.encode())
# A minus sign and 13 digits: a negative integer's if it stands where a JSON value may (see
# `_negative_integer`).
_DASH_DIGITS = re.compile(rb"-\d{13}")
# A decimal digit of another script than ASCII's: a body that holds one is parsed.
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")
_PHONE_FIELDS = frozenset({"dest_number", "dest_prefix"})
_TS_RANGE = (946_684_800_000, 4_102_444_800_000)  # 2000-01-01 .. 2100-01-01, epoch ms
_CHANGING = ("POST", "PUT", "PATCH")


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def ascii_digits(text: str) -> str:
    """`text` with the decimal digits of every script written as ASCII ("４１" -> "41")."""
    if text.isascii():
        return text
    return _OTHER_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group())), text)


def is_card_number(text: str) -> bool:
    digits = ascii_digits(text).replace(" ", "").replace("-", "").replace(".", "")
    if not (13 <= len(digits) <= 19 and digits.isdigit() and digits[0] in "23456"):
        return False
    if len(digits) == 13 and _TS_RANGE[0] <= int(digits) < _TS_RANGE[1]:
        return False  # epoch milliseconds
    return luhn(digits)


def holds_card(text: str) -> bool:
    return any(is_card_number(m.group()) for m in RUN.finditer(text))


def card_field(value: Any, path: str = "") -> str | None:
    """The path of the first value that holds a card number (`events[3].note`), or None."""
    for where, item in _leaves(value, path):
        name = where.rsplit(".", 1)[-1]
        if isinstance(item, str):
            if name in _PHONE_FIELDS and len(item.lstrip("+")) <= 15:
                continue
            if holds_card(item):
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


def _negative_integer(body: bytes) -> bool:
    """Whether `body` may hold an integer below zero with 13 digits or more: card_field reads
    its digits, which are no run of the body's (the minus sign before them bars it). A number
    stands where a JSON value may: first, or after a colon, a comma or a bracket, with JSON's
    whitespace between. A dash inside a string, as in "inv-20261207143000", is not one (such a
    body would be parsed for nothing)."""
    for match in _DASH_DIGITS.finditer(body):
        i = match.start() - 1
        while i >= 0 and body[i] in b" \t\n\r":
            i -= 1
        if i < 0 or body[i] in b":,[":
            return True
    return False


def screen(body: bytes) -> tuple[int, str, str, str | None] | None:
    """Why `body` may not come in (status, code, message, field), or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return 422, "invalid_request", "the body is not UTF-8", "body"
    runs = [m.group() for m in _RUN_BYTES.finditer(body)]
    candidate = bool(runs)
    # Digits may hide behind a JSON escape (\u0034), and one before a run (\n4111...) puts a
    # letter in front of it in the bytes: any escape, and the body is parsed. So is a negative
    # integer's (its digits are no run of the body's: the minus sign before them bars it).
    escaped = b"\\" in body
    negative = _negative_integer(body)
    # Digits of another script (full-width, Arabic-Indic) are no run of the bytes'.
    other = not body.isascii() and _OTHER_DIGIT.search(text) is not None
    if not candidate and not escaped and not negative and not other:
        return None
    if (
        not escaped
        and not negative
        and body.isascii()  # else a leaf's runs may hold digits the bytes' runs do not see
        and not any(is_card_number(run.decode("ascii")) for run in runs)
    ):
        # Every candidate is something else (a payment's `ts` is one: 13 digits, epoch ms):
        # no leaf can hold a card either, since a leaf's runs are the body's.
        return None
    try:
        parsed = json.loads(text)  # what the routes will read (NaN, duplicate keys included)
    except ValueError:
        if (candidate or other) and any(is_card_number(m.group()) for m in RUN.finditer(text)):
            return 422, "card_number", _CARD.format(field="body"), "body"
        return None  # not JSON: the route's validation names the problem
    field = card_field(parsed)
    if field is None:
        return None
    return 422, "card_number", _CARD.format(field=field), field


_CARD = (
    "field '{field}' holds what looks like a payment card number: never send card numbers to "
    "Arbiter (send the card's fingerprint); nothing was stored"
)


class BodyScreen:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _CHANGING:
            await self.app(scope, receive, send)
            return
        if scope["path"] not in OPEN:
            # Nobody without a valid key makes the server read or parse a body (401 early,
            # as the route's own check would answer).
            token = bearer(scope["headers"])
            keys = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
            if token is None or (keys is not None and await authenticate(keys.keys, token) is None):
                await _refuse(scope, receive, send, 401, "unauthenticated",
                              "an API key is needed: send it as 'Authorization: Bearer <key>'",
                              None, {"www-authenticate": 'Bearer realm="arbiter"'})  # fmt: skip
                return
        limit = MAX_BATCH_BYTES if scope["path"] in _BATCH_PATHS else MAX_BODY_BYTES
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, 413, "body_too_large",
                          f"the body is larger than {limit:,} bytes", None)  # fmt: skip
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(scope, receive, send, 413, "body_too_large",
                              f"the body is larger than {limit:,} bytes", None)  # fmt: skip
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refused = screen(body) if body else None
        if refused is not None:
            await _refuse(scope, receive, send, *refused)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                  message: str, field: str | None,
                  headers: dict[str, str] | None = None) -> None:  # fmt: skip
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "request_id": scope.get("state", {}).get("request_id"),
    }
    if field is not None:
        error["field"] = field
    response = OrjsonResponse({"error": error}, status_code=status, headers=headers)
    await response(scope, receive, send)

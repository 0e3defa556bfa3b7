"""The JSON log lines: one object per line, the request's id, no card numbers."""

from __future__ import annotations

import json
import logging

from api.logs import REMOVED, JsonFormatter, request_id


def line(message: str, *args: object, exc: BaseException | None = None) -> dict:
    record = logging.LogRecord("arbiter.test", logging.ERROR, __file__, 1, message, args,
                               (type(exc), exc, exc.__traceback__) if exc else None)  # fmt: skip
    return json.loads(JsonFormatter().format(record))


def test_a_line_is_json_with_the_request_id_of_the_request_being_served():
    token = request_id.set("req-42")
    try:
        entry = line("decision %s stored", "d-1")
    finally:
        request_id.reset(token)
    assert entry["message"] == "decision d-1 stored" and entry["request_id"] == "req-42"
    assert (entry["level"], entry["logger"]) == ("error", "arbiter.test")
    assert entry["ts"].endswith("Z")
    assert line("outside a request")["request_id"] is None


def test_card_numbers_are_removed_from_messages_and_tracebacks():
    try:
        raise ValueError("bad card 4111 1111 1111 1111 in path")
    except ValueError as exc:
        entry = line("GET /v1/decisions/%s failed", "4111111111111111", exc=exc)
    assert entry["message"] == f"GET /v1/decisions/{REMOVED} failed"
    assert "4111" not in entry["exc"] and REMOVED in entry["exc"]
    assert line("ts %s, phone %s", 1764412345678, "+4915123456789")["message"] == (
        "ts 1764412345678, phone +4915123456789"
    )


def test_a_card_in_full_width_digits_or_dotted_groups_is_removed_too():
    full_width = "".join(chr(0xFF10 + int(d)) for d in "4111111111111111")
    entry = line("card %s and %s", full_width, "4111.1111.1111.1111")
    assert entry["message"] == f"card {REMOVED} and {REMOVED}"

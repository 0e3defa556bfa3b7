"""Structured logs: one JSON object per line, with the request's id, and no card numbers.

`JsonFormatter` writes `{"ts", "level", "logger", "message", "request_id"[, "exc"]}`; the
request id is the one `api.errors.RequestId` gives every request (the caller's
`X-Request-ID`, or a new one), carried in a context variable so any log line written while
serving a request has it. A digit run that looks like a payment card number is replaced before
it is written (`api.screen.is_card_number`): bodies holding one are refused before any route
runs, and this is the second line of defence (a path, an exception message). API keys never
reach the logs (the app logs no headers; `arbiter serve` turns uvicorn's access log off).
`arbiter serve` installs it (`LOG_CONFIG`, uvicorn's `log_config`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextvars import ContextVar
from typing import Any

from api.screen import RUN, is_card_number

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
REMOVED = "[card number removed]"


def redact(text: str) -> str:
    return RUN.sub(lambda m: REMOVED if is_card_number(m.group()) else m.group(), text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": request_id.get(),
        }  # fmt: skip
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}

"""The JSON response of every route: orjson, which serializes the records' floats and nested
dicts several times faster than the standard library. What orjson refuses (an integer past 64
bits, a lone surrogate in a string: both can arrive in a body the echo route returns) goes
through the standard library instead, escaped to ASCII."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")

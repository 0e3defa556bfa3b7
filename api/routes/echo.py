"""`POST /v1/echo`: the body back, untouched by the engine. The benchmark's floor: what the
framework, the server and the client cost before any decision is made (bench/bench_scoring.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ScorerKey

router = APIRouter(prefix="/v1", tags=["health"])


@router.post("/echo")
async def echo(_: ScorerKey, body: dict[str, Any]) -> dict[str, Any]:
    # An async route on the event loop, like the score route: the same framework path.
    return {"echo": body}

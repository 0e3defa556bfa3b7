"""The lean door (api/fast.py) answers like the full app: every request it does not take is the
full app's to answer, byte for byte the same; the ones it takes carry the same body and a
Server-Timing header. In process against the app, real Redis and SQLite; and once through a
real uvicorn with a chunked body."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from engine.keys import create_key
from engine.store import now_ms
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.integration.test_authorization import settings_for
from tests.integration.test_hostile_input import CARD, payment
from tests.server import Server, running

pytestmark = pytest.mark.integration
PHASES = {"parse", "features", "model", "policy", "decide", "store", "decision", "total"}


def _comparable(answer: httpx.Response) -> tuple[int, object, dict[str, str]]:
    try:
        body: object = answer.json()
    except ValueError:
        body = answer.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)  # each request has its own
    kept = {k: answer.headers[k] for k in ("www-authenticate", "retry-after", "content-type")
            if k in answer.headers}  # fmt: skip
    return answer.status_code, body, kept


def timings(answer: httpx.Response) -> dict[str, float]:
    header = answer.headers["server-timing"]
    return {n: float(d.removeprefix("dur=")) for n, _, d in
            (part.strip().partition(";") for part in header.split(","))}  # fmt: skip


def test_every_request_the_door_declines_is_answered_as_the_full_app_answers(models, tmp_path):
    settings = settings_for(tmp_path).model_copy(update={
        "mlflow_tracking_uri": models.tracking_uri, "model_name": NAME,
        "account_model_name": ACCOUNT_NAME,
    })  # fmt: skip
    app = create_app(settings)

    async def full(scope, receive, send):  # the same app, the door bypassed
        await FastAPI.__call__(app, scope, receive, send)

    async def body(_: httpx.AsyncClient) -> None:  # (its admin key is not wanted here)
        store = app.state.runtime.store
        keys = {}
        for role in ("scorer", "ingest"):
            _, keys[role] = create_key(store.database, name=f"door-{role}", roles=[role],
                                       actor="tests", at=now_ms())  # fmt: skip
        scorer = {"authorization": f"Bearer {keys['scorer']}", "content-type": "application/json"}
        good = json.dumps(payment(payment_id="pay-door-1")).encode()
        cases = [
            ("no key", {}, good),
            ("unknown key", {"authorization": "Bearer nope"}, good),
            ("x-api-key unknown", {"x-api-key": "nope"}, good),
            ("a key without the role", {"authorization": f"Bearer {keys['ingest']}"}, good),
            ("a card number", scorer, json.dumps(payment(card_fp=CARD)).encode()),
            ("not JSON", scorer, b"{payment"),
            ("a JSON array", scorer, b"[1, 2]"),
            ("empty", scorer, b""),
            ("NaN", scorer, good.replace(b"25.0", b"NaN")),
            ("a field missing", scorer, json.dumps({"payment_id": "p"}).encode()),
            ("an unknown field", scorer, json.dumps(payment(coupon="X")).encode()),
            ("a bad IP", scorer, json.dumps(payment(ip="999.1.1.1")).encode()),
            ("too large", scorer, b'{"a": "' + b"x" * (300 * 1024) + b'"}'),
            ("not UTF-8", scorer, b'{"payment_id": "\xff"}'),
        ]
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as door,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=full), base_url="http://a"
            ) as whole,
        ):
            for path in ("/v1/payments/score", "/v1/echo"):
                for name, headers, content in cases:
                    for kind in ("application/json", "Application/JSON; charset=utf-8",
                                 "text/plain", None):  # fmt: skip
                        sent = {**headers, **({"content-type": kind} if kind else {})}
                        by_door = await door.post(path, content=content, headers=sent)
                        by_app = await whole.post(path, content=content, headers=sent)
                        assert path == "/v1/echo" or by_door.status_code >= 400, name
                        assert _comparable(by_door) == _comparable(by_app), (path, name, kind)
            # Headers given twice or both ways, and bodies the checks themselves fail on.
            key, json_type = keys["scorer"], ("content-type", "application/json")
            bearer = ("authorization", f"Bearer {key}")
            deep = b'{"a": "\\u0041", "b": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            raw_cases = [
                ("an X-API-Key, then a Basic authorization",
                 [("x-api-key", key), ("authorization", "Basic eDp5"), json_type], good),
                ("an X-API-Key, then another key's authorization",
                 [("x-api-key", key), ("authorization", f"Bearer {keys['ingest']}"), json_type],
                 good),
                ("two content types", [bearer, ("content-type", "text/plain"), json_type], good),
                ("nested too deep to parse", [bearer, json_type], deep),
                ("an integer past 64 bits", [bearer, json_type], b'{"n": 123456789012345678901}'),
            ]  # fmt: skip
            for path in ("/v1/payments/score", "/v1/echo"):
                for name, raw, content in raw_cases:
                    by_door = await door.post(path, content=content, headers=raw)
                    by_app = await whole.post(path, content=content, headers=raw)
                    assert _comparable(by_door) == _comparable(by_app), (path, name)
                ids = [bearer, json_type, ("x-request-id", "first"), ("x-request-id", "second")]
                other = json.dumps(payment(payment_id=f"pay-door-ids{path}")).encode()
                by_door = await door.post(path, content=other, headers=ids)
                assert by_door.status_code == 200 and by_door.headers["x-request-id"] == "first"
            # What the door takes: the same body as the full app's (the retry gets it back).
            decided = await door.post("/v1/payments/score", content=good, headers=scorer)
            assert decided.status_code == 200, decided.text
            assert set(timings(decided)) >= PHASES
            assert all(v >= 0 for v in timings(decided).values())
            assert timings(decided)["total"] >= timings(decided)["decision"]
            again = await whole.post("/v1/payments/score", content=good, headers=scorer)
            assert again.json() == decided.json()
            bare = {"authorization": scorer["authorization"]}  # no content type: not JSON
            refused = await door.post("/v1/payments/score", content=good, headers=bare)
            assert refused.status_code == 422
            assert decided.headers["x-request-id"] and decided.headers["content-type"] == (
                "application/json"
            )
            given = {**scorer, "x-request-id": "billing-42"}
            echoed = await door.post("/v1/echo", content=good, headers=given)
            assert echoed.headers["x-request-id"] == "billing-42"
            assert echoed.json() == (await whole.post("/v1/echo", content=good,
                                                      headers=scorer)).json()  # fmt: skip
            assert echoed.json() == {"echo": json.loads(good)}
            # A bug under the score route: both answer the same generic 500, with the id.
            service = app.state.runtime.service

            async def broken(_: object) -> None:
                raise RuntimeError("a bug, with details the client must not see")

            service.score_payment_async = broken
            try:
                content = json.dumps(payment(payment_id="pay-door-500")).encode()
                generic = {"code": "internal_error", "message": "internal error"}
                for client in (door, whole):
                    sent = {**scorer, "x-request-id": "bug-1"}
                    failed = await client.post("/v1/payments/score", content=content, headers=sent)
                    assert failed.status_code == 500
                    assert failed.json() == {"error": {**generic, "request_id": "bug-1"}}
                    assert failed.headers["x-request-id"] == "bug-1"
            finally:
                del service.score_payment_async  # the class's own again

    running(app, body)


def test_a_chunked_payment_through_a_real_server(models, tmp_path, redis_client):
    server = Server(tmp_path, tracking_uri=models.tracking_uri, model_name=NAME,
                    redis_url=TEST_REDIS_URL).wait("/readyz")  # fmt: skip
    try:
        content = json.dumps(payment(payment_id="pay-chunked")).encode()

        def chunks():
            for i in range(0, len(content), 7):
                yield content[i : i + 7]

        with server.client("scorer") as client:
            answer = client.post("/v1/payments/score", content=chunks(),
                                 headers={"content-type": "application/json"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert "server-timing" in answer.headers
            other = client.get("/v1/payments/score")  # the door takes POST only
            assert other.status_code == 405
        with server.client("support") as reader:
            record = reader.get(f"/v1/decisions/{answer.json()['decision_id']}")
            assert record.status_code == 200 and record.json()["payment_id"] == "pay-chunked"
    finally:
        server.stop()

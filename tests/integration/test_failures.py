"""Failing dependencies, with the real component made to fail (docs/security.md): a Redis server
of the test's own (Debian's `redis-server`, on a free port) that stalls (`DEBUG SLEEP`), then
is killed and started again, under a real uvicorn process. Billing keeps getting answers:
degraded while Redis is slow or gone, normal again once it is back, without a restart; the
event pipeline is refused with a retryable 503 meanwhile."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.integration.test_scoring_e2e import payment
from tests.own_servers import OwnRedis
from tests.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


@pytest.fixture(scope="module")
def service(models, tmp_path_factory, own_redis) -> Iterator[Server]:
    live = Server(
        tmp_path_factory.mktemp("failures"), tracking_uri=models.tracking_uri, model_name=NAME,
        account_model_name=ACCOUNT_NAME, redis_url=own_redis.url, redis_budget_ms="50",
    ).wait("/healthz")  # fmt: skip
    yield live
    live.stop()


def score(client, **changes) -> dict:
    answer = client.post("/v1/payments/score", json=payment(**changes))
    assert answer.status_code == 200, answer.text
    body: dict = answer.json()
    return body


def test_a_slow_then_dead_redis_degrades_payments_and_recovers_by_itself(service, own_redis):
    with service.client() as api:
        account = f"acct-f-{uuid.uuid4().hex[:6]}"
        assert score(api, account_id=account)["degraded"] is False

        sleeper = own_redis.stall(1.5)  # slower than the 50 ms budget
        try:
            slow = score(api, account_id=account)
            events = api.post("/v1/events", json={"events": [{
                "event_id": f"e-{uuid.uuid4().hex[:8]}", "type": "login", "ts": int(time.time()
                * 1000), "account_id": account, "ip": "73.12.40.9", "success": True}]})  # fmt: skip
        finally:
            sleeper.join()
        assert slow["degraded"] is True and slow["action"] in ("review", "decline")
        assert [r["code"] for r in slow["reasons"]][-1] == "FEATURES_UNAVAILABLE"
        record = api.get(f"/v1/decisions/{slow['decision_id']}").json()
        assert record["degraded"] is True  # stored as such
        assert events.status_code == 503 and events.headers["retry-after"]

        own_redis.kill()
        gone = score(api, account_id=account)
        assert gone["degraded"] is True
        assert api.get("/readyz").status_code == 503

        own_redis.start()  # empty: what it held is lost (Redis keeps nothing on disk here)
        deadline = time.monotonic() + 20
        while (back := score(api, account_id=account))["degraded"]:
            assert time.monotonic() < deadline, "the service did not recover from Redis's return"
            time.sleep(0.2)
        assert back["score"] is not None
        assert api.get("/readyz").status_code == 200

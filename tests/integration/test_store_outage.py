"""The decision store goes down under load (docs/security.md): a real uvicorn process on a
PostgreSQL cluster of the test's own, which the test stops (a clean shutdown: every connection
cut) and starts again while payments keep coming. Billing gets an answer for every payment
(no 5xx); decisions made meanwhile are fsync'd to the local journal and replayed into the store
once it is back; in the end every decision answered is in the store exactly once, the chain
verifies, and the adverse ones have their customer notifications."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
import sqlalchemy as sa

from engine.store import DecisionStore
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.integration.test_scoring_e2e import payment
from tests.own_servers import OwnPostgres, OwnRedis
from tests.server import Server

pytestmark = pytest.mark.integration

DENIED_IP = "199.10.3.4"  # config/policy.yaml deny-lists 199.10.0.0/16


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def service(models, tmp_path_factory, own_postgres, redis_server) -> Iterator[Server]:
    live = Server(
        tmp_path_factory.mktemp("outage"), tracking_uri=models.tracking_uri, model_name=NAME,
        account_model_name=ACCOUNT_NAME, redis_url=TEST_REDIS_URL,
        database_url=own_postgres.url,
    ).wait("/readyz")  # fmt: skip
    yield live
    live.stop()


class Load:
    """Payments sent from a few threads until stopped; every answer kept."""

    def __init__(self, server: Server, threads: int = 4) -> None:
        self.server, self.threads = server, threads
        self.answers: list[tuple[dict, int, dict]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads)

    def start(self) -> Load:
        self._futures = [self._pool.submit(self._run, n) for n in range(self.threads)]
        return self

    def _run(self, n: int) -> None:
        with self.server.client("scorer") as api:
            i = 0
            while not self._stop.is_set():
                i += 1
                body = payment(ip=DENIED_IP) if i % 10 == n % 10 else payment()
                try:
                    answer = api.post("/v1/payments/score", json=body, timeout=10)
                    result = (body, answer.status_code, answer.json())
                except httpx.HTTPError as exc:
                    result = (body, 0, {"error": str(exc)})
                with self._lock:
                    self.answers.append(result)
                time.sleep(0.01)

    def stop(self) -> list[tuple[dict, int, dict]]:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()
        return self.answers


def readiness(api: httpx.Client) -> tuple[int, dict]:
    answer = api.get("/readyz")
    return answer.status_code, answer.json()["checks"]["store"]


def test_payments_are_answered_and_none_lost_or_doubled_while_the_store_is_down(
    service, own_postgres, redis_client
):
    with service.client() as api:
        load = Load(service).start()
        time.sleep(2)
        own_postgres.stop()
        try:
            time.sleep(2)
            status, store = readiness(api)
            during = len(load.answers)
            time.sleep(3)
            # Still ready: decisions go to the journal; the store's error is reported.
            assert status == 200, store
            assert store["ok"] is False and "unavailable" in store["error"]
            assert store["journal_pending"] > 0
            journaled = [a for a in load.answers[during:] if a[1] == 200]
            assert journaled, "no payment was answered while the store was down"
            # A retry of a payment decided while the store is down gets the same decision.
            body, _, first = journaled[-1]
            retried = api.post("/v1/payments/score", json=body)
            assert retried.status_code == 200 and retried.json() == first
        finally:
            own_postgres.start()
        time.sleep(2)
        answers = load.stop()
        deadline = time.monotonic() + 30
        while (state := readiness(api))[1].get("journal_pending") != 0 or not state[1]["ok"]:
            assert time.monotonic() < deadline, f"the journal was not replayed: {state}"
            time.sleep(0.2)
        metrics = api.get("/metrics").text

    failed = [(status, answer) for _, status, answer in answers if status != 200]
    assert failed == [], failed[:5]
    answered = {answer["decision_id"]: body["payment_id"] for body, _, answer in answers}
    assert len(answered) == len(answers) > 100
    engine = sa.create_engine(own_postgres.url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT decision_id, payment_id FROM decisions")).all()
        notified = set(conn.scalars(sa.text("SELECT decision_id FROM outbox")))
    engine.dispose()
    stored = {decision_id: payment_id for decision_id, payment_id in rows}
    assert len(rows) == len(stored), "a decision is stored twice"
    assert stored == answered  # every answer stored, nothing else
    adverse = {a["decision_id"] for _, _, a in answers if a["action"] != "allow"}
    assert adverse and adverse <= notified
    store = DecisionStore(own_postgres.url)
    try:
        assert store.verify_chain() is None
    finally:
        store.close()
    replayed = [line for line in metrics.splitlines() if 'state="replayed"' in line]
    assert replayed and float(replayed[0].split()[-1]) > 0


def test_a_journal_left_by_a_killed_server_is_replayed_by_the_next_one(
    models, tmp_path_factory, own_postgres, redis_client
):
    folder = tmp_path_factory.mktemp("killed")
    common = {"tracking_uri": models.tracking_uri, "model_name": NAME,
              "account_model_name": ACCOUNT_NAME, "redis_url": TEST_REDIS_URL,
              "database_url": own_postgres.url}  # fmt: skip
    first = Server(folder, **common).wait("/readyz")
    own_postgres.stop()
    try:
        with first.client("scorer") as api:
            answers = [api.post("/v1/payments/score", json=payment()) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        first.process.kill()  # no shutdown: the journal stays behind, unreplayed
        first.process.wait(10)
        [left] = list((folder / "var" / "journal").glob("*.jsonl"))
        assert len(left.read_bytes().splitlines()) == 5
    finally:
        own_postgres.start()
        if first.process.poll() is None:  # an assertion failed before the kill
            first.stop()
    second = Server(folder, **common).wait("/readyz")
    try:
        store = DecisionStore(own_postgres.url)
        deadline = time.monotonic() + 30
        ids = [a.json()["decision_id"] for a in answers]
        try:
            while any(store.get_by_payment(p) is None for p in _payments(answers)):
                assert time.monotonic() < deadline, "the orphan journal was not replayed"
                time.sleep(0.2)
            assert [store.get_by_payment(p).decision_id for p in _payments(answers)] == ids
            assert store.verify_chain() is None
        finally:
            store.close()
        assert not left.exists()
    finally:
        second.stop()


def _payments(answers: list[httpx.Response]) -> list[str]:
    return [orjson.loads(a.request.content)["payment_id"] for a in answers]


def test_a_short_chaos_run_loses_and_doubles_nothing(models, tmp_path_factory, own_postgres):
    """bench/bench_chaos.py in small: Redis killed and restarted, then the store stopped and
    started, under steady load; every payment answered 200, none lost, none stored twice."""
    redis_server = OwnRedis(tmp_path_factory.mktemp("chaos-redis"))
    redis_server.start()
    live = Server(
        tmp_path_factory.mktemp("chaos"), tracking_uri=models.tracking_uri, model_name=NAME,
        account_model_name=ACCOUNT_NAME, redis_url=redis_server.url,
        database_url=own_postgres.url, redis_budget_ms="50",
    ).wait("/readyz")  # fmt: skip
    try:
        load = Load(live).start()
        time.sleep(2)
        redis_server.kill()
        time.sleep(2)
        redis_server.start()  # empty
        time.sleep(2)
        own_postgres.stop()
        time.sleep(3)
        own_postgres.start()
        time.sleep(2)
        answers = load.stop()
        with live.client() as api:
            deadline = time.monotonic() + 30
            while (state := readiness(api))[1].get("journal_pending") != 0 or not state[1]["ok"]:
                assert time.monotonic() < deadline, f"the journal was not replayed: {state}"
                time.sleep(0.2)
    finally:
        live.stop()
        if redis_server.process is not None and redis_server.process.poll() is None:
            redis_server.kill()
    assert [a for _, status, a in answers if status != 200] == []
    degraded = [a for _, _, a in answers if a["degraded"]]
    assert degraded, "Redis was down: some payments must have been decided degraded"
    answered = {a["decision_id"] for _, _, a in answers}
    payments = [body["payment_id"] for body, _, _ in answers]
    engine = sa.create_engine(own_postgres.url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT decision_id, payment_id FROM decisions WHERE payment_id IN :ids")
            .bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": payments},
        ).all()  # fmt: skip
    engine.dispose()
    assert len(rows) == len({r.payment_id for r in rows}) == len(payments)  # none twice
    assert {r.decision_id for r in rows} == answered  # none lost

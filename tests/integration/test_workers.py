"""Several uvicorn workers behind one port, on one PostgreSQL decision store (a schema of its
own) and one Redis: each worker follows the policy file and the registry on its own, and all of
them append to one hash chain.

Client threads score payments all along, opening a new connection every few requests so that
every worker gets some. A connection stays with the worker that accepted it, so the `/readyz`
that opens it (its `pid`) names the worker that answered every payment sent on it, and the one
that closes it must name the same. What is shown: a policy edit and a promotion reach every
worker, none fails a request, none answers the old version once it answered the new one; a bad
policy file is refused by every worker while the last good one keeps deciding; and every
decision answered is stored once, in one intact chain whose records the workers interleave.

The tests of this module share one server and run in order (a model swap after the policy
edits; the store checked last, over everything decided before).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient

from engine.policy import parse_policy_text
from engine.store import DecisionStore
from tests.conftest import ROOT, TEST_REDIS_URL, drop_postgres_schema, new_postgres_schema
from tests.integration.test_model_swap import NAME, two_versions
from tests.server import Server

pytestmark = pytest.mark.integration

WORKERS = 2
THREADS = 3
PER_CONNECTION = 4  # payments sent on a connection before the next one is opened
RAW = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
EDITED = {**RAW, "thresholds": {**RAW["thresholds"], "review": 0.30}}
UNORDERED = {**RAW, "thresholds": {**RAW["thresholds"], "review": 0.99}}  # above decline
WAIT_S = 60.0  # for what the workers' pollers (every second or less) must have done by then


def version_of(raw: dict[str, Any]) -> str:
    return parse_policy_text(yaml.safe_dump(raw)).version


def write_policy(path: Path, raw: dict[str, Any]) -> None:
    """Replace the file in one rename, as a deploy would: no worker reads half an edit."""
    draft = path.with_suffix(".draft")
    draft.write_text(yaml.safe_dump(raw))
    os.replace(draft, path)


# --- the traffic ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A payment answered 200: by which worker, between which instants (monotonic clock, for
    their order only), with which versions."""

    pid: int
    sent: float
    received: float
    decision_id: str
    policy_version: str
    model_version: str


@dataclass(frozen=True)
class Probe:
    """A worker's `/readyz` checks, asked and answered between `sent` and `received`."""

    pid: int
    sent: float
    received: float
    checks: dict[str, Any]


class Traffic:
    """Client threads scoring payments until stopped; what every worker answered is kept."""

    def __init__(self, server: Server, seed: int) -> None:
        self.server = server
        self.seed = seed
        self.answers: list[Answer] = []
        self.probes: list[Probe] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(THREADS)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def since(self, instant: float) -> list[Answer]:
        return [a for a in self.answers if a.sent > instant]

    def each_answered(self, pids: set[int], n: int, since: float = 0.0) -> bool:
        """Whether every worker of `pids` answered `n` payments sent after `since`."""
        answered = [a.pid for a in self.since(since)]
        return all(answered.count(pid) >= n for pid in pids)

    def probes_since(self, instant: float) -> list[Probe]:
        return [p for p in self.probes if p.sent > instant]

    def _run(self, thread: int) -> None:
        rng = random.Random(self.seed * 100 + thread)
        sent = 0
        while not self._stop.is_set():
            try:
                with self.server.client("scorer") as client:
                    pid = self._probe(client)
                    for _ in range(PER_CONNECTION):
                        sent += 1
                        self._score(client, pid, payment(rng, f"{self.seed}-{thread}-{sent}"))
                    if self._probe(client) != pid:
                        self.failures.append(f"a connection opened on worker {pid} moved")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def _probe(self, client: httpx.Client) -> int:
        sent = time.monotonic()
        body = client.get("/readyz").json()
        self.probes.append(Probe(body["pid"], sent, time.monotonic(), body["checks"]))
        return int(body["pid"])

    def _score(self, client: httpx.Client, pid: int, body: dict[str, Any]) -> None:
        sent = time.monotonic()
        response = client.post("/v1/payments/score", json=body)
        received = time.monotonic()
        if response.status_code != 200:
            self.failures.append(f"{response.status_code}: {response.text}")
            return
        answer = response.json()
        self.answers.append(Answer(pid, sent, received, answer["decision_id"],
                                   answer["policy_version"], answer["model_version"]))  # fmt: skip


def payment(rng: random.Random, tag: str) -> dict[str, Any]:
    account = rng.randrange(40)
    return {
        "payment_id": f"pay-{tag}", "account_id": f"acct-{account}",
        "amount": round(rng.uniform(5, 200), 2), "currency": "USD",
        "card_fp": f"card-{account}-{rng.randrange(3)}", "bin_country": "US",
        "billing_country": rng.choice(["US", "US", "US", "GB"]), "ip": "73.12.40.9",
    }  # fmt: skip


def wait_for(condition: Callable[[], bool], what: str, traffic: Traffic) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if traffic.failures:
            pytest.fail(f"a request failed while waiting for {what}: {traffic.failures[:3]}")
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"not within {WAIT_S:g} s: {what}")


Seen = Answer | Probe
Says = Callable[[Any], object]  # what an answer or a probe says (a version, a refusal)


def first_new(seen: list[Answer] | list[Probe], says: Says, new: object) -> dict[int, float]:
    """Per worker, when its first answer saying `new` came back."""
    first: dict[int, float] = {}
    for item in sorted(seen, key=lambda a: a.received):
        if says(item) == new:
            first.setdefault(item.pid, item.received)
    return first


def went_back(seen: list[Answer] | list[Probe], says: Says, new: object) -> list[Seen]:
    """Answers saying something else than `new` that a worker gave to a request sent after it
    had already answered one with `new` (requests in flight together may come back in any
    order; one sent after another came back was handled after it)."""
    first = first_new(seen, says, new)
    return [s for s in seen if says(s) != new and s.pid in first and s.sent > first[s.pid]]


def policy_of(answer: Answer) -> str:
    return answer.policy_version


def model_of(answer: Answer) -> str:
    return answer.model_version


# --- one server, several workers ----------------------------------------------------------------


@dataclass
class Workers:
    server: Server
    policy: Path
    tracking_uri: str
    database_url: str
    pids: set[int]
    answered: list[Answer]  # every payment answered in this module, by every test
    seed: int = 0

    def traffic(self) -> Traffic:
        self.seed += 1
        return Traffic(self.server, self.seed)

    def keep(self, traffic: Traffic) -> None:
        assert traffic.failures == []
        self.answered.extend(traffic.answers)


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_admin: sa.Engine,
    redis_server: redis.Redis,
) -> Iterator[Workers]:
    folder = tmp_path_factory.mktemp("workers")
    uri = two_versions(folder)  # version 1 the champion, a version 2 to promote
    policy = folder / "policy.yaml"
    write_policy(policy, RAW)
    schema, url = new_postgres_schema(postgres_admin)
    redis_server.flushdb()
    server = Server(
        folder, tracking_uri=uri, model_name=NAME, redis_url=TEST_REDIS_URL, database_url=url,
        workers=WORKERS, policy_path=str(policy), policy_reload_seconds="0.3",
        model_poll_seconds="0.5",
    )  # fmt: skip
    try:
        server.wait("/readyz", timeout=120)  # the first worker up; the traffic finds the others
        made = Workers(server, policy, uri, url, set(), [])
        with made.traffic() as traffic:
            seen = lambda: {p.pid for p in traffic.probes if p.checks["model"].get("ok")}  # noqa: E731
            wait_for(lambda: len(seen()) == WORKERS, f"{WORKERS} workers ready", traffic)
        made.keep(traffic)
        made.pids = seen()
        yield made
    finally:
        server.stop()
        drop_postgres_schema(postgres_admin, schema)
        redis_server.flushdb()


def is_refused(probe: Probe) -> bool:
    return "error" in probe.checks["policy"]


def serving_model(probe: Probe) -> str:
    return str(probe.checks["model"]["version"])


# --- the tests --------------------------------------------------------------------------------


def test_a_policy_edit_reaches_every_worker_and_none_answers_the_old_one_after(workers):
    old, new = version_of(RAW), version_of(EDITED)
    with workers.traffic() as traffic:
        wait_for(lambda: {a.pid for a in traffic.answers if a.policy_version == old}
                 == workers.pids, "every worker answering the first policy", traffic)  # fmt: skip
        write_policy(workers.policy, EDITED)
        edited = time.monotonic()
        switched = lambda: first_new(traffic.answers, policy_of, new)  # noqa: E731
        wait_for(lambda: set(switched()) == workers.pids, "every worker on the edit", traffic)
        everyone = max(switched().values())
        # Traffic goes on until every worker has answered a few more on the new version.
        wait_for(lambda: traffic.each_answered(workers.pids, 3, everyone),
                 "more answers from each", traffic)  # fmt: skip
    workers.keep(traffic)
    assert went_back(traffic.answers, policy_of, new) == []
    assert {a.policy_version for a in traffic.since(everyone)} == {new}
    assert {a.policy_version for a in traffic.answers} == {old, new}
    assert all(a.policy_version == old for a in traffic.answers if a.received < edited)


def test_a_bad_policy_is_refused_by_every_worker_and_the_last_good_one_keeps_deciding(workers):
    with workers.traffic() as traffic:
        wait_for(lambda: {a.pid for a in traffic.answers} == workers.pids,
                 "answers from every worker", traffic)  # fmt: skip
        (good,) = {a.policy_version for a in traffic.answers}  # the last good one, everywhere
        write_policy(workers.policy, UNORDERED)
        written = time.monotonic()

        refusing = lambda: first_new(traffic.probes_since(written), is_refused, True)  # noqa: E731
        wait_for(lambda: set(refusing()) == workers.pids, "every worker refusing it", traffic)
        everyone = max(refusing().values())
        wait_for(lambda: {a.pid for a in traffic.since(everyone)} == workers.pids,
                 "answers from every worker after the refusal", traffic)  # fmt: skip
    workers.keep(traffic)
    assert {a.policy_version for a in traffic.answers} == {good}
    for probe in traffic.probes_since(everyone):
        check = probe.checks["policy"]
        assert (check["ok"], check["serving_version"]) == (False, good), probe
        assert "thresholds: Value error, must be ordered" in check["error"]
    write_policy(workers.policy, RAW)  # a good one back, for the tests after


def test_a_promotion_reaches_every_worker_with_no_failed_request_and_none_goes_back(workers):
    client = MlflowClient(tracking_uri=workers.tracking_uri, registry_uri=workers.tracking_uri)
    with workers.traffic() as traffic:
        wait_for(lambda: {a.pid for a in traffic.answers} == workers.pids,
                 "answers from every worker on version 1", traffic)  # fmt: skip
        client.set_registered_model_alias(NAME, "champion", "2")
        switched = lambda: first_new(traffic.answers, model_of, "2")  # noqa: E731
        wait_for(lambda: set(switched()) == workers.pids, "every worker on version 2", traffic)
        everyone = max(switched().values())
        wait_for(lambda: traffic.each_answered(workers.pids, 3, everyone),
                 "more answers from each", traffic)  # fmt: skip
    workers.keep(traffic)
    assert {a.model_version for a in traffic.answers} == {"1", "2"}
    assert went_back(traffic.answers, model_of, "2") == []
    assert {a.model_version for a in traffic.since(everyone)} == {"2"}
    # What each worker's /readyz says moves forward too: never version 1 after version 2.
    assert went_back(traffic.probes, serving_model, "2") == []
    assert {serving_model(p) for p in traffic.probes_since(everyone)} == {"2"}


def test_every_decision_of_every_worker_is_stored_once_in_one_intact_chain(workers):
    with workers.traffic() as traffic:
        wait_for(lambda: traffic.each_answered(workers.pids, 20), "20 answers from each", traffic)
    workers.keep(traffic)
    answered = {a.decision_id: a.pid for a in workers.answered}
    assert len(answered) == len(workers.answered)  # no decision answered twice
    store = DecisionStore(workers.database_url)
    try:
        with store.database.connect() as conn:
            rows = conn.execute(sa.text("SELECT decision_id FROM decisions ORDER BY seq")).all()
        assert store.verify_chain() is None
    finally:
        store.close()
    stored = [row.decision_id for row in rows]
    assert len(stored) == len(set(stored)) and set(stored) == set(answered)
    # The workers' group commits interleave in the one chain: its order switches from one
    # worker's decisions to the other's again and again.
    order = [answered[decision_id] for decision_id in stored]
    switches = sum(1 for before, after in itertools.pairwise(order) if before != after)
    assert set(order) == workers.pids and switches >= 2 * WORKERS, switches
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "arbiter"), "decisions", "verify-chain"],
        env=workers.server.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the chain of {len(stored):,} records is intact" in " ".join(done.stdout.split())


def test_under_a_burst_the_workers_group_commit_into_the_one_chain(workers):
    """The store under load: 600 payments with 48 in flight over both workers. Every one is
    answered and stored once, the group commit putting several into one transaction
    (PostgreSQL's `xmin` names the transaction that wrote a row), and the chain stays intact."""
    key = workers.server.keys["scorer"]

    async def burst() -> list[httpx.Response]:
        rng = random.Random(99)
        bodies = [payment(rng, f"burst-{n}") for n in range(600)]
        gate = asyncio.Semaphore(48)
        async with httpx.AsyncClient(
            base_url=workers.server.url, headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=48), timeout=60.0,
        ) as client:  # fmt: skip

            async def one(body: dict[str, Any]) -> httpx.Response:
                async with gate:
                    return await client.post("/v1/payments/score", json=body)

            return await asyncio.gather(*(one(body) for body in bodies))

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * len(answers), answers[0].text
    ids = [a.json()["decision_id"] for a in answers]
    store = DecisionStore(workers.database_url)
    try:
        with store.database.connect() as conn:
            rows, transactions = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT xmin::text) FROM decisions "
                        "WHERE decision_id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)),
                {"ids": ids},
            ).one()  # fmt: skip
        assert store.verify_chain() is None
    finally:
        store.close()
    assert rows == len(set(ids)) == len(ids)
    # The writer takes what waits when it commits: with the loop's CPU the bound, most of a
    # worker's commits carry one or two decisions here (600 in 443 transactions seen), more
    # as the store slows; never one transaction per decision under concurrent load.
    assert transactions < rows, f"{rows} decisions in {transactions} transactions"

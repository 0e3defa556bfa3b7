"""The outbox's delivery worker against a real HTTP receiver on loopback and a real SQLite
decision store. The receiver answers 503, stops listening, recovers; time is the `now_ms`
given to `run_once`, so retries and backoff are exercised without sleeping."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from api.app import start_notifier
from cli import notify as notify_cmds
from engine.notices import notification_of
from engine.notifier import Backoff, Notifier, NotifierThread, webhook_notifier
from engine.outbox import Notification
from engine.settings import Settings
from engine.store import DecisionStore
from tests.integration.test_decision_store import decision
from tests.receiver import Receiver

T0 = 1_700_000_001_000  # after the test decisions' created_at: every entry is due


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'arbiter.db'}"


@pytest.fixture
def store(url: str) -> Iterator[DecisionStore]:
    store = DecisionStore(url)
    store.migrate()
    yield store
    store.close()


def adverse(store: DecisionStore, *actions: str) -> list[Notification]:
    """Append one adverse decision per action, with its notification; the outbox entries."""
    made = []
    for n, action in enumerate(actions):
        record = decision(n, account=f"acct-{n}", action=action)
        store.append_decision(
            record, suspend=action == "suspend_account", notification=notification_of(record)
        )
        made.extend(store.notifications_for(record.decision_id))
    return made


def current(store: DecisionStore, *entries: Notification) -> list[Notification]:
    """The entries as the outbox holds them now."""
    return [
        next(n for n in store.notifications_for(e.decision_id or "") if n.id == e.id)
        for e in entries
    ]


def keys(*entries: Notification) -> list[str]:
    return sorted(str(e.id) for e in entries)


def cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> tuple[int, str]:
    monkeypatch.setenv("ARBITER_DATABASE_URL", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `notify` a sub-command
    notify_cmds.register(app)
    result = CliRunner().invoke(app, ["notify", *args])
    return result.exit_code, " ".join(result.output.split())


# --- retries while the receiver is down ---------------------------------------------------


def test_nothing_is_lost_while_the_receiver_is_down_and_each_is_delivered_once_after(
    store, receiver
):
    made = adverse(store, "decline", "review", "suspend_account")
    receiver.start(status=503)
    notifier = webhook_notifier(
        store, receiver.url, timeout_s=2, max_attempts=5, backoff_s=2, batch=10
    )

    assert notifier.run_once(T0) == (0, 3, 0)
    for entry in current(store, *made):
        assert (entry.status, entry.attempts, entry.next_attempt_at) == ("pending", 1, T0 + 2000)
        assert entry.last_error == "HTTP 503"
    assert notifier.run_once(T0 + 1999) == (0, 0, 0)  # not due yet: nothing is sent

    receiver.stop()  # nothing listens on the port now
    assert notifier.run_once(T0 + 2000) == (0, 3, 0)
    for entry in current(store, *made):
        assert (entry.status, entry.attempts, entry.next_attempt_at) == ("pending", 2, T0 + 6000)
        assert entry.last_error.startswith("ConnectError")

    receiver.start(status=200)
    assert notifier.run_once(T0 + 6000) == (3, 0, 0)
    assert notifier.run_once(T0 + 10**9) == (0, 0, 0)

    assert sorted(receiver.accepted) == keys(*made)  # each once, none missing
    assert len(receiver.requests) == 3 + 3  # three 503s, none while down, three deliveries
    for entry in current(store, *made):
        assert (entry.status, entry.attempts, entry.delivered_at) == ("delivered", 3, T0 + 6000)
        assert entry.last_error is None
    key, headers, body = receiver.requests[-1]
    (sent,) = current(store, *(e for e in made if str(e.id) == key))
    assert headers["X-Arbiter-Event"] == "customer_notification"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Arbiter-Attempt"] == "3"
    assert body == sent.payload
    assert body["type"] == "adverse_decision" and body["how_to_object"]
    assert notifier.counters.snapshot() == {"delivered": 3, "failed": 6, "dead": 0}


def test_an_entry_failing_past_max_attempts_is_dead_kept_and_reported_with_growing_backoff(
    store, receiver, url, monkeypatch
):
    good, poison = adverse(store, "decline", "decline")
    receiver.start()
    receiver.refuse = {str(poison.id)}
    notifier = webhook_notifier(store, receiver.url, timeout_s=2, max_attempts=4, backoff_s=2)

    now, delays = T0, []
    assert notifier.run_once(now) == (1, 1, 0)
    for _ in range(2):
        (entry,) = current(store, poison)
        delays.append(entry.next_attempt_at - now)
        now = entry.next_attempt_at
        assert notifier.run_once(now) == (0, 1, 0)
    (entry,) = current(store, poison)
    delays.append(entry.next_attempt_at - now)
    assert notifier.run_once(entry.next_attempt_at) == (0, 0, 1)

    assert delays == [2000, 4000, 8000]  # base * 2**attempt
    dead, delivered = current(store, poison, good)
    assert (dead.status, dead.attempts, dead.last_error) == (
        "dead",
        4,
        "HTTP 500: no such customer",
    )
    assert delivered.status == "delivered"
    assert notifier.run_once(T0 + 10**12) == (0, 0, 0)  # dead is final: never sent again
    assert [key for key, _, _ in receiver.requests].count(str(poison.id)) == 4
    assert notifier.counters.snapshot() == {"delivered": 1, "failed": 4, "dead": 1}
    assert store.notification_counts() == {"pending": 0, "delivered": 1, "dead": 1}

    code, out = cli(url, monkeypatch, "status")
    assert code == 0
    assert out.startswith("pending 0, delivered 1, dead 1 ")
    assert out.endswith(
        f"dead notifications (newest 1 of 1): {poison.id} 2023-11-14 22:13:20 account acct-1 "
        f"decision {poison.decision_id} 4 attempts HTTP 500: no such customer"
    )

    # The receiver is fixed: ops requeue the dead entry and it is delivered, with its full
    # retries again. An id that is not dead is left alone and said so.
    receiver.refuse = set()
    code, out = cli(url, monkeypatch, "requeue", str(poison.id), str(good.id))
    assert code == 1 and out == f"requeued 1: {poison.id} not dead (left alone): {good.id}"
    (entry,) = current(store, poison)
    assert (entry.status, entry.attempts, entry.last_error) == (
        "pending", 0, "HTTP 500: no such customer",
    )  # fmt: skip
    assert entry.next_attempt_at > T0  # due now (the wall clock), not at its old time
    assert notifier.run_once(entry.next_attempt_at) == (1, 0, 0)
    assert current(store, poison)[0].status == "delivered"
    assert [key for key, _, _ in receiver.requests].count(str(poison.id)) == 5
    assert cli(url, monkeypatch, "requeue", "--all") == (0, "requeued 0: -")
    assert cli(url, monkeypatch, "requeue")[0] == 2  # neither ids nor --all


def test_a_leased_entry_is_not_taken_by_a_second_worker_meanwhile(store):
    made = adverse(store, "decline", "review")
    sent_by: dict[int, str] = {}
    second_claims = []

    def send_a(n: Notification) -> None:
        second_claims.append(second.run_once(T0))  # while A holds the lease
        sent_by[n.id] = "a"

    def send_b(n: Notification) -> None:
        sent_by[n.id] = "b"

    first = Notifier(store, send_a, max_attempts=3, backoff=Backoff(1))
    second = Notifier(store, send_b, max_attempts=3, backoff=Backoff(1))

    assert first.run_once(T0) == (2, 0, 0)
    assert second_claims == [(0, 0, 0), (0, 0, 0)]
    assert sent_by == {made[0].id: "a", made[1].id: "a"}


class Dripping:
    """A receiver on loopback that answers 200 with a body one byte every 0.2 s: each read
    within httpx's timeout, the whole answer far past it."""

    def __init__(self, seconds: float = 6.0) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.seconds = seconds
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.recv(65536)
            n = int(self.seconds / 0.2)
            conn.sendall(f"HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n".encode())
            try:
                for _ in range(n):
                    conn.sendall(b".")
                    time.sleep(0.2)
            except OSError:
                pass  # the sender gave up and closed

    def stop(self) -> None:
        self.server.close()


def test_an_answer_that_drips_in_is_cut_at_the_timeout_and_retried(store):
    # httpx's timeout is per read: a receiver sending a byte at a time held a delivery (and
    # the entries behind it) for as long as it liked, past the lease another worker waits for.
    record = decision(1, action="decline")
    store.append_decision(record, suspend=False, notification={"type": "adverse_decision"})
    dripping = Dripping()
    notifier = webhook_notifier(store, dripping.url, timeout_s=1.0, max_attempts=3, backoff_s=2)
    try:
        # Waiting the answer out would have delivered it (a whole 200): it was cut instead.
        assert notifier.run_once(T0) == (0, 1, 0)
        [entry] = store.notifications_for(record.decision_id)
        assert entry.status == "pending" and "no whole answer within 1 s" in entry.last_error
    finally:
        notifier.close()
        dripping.stop()


def test_a_batch_past_half_its_lease_leaves_the_rest_leased(store):
    for n in range(3):
        store.append_decision(decision(n, action="decline"), suspend=False,
                              notification={"type": "adverse_decision"})  # fmt: skip
    sent: list[int] = []

    def slow(notification: Notification) -> None:
        sent.append(notification.id)
        time.sleep(1.1)

    notifier = Notifier(store, slow, max_attempts=3, backoff=Backoff(1), lease_ms=2000)
    assert notifier.run_once(T0) == (1, 0, 0)  # the second would start past half the lease
    assert len(sent) == 1
    assert notifier.run_once(T0) == (0, 0, 0)  # the others are leased still
    assert notifier.run_once(T0 + 3000) == (1, 0, 0)  # taken again once the lease ended
    assert len(set(sent)) == 2


def test_a_sender_error_of_any_kind_is_recorded_with_its_type(store):
    made = adverse(store, "decline")

    def broken(_n: Notification) -> None:
        raise RuntimeError("template missing")

    notifier = Notifier(store, broken, max_attempts=3, backoff=Backoff(1))
    assert notifier.run_once(T0) == (0, 1, 0)
    (entry,) = current(store, *made)
    assert entry.last_error == "RuntimeError: template missing"


# --- the worker as a thread (the app) and as a process (the CLI) ---------------------------


def test_the_apps_worker_thread_delivers_through_a_failing_receiver_and_stops(store, receiver):
    made = adverse(store, "decline", "suspend_account")
    receiver.start(status=503)
    settings = Settings(
        webhook_url=receiver.url, webhook_timeout_seconds=2, notify_backoff_seconds=0.05
    )
    worker = start_notifier(settings, store)
    assert worker is not None
    deadline = time.monotonic() + 5
    while len(receiver.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    receiver.status = 200
    while len(receiver.accepted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert worker.stop(timeout=3)
    assert sorted(receiver.accepted) == keys(*made)
    assert [e.status for e in current(store, *made)] == ["delivered", "delivered"]
    assert worker.notifier.counters.snapshot()["delivered"] == 2


def test_no_worker_runs_without_a_webhook(store):
    assert start_notifier(Settings(webhook_url=None), store) is None


def test_a_stopped_thread_reports_it_stopped_even_with_nothing_to_do(store):
    worker = NotifierThread(
        Notifier(store, lambda _n: None, max_attempts=1, backoff=Backoff(1)), interval=30
    )
    worker.start()
    started = time.monotonic()
    assert worker.stop(timeout=2)
    assert time.monotonic() - started < 1  # the wait between looks is interrupted


def test_notify_run_once_delivers_what_is_due(store, receiver, url, monkeypatch):
    made = adverse(store, "decline", "review")
    receiver.start()

    code, out = cli(url, monkeypatch, "run", "--once", ARBITER_WEBHOOK_URL=receiver.url)

    assert (code, out) == (0, "delivered 2, to retry 0, dead 0")
    assert sorted(receiver.accepted) == keys(*made)


def test_notify_run_refuses_to_start_without_a_webhook(store, url, monkeypatch):
    monkeypatch.delenv("ARBITER_WEBHOOK_URL", raising=False)
    assert cli(url, monkeypatch, "run", "--once") == (
        2, "no webhook to deliver to: set ARBITER_WEBHOOK_URL",
    )  # fmt: skip


def test_notify_status_says_when_the_store_is_missing_or_has_no_schema(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    code, out = cli(url, monkeypatch, "status")
    assert (code, out.startswith(f"no decision store at {tmp_path / 'empty.db'}")) == (2, True)
    bare = DecisionStore(url)
    bare.is_writable()  # creates the file, not the schema
    bare.close()
    code, out = cli(url, monkeypatch, "status")
    assert code == 2
    assert out.startswith("the decision store has no schema: run `arbiter decisions migrate`")

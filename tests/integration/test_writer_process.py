"""The decision writer in a process of its own (engine/writer_process.py), on a real SQLite store
and a real child process: decisions are durable and chained when their futures are done, a retry
gets the first decision back whole, an error crosses the socket as its own class, a request
cancelled while the child's writer is busy is not stored, reads see what is only journaled in
the child, stopping stores what is queued, and a child that is killed fails its waiting
requests, is replaced, and its journal is adopted by the new one (nothing journaled is lost)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from engine.errors import InvalidDecisionRecord, StoreUnavailable
from engine.store import DecisionStore
from engine.writer_process import WriterConfig, WriterProcess
from tests.integration.test_decision_store import count, decision
from tests.integration.test_journal import Locked, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path) -> Iterator[DecisionStore]:
    made = DecisionStore(f"sqlite:///{tmp_path / 'arbiter.db'}")
    made.migrate()
    yield made
    made.close()


@pytest.fixture
def writer(store, tmp_path) -> Iterator[WriterProcess]:
    config = WriterConfig(database_url=store.url, busy_timeout_s=0.3,
                          journal_dir=str(tmp_path / "journal"), retry_s=0.2)  # fmt: skip
    made = WriterProcess(config, wait_s=20)
    made.start()
    yield made
    made.stop()


def submit(writer: WriterProcess, n: int, **more):
    suspend = more.get("action") == "suspend_account"
    return writer.submit(decision(n, **more), suspend=suspend,
                         notification={"n": n} if suspend else None)  # fmt: skip


def test_decisions_from_several_threads_are_stored_in_one_chain_before_their_answer(writer, store):
    answers: list = []
    guard = threading.Lock()

    def burst(start: int) -> None:
        futures = [submit(writer, n, account=f"acct-{n % 7}") for n in range(start, start + 50)]
        done = [f.result(timeout=20) for f in futures]
        with guard:
            answers.extend(done)

    threads = [threading.Thread(target=burst, args=(k * 50,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 200
    # Done means durable: each answer is in the store as answered, read by another connection.
    for answer in answers[::17]:
        stored = store.get_by_payment(answer.record.payment_id)
        assert stored is not None
        assert (stored.decision_id, stored.seq, stored.hash) == (
            answer.decision_id, answer.seq, answer.hash,
        )  # fmt: skip
    assert sorted(a.seq for a in answers) == list(range(1, 201))
    assert store.verify_chain() is None
    assert writer.appended == 200 and 1 <= writer.batches <= 200


def test_a_retry_gets_the_first_decision_back_whole_and_reads_go_through_the_child(writer):
    first = submit(writer, 1, account="acct-s", action="suspend_account").result(10)
    again = submit(writer, 1, account="acct-s").result(10)  # the same payment, decided again
    assert again.replayed and again.decision_id == first.decision_id
    assert again.record.action == "suspend_account"  # the stored record, not the one sent
    found = writer.get_by_payment("pay-1")
    assert found is not None and found.decision_id == first.decision_id
    assert writer.get_by_payment("pay-unknown") is None
    assert writer.account_status("acct-s").status == "suspended"
    assert writer.suspended_accounts() == {"acct-s": first.decision_id}


def test_an_error_crosses_the_socket_as_its_own_class_and_fails_only_its_request(writer):
    first = submit(writer, 1).result(10)
    # A notification the store cannot keep: refused in the child, by the store.
    bad = writer.submit(decision(2), suspend=False, notification={"to": {"a", "set"}})
    good = submit(writer, 3)
    with pytest.raises(InvalidDecisionRecord, match="a set is not a JSON value"):
        bad.result(10)
    assert good.result(10).seq == first.seq + 1


def test_a_request_cancelled_while_the_writer_is_busy_is_not_stored(writer, store, tmp_path):
    lock = Locked(tmp_path / "arbiter.db")  # the child's writer waits in its first batch
    try:
        first = submit(writer, 1)
        time.sleep(0.1)
        second = submit(writer, 2)
        assert second.cancel()  # still queued in the child
    finally:
        time.sleep(0.1)  # the cancel reaches the child while the lock holds
        lock.release()
    stored = first.result(10)  # the store was locked past its timeout: journaled, then replayed
    wait_for(lambda: writer.journal_pending == 0 and count(store.url, "decisions") >= 1)
    time.sleep(0.3)
    assert count(store.url, "decisions") == 1
    assert store.get_by_payment("pay-1").decision_id == stored.decision_id
    assert store.get_by_payment("pay-2") is None


def test_what_is_only_journaled_in_the_child_counts_and_is_replayed(writer, store, tmp_path):
    lock = Locked(tmp_path / "arbiter.db")
    try:
        answered = [submit(writer, n, account="acct-j", action="suspend_account"
                           if n == 5 else "allow").result(10) for n in range(1, 9)]  # fmt: skip
        assert all(a.journaled for a in answered)
        wait_for(lambda: writer.journal_pending == 8)  # the child's counters, sent over
        assert writer.journal is not None and writer.journal.journaled >= 8
        assert writer.get_by_payment("pay-3").decision_id == answered[2].decision_id
        assert writer.account_status("acct-j").status == "suspended"
    finally:
        lock.release()
    wait_for(lambda: writer.journal_pending == 0)
    assert count(store.url, "decisions") == 8
    assert store.verify_chain() is None
    assert store.account_status("acct-j").status == "suspended"


def test_stop_stores_what_is_queued_then_refuses(store, tmp_path):
    made = WriterProcess(WriterConfig(database_url=store.url), wait_s=20)
    made.start()
    futures = [submit(made, n) for n in range(100)]
    assert made.stop()
    assert [f.result(0).seq for f in futures] == list(range(1, 101))
    assert count(store.url, "decisions") == 100
    with pytest.raises(StoreUnavailable, match="stopped"):
        submit(made, 100)


def test_a_killed_child_fails_its_waiting_requests_and_is_replaced_losing_nothing_journaled(
    writer, store, tmp_path
):
    before = writer._child.pid
    lock = Locked(tmp_path / "arbiter.db")
    try:
        journaled = [submit(writer, n).result(10) for n in range(1, 6)]
        assert all(j.journaled for j in journaled)
        # A request waiting on a child that no longer answers; then the child is killed.
        os.kill(before, signal.SIGSTOP)
        waiting = submit(writer, 6)
        time.sleep(0.1)
        assert not waiting.done()
        os.kill(before, signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="ended"):
            waiting.result(10)
    finally:
        lock.release()
    wait_for(lambda: writer.restarts == 1 and writer._child is not None, timeout=30)
    assert writer._child.pid != before
    # The new child adopts the dead one's journal (its pid is gone) and replays it.
    wait_for(lambda: all(store.get_by_payment(f"pay-{n}") for n in range(1, 6)), timeout=30)
    after = submit(writer, 7).result(10)
    assert not after.journaled
    assert store.verify_chain() is None
    assert {store.get_by_payment(f"pay-{n}").decision_id for n in range(1, 6)} == {
        j.decision_id for j in journaled
    }
    assert store.get_by_payment("pay-6") is None  # never read by the dead child

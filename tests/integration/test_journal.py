"""The decision journal (engine/journal.py) on a real SQLite store that another process holds
locked (`BEGIN EXCLUSIVE`, as a stuck writer or a backup would): decisions made meanwhile are
answered from the fsync'd journal, found again by a retry, and replayed into the store once the
lock is gone, each exactly once, in order, chain intact, with their suspensions and
notifications; the locked store is tried by the probe, not by every decision. A journal left
by a process that died is adopted by the next one; a line cut short by the crash is skipped, a
damaged line or a decision the store refuses is set aside; the same file twice stores nothing
twice; a retry is journaled once."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import StoreError, StoreUnavailable
from engine.group_commit import GroupCommitter
from engine.journal import DecisionJournal, entry
from engine.store import Append, DecisionStore
from tests.integration.test_decision_store import count, decision

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path) -> Iterator[DecisionStore]:
    made = DecisionStore(f"sqlite:///{tmp_path / 'arbiter.db'}", busy_timeout_s=0.2)
    made.migrate()
    yield made
    made.close()


class Locked:
    """Another connection holding SQLite's exclusive lock: nobody else may write."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=5)
        self.connection.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_decisions_made_while_the_store_is_locked_are_journaled_then_stored_once(store, tmp_path):
    journal = DecisionJournal(tmp_path / "journal")
    writer = GroupCommitter(store, journal=journal, retry_s=0.2)
    before = writer.append_decision(decision(0), suspend=False, notification=None)
    assert not before.journaled and before.seq == 1

    lock = Locked(tmp_path / "arbiter.db")
    made = [decision(n, account=f"acct-{n % 3}") for n in range(1, 40)]
    suspending = decision(40, account="acct-s", action="suspend_account")
    futures = [writer.submit(r, suspend=False, notification=None) for r in made]
    futures.append(writer.submit(suspending, suspend=True, notification={"to": "acct-s"}))
    answered = [f.result(timeout=10) for f in futures]

    assert all(a.journaled for a in answered), "the store was locked: every one is journaled"
    assert journal.pending == 40 and journal.path.exists()
    lines = journal.path.read_bytes().splitlines()
    assert len(lines) == 40  # one fsync'd line each
    # A retry finds its decision in the journal; the suspension counts before it is stored.
    again = writer.get_by_payment("pay-7")
    assert again is not None and again.replayed and again.decision_id == made[6].decision_id
    assert writer.account_status("acct-s").status == "suspended"
    assert writer.suspended_accounts()["acct-s"] == suspending.decision_id

    lock.release()
    wait_for(lambda: journal.pending == 0)  # the idle writer replays it by itself
    assert count(store.url, "decisions") == 41
    stored = [store.get_by_payment(f"pay-{n}") for n in range(0, 41)]
    assert [s.decision_id for s in stored if s] == [before.decision_id] + [
        r.decision_id for r in [*made, suspending]
    ]  # journal order is chain order
    assert [s.seq for s in stored if s] == list(range(1, 42))
    assert store.verify_chain() is None
    assert store.account_status("acct-s").status == "suspended"
    assert [n.payload["to"] for n in store.notifications_for(suspending.decision_id)] == ["acct-s"]
    assert journal.path.stat().st_size == 0  # emptied once all of it is in

    # New decisions go straight to the store again.
    after = writer.append_decision(decision(41), suspend=False, notification=None)
    assert not after.journaled and after.seq == 42
    writer.stop()
    journal.close()
    assert not journal.path.exists()


def test_a_dead_process_journal_is_adopted_by_the_next_one_skipping_a_cut_line(store, tmp_path):
    folder = tmp_path / "journal"
    dead = DecisionJournal(folder)
    records = [decision(n) for n in range(3)]
    dead.write([Append(r) for r in records])
    # The crash cut the next line short: it was never answered, so it is not stored.
    with dead.path.open("ab") as file:
        file.write(entry(Append(decision(99)))[:40])
    copy = folder / "copy-of-the-same.jsonl"  # e.g. restored twice from a backup
    copy.write_bytes(dead.path.read_bytes())
    assert dead._fd is not None
    os.close(dead._fd)  # the process is gone, and its lock with it

    # A torn write left a damaged line inside another orphan: set aside, the rest goes on.
    damaged = folder / "damaged.jsonl"
    suspending = decision(5, account="acct-s", action="suspend_account")
    damaged.write_bytes(b"\0\0\0 not json\n" + entry(Append(suspending, suspend=True)))

    alive = DecisionJournal(folder)
    # No store needed for that; the suspensions adopted come back, for the service to flag.
    assert alive.adopt_orphans() == {"acct-s": suspending.decision_id}
    assert alive.pending == 4  # the copy's payments are journaled once
    assert sorted(p.name for p in folder.glob("*.jsonl")) == [alive.path.name]
    alive.replay_own(store)
    assert count(store.url, "decisions") == 4
    assert [store.get_by_payment(f"pay-{n}").decision_id for n in range(3)] == [
        r.decision_id for r in records
    ]
    assert store.get_by_payment("pay-5") is not None
    assert store.get_by_payment("pay-99") is None
    assert alive.refused == 1
    assert b"does not parse" in alive.path.with_suffix(".refused").read_bytes()


def test_a_decision_the_store_refuses_is_set_aside_and_does_not_block_the_rest(store, tmp_path):
    journal = DecisionJournal(tmp_path / "journal")
    good = [decision(n) for n in range(3)]
    bad = decision(7)
    journal.write([Append(good[0]), Append(bad), Append(good[1]), Append(good[2])])

    class Refusing:
        """The real store, refusing one decision for good (as a constraint would)."""

        def append_many(self, batch, *, recover=False):
            if any(a.record.decision_id == bad.decision_id for a in batch):
                raise StoreError("the decision store failed: a value it cannot take")
            return store.append_many(batch, recover=recover)

    journal.replay_own(Refusing())
    assert journal.pending == 0 and journal.refused == 1
    assert count(store.url, "decisions") == 3
    assert bad.decision_id.encode() in journal.path.with_suffix(".refused").read_bytes()


def test_a_store_that_refuses_every_decision_is_unavailable_and_nothing_is_set_aside(
    store, tmp_path
):
    journal = DecisionJournal(tmp_path / "journal")
    journal.write([Append(decision(n)) for n in range(3)])

    class ReadOnly:
        def append_many(self, batch, *, recover=False):
            raise StoreError("the decision store failed: cannot execute INSERT in a read-only")

    with pytest.raises(StoreUnavailable, match="refused every journaled decision"):
        journal.replay_own(ReadOnly())
    assert journal.pending == 3 and journal.refused == 0
    journal.replay_own(store)
    assert count(store.url, "decisions") == 3


def test_a_retry_while_the_store_is_down_gets_its_journaled_decision(store, tmp_path):
    journal = DecisionJournal(tmp_path / "journal")
    first, retry = decision(1), decision(1)  # the same payment, decided twice
    [answered] = journal.write([Append(first)])
    [again, twice] = journal.write([Append(retry), Append(decision(1))])
    assert not answered.replayed and answered.decision_id == first.decision_id
    assert again.replayed and again.decision_id == first.decision_id
    assert twice.replayed and twice.decision_id == first.decision_id
    assert journal.pending == 1 and len(journal.path.read_bytes().splitlines()) == 1


def test_a_locked_store_is_tried_by_the_probe_not_by_every_decision(store, tmp_path):
    """Each attempt on a locked SQLite costs its busy timeout: after the first failure the
    decisions are journaled without one, and the probe thread finds the store again."""

    class Counting(DecisionStore):
        attempts = 0

        def append_many(self, batch, *, recover=False):
            Counting.attempts += 1
            return super().append_many(batch, recover=recover)

    counted = Counting(store.url, busy_timeout_s=0.3)
    writer = GroupCommitter(counted, journal=DecisionJournal(tmp_path / "journal"), retry_s=0.2)
    lock = Locked(tmp_path / "arbiter.db")
    try:
        for n in range(20):  # one by one: 20 batches
            assert writer.append_decision(decision(n), suspend=False, notification=None).journaled
        assert Counting.attempts == 1
    finally:
        lock.release()
    wait_for(lambda: writer.journal_pending == 0)
    assert count(store.url, "decisions") == 20
    writer.stop()
    counted.close()


def test_a_live_process_journal_is_left_to_its_owner(store, tmp_path):
    folder = tmp_path / "journal"
    owner = DecisionJournal(folder)
    owner.write([Append(decision(1))])
    other = DecisionJournal(folder)
    assert other.adopt_orphans() == {}  # its owner holds the lock
    assert count(store.url, "decisions") == 0 and owner.path.exists()
    owner.replay_own(store)
    assert count(store.url, "decisions") == 1 and owner.pending == 0

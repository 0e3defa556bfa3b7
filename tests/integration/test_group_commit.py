"""Group commit (engine/group_commit.py) on the real SQLite and PostgreSQL stores: decisions
queued while the writer is busy go into one transaction, in queue order, chain intact; a payment
decided twice in a batch is stored once; a failing batch fails each of its callers; stopping
stores what was queued."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from engine.errors import StoreError, StoreUnavailable
from engine.group_commit import GroupCommitter
from engine.store import DecisionStore
from tests.conftest import drop_postgres_schema, new_postgres_schema
from tests.integration.test_decision_store import decision

pytestmark = pytest.mark.integration


class SlowFirst(DecisionStore):
    """A store whose first batch, once started (`started`), waits until the test releases it
    (`release`), so the next callers queue up behind it whatever the machine's load (a sleep
    was not always long enough for the writer to have taken the first one)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sizes: list[int] = []
        self.started, self.release = threading.Event(), threading.Event()

    def hold_first(self) -> None:
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(10), "the test never released the first batch"

    def append_many(self, batch, *, recover=False):
        self.hold_first()
        self.sizes.append(len(batch))
        return super().append_many(batch, recover=recover)


def queued_behind(store: SlowFirst) -> None:
    """Wait until the writer is inside the store's first batch."""
    assert store.started.wait(10), "the writer never started the first batch"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[SlowFirst]:
    if request.param == "sqlite":
        made, name = SlowFirst(f"sqlite:///{tmp_path / 'arbiter.db'}"), None
    else:
        admin = request.getfixturevalue("postgres_admin")
        name, url = new_postgres_schema(admin)
        made = SlowFirst(url)
    made.migrate()
    yield made
    made.close()
    if name is not None:
        drop_postgres_schema(request.getfixturevalue("postgres_admin"), name)


def test_decisions_queued_behind_a_busy_writer_share_one_transaction(store):
    writer = GroupCommitter(store)
    first = threading.Thread(target=writer.append_decision, args=(decision(0),),
                             kwargs={"suspend": False, "notification": None})  # fmt: skip
    first.start()
    queued_behind(store)
    futures = [writer.submit(decision(n, account=f"acct-{n}", action="suspend_account"),
                             suspend=True, notification={"n": n}) for n in range(1, 9)]  # fmt: skip
    store.release.set()
    stored = [f.result(timeout=10) for f in futures]
    first.join(10)
    writer.stop()
    assert store.sizes == [1, 8]
    assert [s.seq for s in stored] == list(range(2, 10))  # the queue's order is the chain's
    assert store.verify_chain() is None
    assert store.account_status("acct-5").status == "suspended"
    assert [n.payload for n in store.notifications_for(stored[4].decision_id)] == [{"n": 5}]


def test_a_payment_decided_twice_in_one_batch_is_stored_once(store):
    writer = GroupCommitter(store)
    blocker = threading.Thread(target=writer.append_decision, args=(decision(0),),
                               kwargs={"suspend": False, "notification": None})  # fmt: skip
    blocker.start()
    queued_behind(store)
    one = writer.submit(decision(1), suspend=False, notification=None)
    again = writer.submit(decision(1), suspend=False, notification=None)
    older = writer.submit(decision(0), suspend=False, notification=None)
    store.release.set()
    blocker.join(10)
    a, b, c = one.result(10), again.result(10), older.result(10)
    writer.stop()
    assert not a.replayed and b.replayed and b.decision_id == a.decision_id
    assert c.replayed and c.seq == 1
    assert store.chain_head() is not None and store.chain_head()[0] == 2


def test_a_store_that_is_down_fails_each_caller(tmp_path):
    unmigrated = DecisionStore(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema
    writer = GroupCommitter(unmigrated)
    futures = [writer.submit(decision(n), suspend=False, notification=None) for n in range(3)]
    for future in futures:
        with pytest.raises(StoreError):
            future.result(10)
    writer.stop()
    unmigrated.close()


class Refusing(SlowFirst):
    """Refuses any batch holding a decision whose id starts with 'bad' (a record the database
    would not take)."""

    def append_many(self, batch, *, recover=False):
        if any(a.record.decision_id.startswith("bad") for a in batch):
            self.sizes.append(len(batch))
            raise StoreError("the database refused a value")
        return super().append_many(batch, recover=recover)


def test_one_refused_decision_fails_only_its_own_request(tmp_path):
    store = Refusing(f"sqlite:///{tmp_path / 'arbiter.db'}")
    store.migrate()
    writer = GroupCommitter(store)
    blocker = writer.submit(decision(0), suspend=False, notification=None)
    queued_behind(store)  # the next three queue up
    good = writer.submit(decision(1), suspend=False, notification=None)
    bad = writer.submit(decision(2, decision_id="bad-2"), suspend=False, notification=None)
    also_good = writer.submit(decision(3), suspend=False, notification=None)
    store.release.set()
    assert blocker.result(10).seq == 1
    with pytest.raises(StoreError, match="refused"):
        bad.result(10)
    assert (good.result(10).seq, also_good.result(10).seq) == (2, 3)
    writer.stop()
    assert store.sizes[:2] == [1, 3] and store.verify_chain() is None
    store.close()


def test_a_request_that_gave_up_is_not_stored_and_the_writer_carries_on(tmp_path):
    store = SlowFirst(f"sqlite:///{tmp_path / 'arbiter.db'}")
    store.migrate()
    writer = GroupCommitter(store)
    blocker = writer.submit(decision(0), suspend=False, notification=None)
    queued_behind(store)
    gone = writer.submit(decision(1), suspend=False, notification=None)
    assert gone.cancel()  # the request was cancelled while waiting for its turn
    kept = writer.submit(decision(2), suspend=False, notification=None)
    store.release.set()
    assert blocker.result(10).seq == 1 and kept.result(10).seq == 2
    later = writer.append_decision(decision(3), suspend=False, notification=None)
    assert later.seq == 3 and store.get_by_payment("pay-1") is None
    writer.stop()
    store.close()


def test_stop_stores_what_was_queued(store):
    store.release.set()  # no batch is held
    writer = GroupCommitter(store)
    futures = [writer.submit(decision(n), suspend=False, notification=None) for n in range(5)]
    writer.stop()
    assert all(f.done() and not f.exception() for f in futures)
    assert store.chain_head()[0] == 5


class CommitsThenRaises(SlowFirst):
    """The batch after the first commits, then the call raises (a lost acknowledgement)."""

    def append_many(self, batch, *, recover=False):
        self.hold_first()
        stored = DecisionStore.append_many(self, batch, recover=recover)
        self.sizes.append(len(batch))
        if len(self.sizes) == 2:  # the batch after the first one
            raise StoreError("the connection dropped after COMMIT")
        return stored


def test_a_batch_that_committed_but_raised_is_not_stored_twice(tmp_path):
    store = CommitsThenRaises(f"sqlite:///{tmp_path / 'arbiter.db'}")
    store.migrate()
    writer = GroupCommitter(store)
    blocker = writer.submit(decision(0), suspend=False, notification=None)
    queued_behind(store)
    account = decision(1, subject_type="account", action="suspend_account", account="acct-9")
    futures = [writer.submit(account, suspend=True, notification={"n": 1}),
               writer.submit(decision(2), suspend=False, notification=None)]  # fmt: skip
    store.release.set()
    blocker.result(10)
    results = [f.result(10) for f in futures]
    writer.stop()
    assert [r.replayed for r in results] == [False, False]  # their own decisions, as stored
    assert [r.seq for r in results] == [2, 3] and store.chain_head()[0] == 3
    assert store.sizes[:2] == [1, 2]  # the two queued behind the first went in one batch
    assert store.verify_chain() is None
    store.close()


class Locked(SlowFirst):
    def append_many(self, batch, *, recover=False):
        self.hold_first()
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            return DecisionStore.append_many(self, batch)
        raise StoreUnavailable("the decision store is locked")


def test_a_store_that_is_unavailable_fails_the_whole_batch_at_once(tmp_path):
    store = Locked(f"sqlite:///{tmp_path / 'arbiter.db'}")
    store.migrate()
    writer = GroupCommitter(store)
    writer.submit(decision(0), suspend=False, notification=None)
    queued_behind(store)
    futures = [writer.submit(decision(n), suspend=False, notification=None) for n in (1, 2, 3)]
    store.release.set()
    for future in futures:
        with pytest.raises(StoreUnavailable):
            future.result(10)
    assert store.sizes == [1, 3]  # no retry one by one: each would wait for the lock again
    writer.stop()
    with pytest.raises(StoreUnavailable, match="stopped"):
        writer.submit(decision(4), suspend=False, notification=None)
    store.close()

"""Group commit: many requests' decisions stored in one transaction, each request still
answered only once its own decision is durable.

Every decision must be in the store before its answer, and a SQLite commit (an fsync) or a
PostgreSQL round trip costs more than building the decision. `GroupCommitter.append_decision`
hands the decision to one writer thread and waits; the writer takes everything that queued up
meanwhile (up to `max_batch`) and stores it with `DecisionStore.append_many`: one transaction,
one commit, the chain order the queue order. Under light load a batch is one decision (the same
latency as a direct write, plus a thread hand-off); under heavy load the commit's cost is
shared. When a batch fails, its decisions are stored one by one, so a decision the store
refuses fails its own request only (and a store that is down fails each with its error). A
request cancelled before its turn is not stored. The writer survives anything a request does
and is restarted if it ever died.

With a `journal` (engine.journal), a batch the store cannot take (`StoreUnavailable`) is
written to the local journal and fsync'd instead, and its requests are answered from there.
The store is then marked down: later batches go straight to the journal, behind the others,
and a probe thread (never the writer) asks the store every `retry_s` whether it can write
again, so a store that hangs or is locked costs its timeout once, not per decision. Once it
can, the writer replays the journal a chunk at a time between new batches (and whenever the
queue is idle), so journaled decisions keep their order in the chain. Orphan journals of
processes that are gone are adopted every few seconds.

Reads (`get_by_payment`, `account_status`, `suspended_accounts`) go to the store, with what
is still only journaled in this process taken into account.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from engine.accounts import AccountState
from engine.errors import StoreUnavailable
from engine.journal import DecisionJournal
from engine.records import DecisionRecord, StoredDecision
from engine.store import Append, DecisionStore

log = logging.getLogger("arbiter.group_commit")
_REPLAY_CHUNK = 64  # journaled decisions replayed between two new batches


class GroupCommitter:
    def __init__(
        self,
        store: DecisionStore,
        *,
        max_batch: int = 256,
        wait_s: float = 30.0,
        journal: DecisionJournal | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.wait_s = wait_s  # a synchronous caller's longest wait for its decision
        self.journal = journal
        self.retry_s = retry_s  # how often a store that is down is tried again
        self._store_down = False  # set by a failure, cleared by the probe thread
        self._probe: threading.Thread | None = None  # both under `_probe_lock`
        self._probe_lock = threading.Lock()
        # Called on the writer's thread with the suspensions of adopted orphan journals (the
        # service flags them: a dead process's suspension must count here too).
        self.on_adopted: Callable[[dict[str, str]], None] | None = None
        self._orphans_checked_at = float("-inf")
        self.journal_error: str | None = None  # why the journal could not take a batch, if so
        self._queue: queue.SimpleQueue[tuple[Append, Future[StoredDecision]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # how many transactions; with `appended`, the mean batch size
        self.appended = 0
        self._stopped = False

    # --- what the service calls -----------------------------------------------------------------

    def append_decision(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> StoredDecision:
        """Store the decision (with the writer's next batch) and return once it is durable."""
        future = self.submit(record, suspend=suspend, notification=notification)
        try:
            return future.result(timeout=self.wait_s)
        except TimeoutError:
            if not future.cancel():  # being written right now: its outcome is the answer
                return future.result()
            raise StoreUnavailable(
                f"the decision writer did not store decision {record.decision_id} within "
                f"{self.wait_s:g} s"
            ) from None

    def submit(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> Future[StoredDecision]:
        """Queue the decision for the writer's next batch; the future is done once it is
        durable (or failed with the store's error). Cancelling it before the writer takes it
        keeps the decision out of the store."""
        if self._stopped:
            raise StoreUnavailable("the decision writer is stopped")
        self.start()
        future: Future[StoredDecision] = Future()
        self._queue.put((Append(record, suspend, notification), future))
        return future

    def get_by_payment(self, payment_id: str) -> StoredDecision | None:
        if self.journal is not None and (journaled := self.journal.by_payment(payment_id)):
            return replace(journaled, replayed=True)
        return self.store.get_by_payment(payment_id)

    def account_status(self, account_id: str) -> AccountState:
        if self.journal is not None and (decision := self.journal.suspended().get(account_id)):
            return AccountState(account_id, "suspended", None, decision, None)
        return self.store.account_status(account_id)

    def suspended_accounts(self) -> dict[str, str | None]:
        # The journal first: a suspension only moves from it to the store, so one replayed
        # between the two reads is seen by the second.
        journaled = self.journal.suspended() if self.journal is not None else {}
        suspended = self.store.suspended_accounts()
        suspended.update(journaled)
        return suspended

    @property
    def journal_pending(self) -> int:
        return self.journal.pending if self.journal is not None else 0

    # --- the writer -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread if it is not running (the first submit does it too; a
        journal's orphans and leftovers are replayed only while it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="decision-writer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Store what is queued, then stop the writer; later submits are refused. Returns
        whether the writer has ended (only then may its journal be closed)."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
        ended = True
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            ended = not thread.is_alive()
        # Whatever is still queued (the writer did not finish in time) fails, never hangs.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _settle(item[1], error=StoreUnavailable("the decision writer is stopped"))
        return ended

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_wait())
            except queue.Empty:  # idle: time to move journaled decisions into the store
                self._drain()
                continue
            if first is None:
                self._drain()
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                self._write(batch)
            except Exception as exc:  # a bug here must not leave requests waiting forever
                log.exception("the decision writer failed on a batch")
                for _, future in batch:
                    _settle(future, error=exc)
            if stop:
                return

    def _write(self, batch: list[tuple[Append, Future[StoredDecision]]]) -> None:
        # A request that gave up before its turn (cancelled) is not stored: nobody would hear
        # of its decision, and a retry decides again.
        live = [(a, f) for a, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        if self.journal is not None and (
            self._store_down or not self._drain(at_least=len(live) + _REPLAY_CHUNK)
        ):
            # Journaled decisions wait for the store: newer ones queue up behind them.
            self._journal(live)
            return
        try:
            stored = self.store.append_many([append for append, _ in live])
        except Exception as exc:
            if isinstance(exc, StoreUnavailable) and self.journal is not None:
                self._mark_down()
                self._journal(live, exc)
                return
            if len(live) == 1 or isinstance(exc, StoreUnavailable):
                # The store's own error for each: a store that is down or locked would only
                # fail each decision again, one timeout at a time.
                for _, future in live:
                    _settle(future, error=exc)
                return
            # One bad decision must not fail the others of its batch: each alone, then.
            log.warning("a batch of %d decisions failed (%s); storing them one by one",
                        len(live), exc)  # fmt: skip
            for item in live:
                self._write_one(item)
            return
        self.batches += 1
        self.appended += len(live)
        for (_, future), result in zip(live, stored, strict=True):
            _settle(future, result=result)

    def _journal(
        self, live: list[tuple[Append, Future[StoredDecision]]], exc: Exception | None = None
    ) -> None:
        """The store cannot take `live`: journal it, or fail each request with `exc` (the
        store's own error, when it gave one)."""
        exc = exc or StoreUnavailable("the decision store is unavailable")
        assert self.journal is not None
        try:
            stored = self.journal.write([append for append, _ in live])
        except OSError as error:
            self.journal_error = f"the decision journal cannot be written: {error}"
            log.error("%s; %d decisions failed", self.journal_error, len(live))
            for _, future in live:
                _settle(future, error=exc)
            return
        self.journal_error = None
        for (_, future), result in zip(live, stored, strict=True):
            _settle(future, result=result)

    def _idle_wait(self) -> float | None:
        """How long the writer waits for work before it turns to the journal: not at all
        without one; a moment while a backlog drains into a store that answers; else
        `retry_s`."""
        if self.journal is None:
            return None
        if self.journal.pending and not self._store_down:
            return 0.005
        return self.retry_s

    def _mark_down(self) -> None:
        """The store failed: journal from now on, until the probe finds it writable."""
        with self._probe_lock:
            self._store_down = True
            if self._probe is None:
                self._probe = threading.Thread(
                    target=self._run_probe, name="store-probe", daemon=True
                )
                self._probe.start()

    def _run_probe(self) -> None:
        while not self._stopped:
            time.sleep(self.retry_s)
            try:
                problem = self.store.writable_problem()
            except Exception as exc:  # a bug must not end the probe with the store marked down
                problem = str(exc)
            if problem is None:
                with self._probe_lock:  # a failure from now on starts a new probe
                    self._store_down = False
                    self._probe = None
                log.info("the decision store can write again")
                return
        with self._probe_lock:
            self._probe = None

    def _drain(self, at_least: int = 0) -> bool:
        """Replay the journal into the store (a chunk, or `at_least` decisions: a backlog
        drains faster than new batches join it); True when nothing of this process's is
        pending. Orphan journals are adopted every few seconds, store or no store."""
        journal = self.journal
        if journal is None:
            return True
        now = time.monotonic()
        if now - self._orphans_checked_at >= 5 * self.retry_s:
            self._orphans_checked_at = now
            try:
                suspended = journal.adopt_orphans()
            except OSError as exc:
                log.error("orphan journals not adopted: %s", exc)
            else:
                if suspended and self.on_adopted is not None:
                    self.on_adopted(suspended)
        if not journal.pending:
            return True
        if self._store_down:
            return False
        try:
            journal.replay_own(self.store, limit=max(_REPLAY_CHUNK, at_least))
        except StoreUnavailable:
            self._mark_down()
            return False
        except Exception:  # a bug: keep serving from the journal, the probe says when to retry
            log.exception("replaying the decision journal failed")
            self._mark_down()
            return False
        if journal.pending:
            return False
        log.info("the journal is replayed (%d decisions since start)", journal.replayed)
        return True

    def _write_one(self, item: tuple[Append, Future[StoredDecision]]) -> None:
        append, future = item
        if self.journal is not None and (self._store_down or self.journal.pending):
            self._journal([item])
            return  # behind what is journaled already, in order
        try:
            # `recover`: the failed batch may have committed after all (a commit that raised);
            # a decision already stored comes back as stored, not appended twice.
            [result] = self.store.append_many([append], recover=True)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable) and self.journal is not None:
                # The store went down meanwhile (its batch failed some other way first): the
                # journal's replay recovers it the same way, should the batch have committed.
                self._mark_down()
                self._journal([item], exc)
                return
            _settle(future, error=exc)
            return
        self.batches += 1
        self.appended += 1
        _settle(future, result=result)


def _settle(
    future: Future[StoredDecision],
    *,
    result: StoredDecision | None = None,
    error: BaseException | None = None,
) -> None:
    """Hand the outcome to the waiting request; the writer must survive whatever happened to
    the request meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except Exception:  # InvalidStateError: settled already; nothing to hand over
        log.debug("a decision's request was gone when its outcome came", exc_info=True)

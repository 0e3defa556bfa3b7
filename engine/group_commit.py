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

Reads (`get_by_payment`, `account_status`, `suspended_accounts`) go straight to the store.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from engine.accounts import AccountState
from engine.errors import StoreUnavailable
from engine.records import DecisionRecord, StoredDecision
from engine.store import Append, DecisionStore

log = logging.getLogger("arbiter.group_commit")


class GroupCommitter:
    def __init__(self, store: DecisionStore, *, max_batch: int = 256, wait_s: float = 30.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.wait_s = wait_s  # a synchronous caller's longest wait for its decision
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
        self._ensure_started()
        future: Future[StoredDecision] = Future()
        self._queue.put((Append(record, suspend, notification), future))
        return future

    def get_by_payment(self, payment_id: str) -> StoredDecision | None:
        return self.store.get_by_payment(payment_id)

    def account_status(self, account_id: str) -> AccountState:
        return self.store.account_status(account_id)

    def suspended_accounts(self) -> dict[str, str | None]:
        return self.store.suspended_accounts()

    # --- the writer -----------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="decision-writer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the writer; later submits are refused."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
        # Whatever is still queued (the writer did not finish in time) fails, never hangs.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _settle(item[1], error=StoreUnavailable("the decision writer is stopped"))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
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
        try:
            stored = self.store.append_many([append for append, _ in live])
        except Exception as exc:
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

    def _write_one(self, item: tuple[Append, Future[StoredDecision]]) -> None:
        append, future = item
        try:
            # `recover`: the failed batch may have committed after all (a commit that raised);
            # a decision already stored comes back as stored, not appended twice.
            [result] = self.store.append_many([append], recover=True)
        except Exception as exc:
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

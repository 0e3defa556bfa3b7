"""Group commit: many requests' decisions stored in one transaction, each request still
answered only once its own decision is durable.

Every decision must be in the store before its answer, and a SQLite commit (an fsync) or a
PostgreSQL round trip costs more than building the decision. `GroupCommitter.append_decision`
hands the decision to one writer thread and waits; the writer takes everything that queued up
meanwhile (up to `max_batch`) and stores it with `DecisionStore.append_many`: one transaction,
one commit, the chain order the queue order. Under light load a batch is one decision (the same
latency as a direct write, plus a thread hand-off); under heavy load the commit's cost is
shared. A failed batch fails each of its requests with the store's error (nothing of it is
stored), as a direct write would have.

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
from engine.records import DecisionRecord, StoredDecision
from engine.store import Append, DecisionStore

log = logging.getLogger("arbiter.group_commit")


class GroupCommitter:
    def __init__(self, store: DecisionStore, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Append, Future[StoredDecision]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # how many transactions; with `appended`, the mean batch size
        self.appended = 0

    # --- what the service calls -----------------------------------------------------------------

    def append_decision(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> StoredDecision:
        """Store the decision (with the writer's next batch) and return once it is durable."""
        return self.submit(record, suspend=suspend, notification=notification).result()

    def submit(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> Future[StoredDecision]:
        """Queue the decision for the writer's next batch; the future is done once it is
        durable (or failed with the store's error)."""
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
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="decision-writer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

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
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[Append, Future[StoredDecision]]]) -> None:
        try:
            stored = self.store.append_many([append for append, _ in batch])
        except Exception as exc:  # each waiting request gets the store's own error
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.appended += len(batch)
        for (_, future), result in zip(batch, stored, strict=True):
            future.set_result(result)

"""The decision journal: where decisions go while the decision store cannot take them.

A decision is answered only once it is durable. When the store is down (PostgreSQL stopped, a
SQLite file locked or on a full disk), the decision writer (`engine.group_commit`) appends the
batch to this journal instead: one JSON line per decision (the record, the suspension flag and
the customer notification: everything its store transaction would have held), written and
`fsync`ed before the requests are answered. Once the store answers again the writer replays
the journal into it, oldest first, with `append_many(recover=True)`: a decision whose id is
stored already comes back as stored, a payment decided meanwhile keeps its first decision, so
a replay that is cut off and run again stores nothing twice. The chain links are made at replay
time, in journal order.

Each process writes a file of its own (`<host>-<pid>-<random>.jsonl` in the journal folder) and
holds an exclusive `flock` on it while it lives. A file whose lock can be taken belongs to a
process that is gone (crashed, killed, restarted): any process replays it, then deletes it. A
line cut short by a crash was never answered (the fsync had not returned): it is skipped.

While a decision is only journaled, this process finds it by payment (a retry gets it back),
and the account status and suspension list include its suspension. Other processes do not see
it until it is replayed (within a second or so of the store's return).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from engine.records import DecisionRecord, StoredDecision
from engine.store import Append

log = logging.getLogger("arbiter.journal")

SUFFIX = ".jsonl"
_REPLAY_BATCH = 64  # decisions per replay transaction


class Appender(Protocol):
    def append_many(
        self, batch: Sequence[Append], *, recover: bool = False
    ) -> list[StoredDecision]: ...


def entry(append: Append) -> bytes:
    """One journal line (with its newline)."""
    notification = dict(append.notification) if append.notification is not None else None
    record = append.record.to_json()
    body = {"record": record, "suspend": append.suspend, "notification": notification}
    return orjson.dumps(body) + b"\n"


def parse(line: bytes) -> Append:
    body = orjson.loads(line)
    record = DecisionRecord.from_json(body["record"])
    return Append(record, bool(body["suspend"]), body["notification"])


def pending_copy(append: Append) -> StoredDecision:
    """What a journaled decision is until it is replayed: no place in the chain yet."""
    return StoredDecision(append.record, seq=0, prev_hash="", hash="", journaled=True)


class DecisionJournal:
    """This process's journal file, and the orphans of processes that are gone. All writes and
    replays come from one thread (the decision writer); reads of the pending decisions may come
    from any."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._fd: int | None = None  # opened on the first write: a process that never journals
        self._lock = threading.Lock()  # leaves no file behind
        self._pending: list[Append] = []  # in journal order, not yet in the store
        self._by_payment: dict[str, Append] = {}
        self.journaled = 0  # decisions written here since start
        self.replayed = 0  # decisions moved into the store since start (orphans included)

    # --- what requests read ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def by_payment(self, payment_id: str) -> StoredDecision | None:
        with self._lock:
            append = self._by_payment.get(payment_id)
        return pending_copy(append) if append is not None else None

    def suspended(self) -> dict[str, str]:
        """Accounts that a pending decision suspends, with that decision."""
        with self._lock:
            return {a.record.account_id: a.record.decision_id for a in self._pending if a.suspend}

    # --- the writer's side ----------------------------------------------------------------------

    def write(self, batch: Sequence[Append]) -> list[StoredDecision]:
        """Append `batch` and fsync; raises OSError when the journal cannot be written (then
        nothing of the batch counts as journaled)."""
        data = b"".join(entry(a) for a in batch)
        fd = self._open()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            # A partial line would be skipped on replay, but the next good write must not join
            # it: cut the file back to where this batch began.
            os.ftruncate(fd, start)
            raise
        with self._lock:
            self._pending.extend(batch)
            for append in batch:
                if append.record.payment_id is not None:
                    self._by_payment.setdefault(append.record.payment_id, append)
        self.journaled += len(batch)
        return [pending_copy(a) for a in batch]

    def replay_own(self, store: Appender, *, limit: int | None = None) -> None:
        """Move this process's pending decisions into the store, oldest first (at most
        `limit` of them: a long backlog goes in a chunk at a time, between new batches);
        raises the store's error when it still cannot take them (what went in stays in, the
        rest stays pending)."""
        moved = 0
        while self._pending and (limit is None or moved < limit):
            chunk = self._pending[:_REPLAY_BATCH]
            store.append_many(chunk, recover=True)
            with self._lock:
                del self._pending[: len(chunk)]
                for append in chunk:
                    payment_id = append.record.payment_id
                    if payment_id is not None and self._by_payment.get(payment_id) is append:
                        del self._by_payment[payment_id]
            self.replayed += len(chunk)
            moved += len(chunk)
        if self._pending:
            return
        if self._fd is not None and os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, 0)  # all in the store: the file starts over
            os.fsync(self._fd)

    def replay_orphans(self, store: Appender) -> int:
        """Replay and delete the files of processes that are gone; how many decisions."""
        moved = 0
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path == self.path:
                continue
            moved += self._replay_orphan(path, store)
        return moved

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if not self._pending:
                self.path.unlink(missing_ok=True)

    # --- files ----------------------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Locked under a name no replayer looks at, then renamed: nobody can take an empty
            # new file for an orphan.
            hidden = self.path.with_suffix(".new")
            fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, self.path)
            _fsync_folder(self.folder)
            self._fd = fd
        return self._fd

    def _replay_orphan(self, path: Path, store: Appender) -> int:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0  # another process replayed it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its process is alive
            if os.fstat(fd).st_nlink == 0:
                return 0  # replayed and deleted by another process while this one waited
            with os.fdopen(os.dup(fd), "rb") as file:
                appends = list(_lines(file, path))
            for i in range(0, len(appends), _REPLAY_BATCH):
                store.append_many(appends[i : i + _REPLAY_BATCH], recover=True)
            path.unlink()
            _fsync_folder(self.folder)
            self.replayed += len(appends)
            if appends:
                log.info("replayed %d journaled decisions of %s", len(appends), path.name)
            return len(appends)
        finally:
            os.close(fd)  # the lock goes with it


def _lines(file: Any, path: Path) -> Iterator[Append]:
    for number, line in enumerate(file, 1):
        if not line.endswith(b"\n"):
            log.warning("%s: line %d is cut short (never answered); skipped", path.name, number)
            return
        yield parse(line)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

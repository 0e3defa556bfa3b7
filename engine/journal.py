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
process that is gone (crashed, killed, restarted): any process adopts it (its decisions are
journaled again in the adopter's own file, fsync'd, then the orphan is deleted), which needs no
store, and replays it with its own, a chunk at a time. A line cut short by a crash was never
answered (the fsync had not returned): it is skipped; a line that does not parse, or a decision
the store refuses for good (not merely unavailable), is set aside in `<file>.refused` with the
reason and logged, so that it cannot block the rest.

While a decision is only journaled, this process finds it by payment (a retry gets it back; a
payment is journaled once), and the account status and suspension list include its
suspension. Other processes do not see it until it is replayed (within a second or so of the
store's return): a retry they decide again is stored instead, and the replay logs the
journaled decision as superseded (`superseded`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from engine.errors import StoreError, StoreUnavailable
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
        self._closed = False  # leaves no file behind
        self._lock = threading.Lock()
        self._pending: list[Append] = []  # in journal order, not yet in the store
        self._by_payment: dict[str, Append] = {}
        self._suspending: dict[str, str] = {}  # account -> the pending decision suspending it
        self.journaled = 0  # decisions written here since start (orphans adopted included)
        self.replayed = 0  # decisions moved into the store since start
        self.refused = 0  # decisions the store refused for good (kept in the .refused file)
        self.superseded = 0  # payments the store had decided already, by another decision

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
            return dict(self._suspending)

    # --- the writer's side ----------------------------------------------------------------------

    def write(self, batch: Sequence[Append]) -> list[StoredDecision]:
        """Append `batch` and fsync; raises OSError when the journal cannot be written (then
        nothing of the batch counts as journaled). A payment pending already, or earlier in
        the batch, is not journaled twice: its first decision comes back, `replayed`."""
        out: list[StoredDecision] = []
        new: list[Append] = []
        seen: dict[str, Append] = {}
        with self._lock:
            for append in batch:
                payment_id = append.record.payment_id
                first = None
                if payment_id is not None:
                    first = self._by_payment.get(payment_id) or seen.get(payment_id)
                if first is not None:
                    out.append(replace(pending_copy(first), replayed=True))
                    continue
                if payment_id is not None:
                    seen[payment_id] = append
                new.append(append)
                out.append(pending_copy(append))
        if not new:
            return out
        data = b"".join(entry(a) for a in new)
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
            self._pending.extend(new)
            for append in new:
                if append.record.payment_id is not None:
                    self._by_payment[append.record.payment_id] = append
                if append.suspend:
                    self._suspending[append.record.account_id] = append.record.decision_id
        self.journaled += len(new)
        return out

    def replay_own(self, store: Appender, *, limit: int | None = None) -> None:
        """Move this process's pending decisions into the store, oldest first (at most
        `limit` of them: a long backlog goes in a chunk at a time, between new batches);
        raises `StoreUnavailable` when the store still cannot take them (what went in stays
        in, the rest stays pending). A decision the store refuses for another reason is set
        aside in `<file>.refused` (with the reason) so that it cannot block the others."""
        moved = 0
        while self._pending and (limit is None or moved < limit):
            chunk = self._pending[:_REPLAY_BATCH]
            try:
                stored: list[StoredDecision | None] = list(store.append_many(chunk, recover=True))
            except StoreUnavailable:
                raise
            except StoreError:
                stored = self._one_by_one(store, chunk)
            self._note_superseded(chunk, stored)
            with self._lock:
                del self._pending[: len(chunk)]
                for append in chunk:
                    payment_id = append.record.payment_id
                    if payment_id is not None and self._by_payment.get(payment_id) is append:
                        del self._by_payment[payment_id]
                    if self._suspending.get(append.record.account_id) == append.record.decision_id:
                        del self._suspending[append.record.account_id]
            self.replayed += len(chunk)
            moved += len(chunk)
        if self._pending:
            return
        if self._fd is not None and os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, 0)  # all in the store: the file starts over
            os.fsync(self._fd)

    def adopt_orphans(self) -> dict[str, str]:
        """Take over the files of processes that are gone: their decisions are journaled here
        (fsync'd), the files deleted; the store is not needed for that, and the replay then
        goes a chunk at a time like this process's own. Returns the suspensions adopted
        (account -> decision), for the caller to flag."""
        suspended: dict[str, str] = {}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path != self.path:
                for append in self._adopt(path):
                    if append.suspend:
                        suspended[append.record.account_id] = append.record.decision_id
        return suspended

    def close(self) -> None:
        """No more writes; the file stays when decisions are still pending (the next process
        adopts it)."""
        self._closed = True
        if self._fd is not None:
            if not self._pending:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    # --- files ----------------------------------------------------------------------------------

    def _open(self) -> int:
        if self._closed:
            raise OSError("the decision journal is closed")
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Created and locked under a name no replayer looks at, then linked under its own
            # name (which fails rather than replace a file): nobody takes an empty new file for
            # an orphan, and nothing is overwritten.
            hidden = self.path.with_suffix(".new")
            fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.link(hidden, self.path)
            os.unlink(hidden)
            _fsync_folder(self.folder)
            self._fd = fd
        return self._fd

    def _one_by_one(self, store: Appender, chunk: Sequence[Append]) -> list[StoredDecision | None]:
        """A chunk the store refused, a decision at a time: the ones it refuses are set aside,
        unless it refuses them all (then the store is at fault, not the decisions: a read-only
        database, a missing table) and nothing is set aside."""
        stored: list[StoredDecision | None] = []
        refused: list[tuple[Append, StoreError]] = []
        for append in chunk:
            try:
                [done] = store.append_many([append], recover=True)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                refused.append((append, exc))
                stored.append(None)
                continue
            stored.append(done)
        if len(refused) == len(chunk):
            raise StoreUnavailable(f"the store refused every journaled decision: {refused[0][1]}")
        for append, error in refused:
            self._refuse(entry(append), f"the store refused it: {error}")
        return stored

    def _refuse(self, line: bytes, reason: str) -> None:
        refused = self.path.with_suffix(".refused")
        with refused.open("ab") as file:
            file.write(orjson.dumps({"reason": reason}) + b"\n" + line.rstrip(b"\n") + b"\n")
            file.flush()
            os.fsync(file.fileno())
        self.refused += 1
        log.error("a journaled decision was set aside in %s: %s", refused.name, reason)

    def _note_superseded(self, chunk: Sequence[Append], stored: Sequence[Any]) -> None:
        for append, done in zip(chunk, stored, strict=True):
            if done is not None and done.decision_id != append.record.decision_id:
                self.superseded += 1
                log.warning("payment %s: journaled decision %s not stored, the store had decided "
                            "it already (%s)", append.record.payment_id, append.record.decision_id,
                            done.decision_id)  # fmt: skip

    def _adopt(self, path: Path) -> list[Append]:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return []  # another process adopted it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # its process is alive
            if os.fstat(fd).st_nlink == 0:
                return []  # adopted and deleted by another process while this one waited
            with os.fdopen(os.dup(fd), "rb") as file:
                appends = list(self._lines(file, path))
            kept = []
            if appends:
                written = self.write(appends)  # fsync'd here before the orphan goes
                self._note_superseded(appends, written)  # a payment pending here already
                kept = [a for a, w in zip(appends, written, strict=True)
                        if w.decision_id == a.record.decision_id]  # fmt: skip
            path.unlink()
            _fsync_folder(self.folder)
            if appends:
                log.info("adopted %d journaled decisions of %s", len(appends), path.name)
            return kept
        finally:
            os.close(fd)  # the lock goes with it

    def _lines(self, file: Any, path: Path) -> Iterator[Append]:
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                log.warning("%s: line %d is cut short (never answered); skipped", path.name, number)
                return
            try:
                yield parse(line)
            except Exception as exc:  # damaged (a torn write): kept aside, the rest goes on
                self._refuse(line, f"{path.name} line {number} does not parse: {exc}")


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

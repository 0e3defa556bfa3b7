"""The decision writer in a process of its own: `engine.group_commit` behind a local socket.

The group commit's writer thread shares the serving process's interpreter lock with the event
loop: composing a batch's rows (hashes, JSON) and running its statements took about as much
interpreter time as deciding the payments, and every request waited for both. `WriterProcess`
runs the same `GroupCommitter`, with its store, journal, fallback, probe and orphan adoption,
in a child process (`python -m engine.writer_process`), and offers the serving process the
committer's interface over a Unix socket pair:

- `submit` pickles the decision and writes it to the socket (a few tens of microseconds); the
  child's reader thread hands it to its committer at once, so the socket's buffer never waits
  for the store. A reader thread here gets the outcomes back, a batch per message, and settles
  each request's future. A decision stored as it was sent comes back as its chain position
  and hash only; the record is the one this process holds.
- `get_by_payment`, `account_status` and `suspended_accounts` are calls answered by the child,
  so what is still only journaled there counts, as before.
- `batches`, `appended`, `journal_pending`, `journal_error` and the journal's counters are the
  child's, as of its last message (each batch's answer carries them; an idle child sends them
  every second).
- Cancelling a request's future before the child's writer takes its decision keeps it out of
  the store, as with the thread.

When the child dies, every request waiting on it fails with `StoreUnavailable` (a decision may
have been committed just before: the payment's retry finds it, `payment_id` being the
idempotency key), and a new child is started; it adopts the dead one's journal as an orphan,
so nothing journaled is lost. When this process goes, the child reads the end of its socket,
stores what is queued and exits. `stop` does the same on purpose and waits for it.

`ARBITER_DECISION_WRITER=thread` keeps the writer in the serving process (docs/decisions.md).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.accounts import AccountState
from engine.errors import StoreError, StoreUnavailable
from engine.records import DecisionRecord, StoredDecision

log = logging.getLogger("arbiter.writer_process")
_HEADER = struct.Struct("<I")
_CALLS = ("get_by_payment", "account_status", "suspended_accounts")
_STATUS_EVERY_S = 1.0  # an idle child's counters, this often
_RESTART_AFTER_S = 1.0  # a child that died is started again after this long


@dataclass(frozen=True)
class WriterConfig:
    """What the child needs to build its store, journal and committer (JSON on its argv)."""

    database_url: str
    busy_timeout_s: float = 2.0
    journal_dir: str | None = None
    max_batch: int = 256
    retry_s: float = 1.0


class JournalView:
    """The child's journal counters, for `/metrics` and `/readyz` (the journal's own object
    lives in the child; closing it is the child's, at `stop`)."""

    def __init__(self, owner: WriterProcess) -> None:
        self._owner = owner

    def _get(self, name: str) -> int:
        journal = self._owner.status.get("journal") or {}
        return int(journal.get(name, 0))

    @property
    def pending(self) -> int:
        return self._get("pending")

    @property
    def journaled(self) -> int:
        return self._get("journaled")

    @property
    def replayed(self) -> int:
        return self._get("replayed")

    def close(self) -> None:
        """Nothing here: the child closes its journal when it stops."""


class WriterProcess:
    def __init__(
        self,
        config: WriterConfig,
        *,
        wait_s: float = 30.0,
        start_timeout_s: float = 60.0,
        send_timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self.wait_s = wait_s  # a synchronous caller's longest wait for its decision
        self.start_timeout_s = start_timeout_s
        self.send_timeout_s = send_timeout_s
        self.on_adopted: Callable[[dict[str, str]], None] | None = None
        self.status: dict[str, Any] = {}  # the child's counters, from its last message
        self._journal = JournalView(self) if config.journal_dir else None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the child, its socket and what waits on it
        self._send_lock = threading.Lock()
        self._waiting: dict[int, tuple[Future[Any], DecisionRecord | None]] = {}
        self._child: subprocess.Popen[bytes] | None = None
        self._send: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._generation = 0  # which child the reader thread serves
        self._stopped = False
        self.restarts = 0

    # --- the committer's interface --------------------------------------------------------------

    @property
    def batches(self) -> int:
        return int(self.status.get("batches", 0))

    @property
    def appended(self) -> int:
        return int(self.status.get("appended", 0))

    @property
    def journal(self) -> JournalView | None:
        return self._journal

    @property
    def journal_pending(self) -> int:
        return self._journal.pending if self._journal is not None else 0

    @property
    def journal_error(self) -> str | None:
        error = self.status.get("journal_error")
        return str(error) if error is not None else None

    def append_decision(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> StoredDecision:
        """Store the decision (with the child's next batch) and return once it is durable."""
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
        """Send the decision to the child's next batch; the future is done once it is durable
        (or failed with the store's error). Cancelling it before the child's writer takes it
        keeps the decision out of the store."""
        from engine.store import Append

        future: Future[StoredDecision] = Future()
        ident = self._ask(("a", Append(record, suspend, notification)), future, record)
        future.add_done_callback(lambda done: self._cancelled(ident, done))
        return future

    def get_by_payment(self, payment_id: str) -> StoredDecision | None:
        result: StoredDecision | None = self._call("get_by_payment", payment_id)
        return result

    def account_status(self, account_id: str) -> AccountState:
        result: AccountState = self._call("account_status", account_id)
        return result

    def suspended_accounts(self) -> dict[str, str | None]:
        result: dict[str, str | None] = self._call("suspended_accounts")
        return result

    # --- the child ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child if it is not running, and wait until it can take decisions."""
        with self._lock:
            if self._stopped:
                raise StoreUnavailable("the decision writer is stopped")
            if self._child is not None and self._child.poll() is None:
                return
            self._spawn()

    def stop(self, timeout: float = 10.0) -> bool:
        """Have the child store what is queued and exit; later submits are refused. Returns
        whether it has ended."""
        with self._lock:
            self._stopped = True
            child, sock, reader = self._child, self._send, self._reader
        if child is None:
            return True
        if sock is not None:
            with contextlib.suppress(OSError):  # gone already: its end is the same stop
                self._write(sock, ("s",))
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the decision writer process did not stop in %g s; killed", timeout)
            child.kill()
            child.wait()
            return False
        finally:
            if reader is not None:
                reader.join(timeout=5)
            if sock is not None:
                sock.close()
            self._fail_all(StoreUnavailable("the decision writer is stopped"))
        return child.returncode == 0

    def _spawn(self) -> None:
        """Under `_lock`: a new child, its socket and its reader thread."""
        # One socket pair each way: the sending end's timeout (a non-blocking descriptor) is
        # its own, the reading end blocks.
        send, child_in = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_out, parent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (send, child_out):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for end in (child_in, parent):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        fds = (child_in.fileno(), child_out.fileno())
        command = [sys.executable, "-m", "engine.writer_process", *map(str, fds),
                   json.dumps(self.config.__dict__)]  # fmt: skip
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p
        )}  # fmt: skip
        try:
            child = subprocess.Popen(command, pass_fds=fds, env=env)
        except BaseException:
            send.close()
            parent.close()
            raise
        finally:
            child_in.close()
            child_out.close()
        frames = _frames(parent)  # one reader of the socket's bytes, from the first message on
        try:
            status = self._await_ready(parent, frames, child)
        except BaseException:
            child.kill()
            child.wait()
            send.close()
            parent.close()
            raise
        self.status = status
        send.settimeout(self.send_timeout_s)
        self._generation += 1
        self._child, self._send = child, send
        self._reader = threading.Thread(
            target=self._read, args=(parent, frames, child, self._generation),
            name="decision-writer-reader", daemon=True,
        )  # fmt: skip
        self._reader.start()

    def _await_ready(
        self, sock: socket.socket, frames: Iterator[tuple[Any, ...]], child: subprocess.Popen[bytes]
    ) -> dict[str, Any]:
        sock.settimeout(self.start_timeout_s)
        try:
            message = next(frames, None)
        except TimeoutError:
            raise StoreUnavailable(
                f"the decision writer process did not start within {self.start_timeout_s:g} s"
            ) from None
        finally:
            sock.settimeout(None)
        if message is None or message[0] != "ready":
            code = child.wait(timeout=5)
            raise StoreUnavailable(f"the decision writer process exited at start (code {code})")
        return dict(message[1])

    def _read(
        self,
        sock: socket.socket,
        frames: Iterator[tuple[Any, ...]],
        child: subprocess.Popen[bytes],
        generation: int,
    ) -> None:
        """The child's answers, until it ends; then whatever waits on it fails, and a new
        child is started unless this is a stop."""
        try:
            for message in frames:
                self._handle(message)
        except Exception:  # a bug or a broken socket: the same as the child's end
            log.exception("reading the decision writer process failed")
        code = child.wait()
        sock.close()
        with self._lock:
            if generation != self._generation:
                return
            self._child = None
            if self._send is not None:
                self._send.close()
                self._send = None
            stopped = self._stopped
        self._fail_all(StoreUnavailable(f"the decision writer process ended (code {code})"))
        if stopped:
            return
        log.error("the decision writer process ended (code %s); starting another", code)
        while True:
            time.sleep(_RESTART_AFTER_S)
            try:
                with self._lock:
                    if self._stopped or self._child is not None:
                        return
                    self._spawn()
                    self.restarts += 1
                return
            except Exception:
                log.exception("the decision writer process could not be started again")

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "r":
            for ident, ok, payload in message[1]:
                with self._lock:
                    waiting = self._waiting.pop(ident, None)
                if waiting is None:
                    continue
                future, record = waiting
                if not ok:
                    _settle(future, error=payload)
                elif record is not None and payload[0] == "same":
                    _settle(future, result=StoredDecision(record, *payload[1:]))
                else:
                    _settle(future, result=payload[1])
            self.status = message[2]
        elif kind == "t":
            self.status = message[1]
        elif kind == "o" and self.on_adopted is not None:
            try:
                self.on_adopted(message[1])
            except Exception:
                log.exception("flagging the adopted suspensions failed")

    # --- the socket -----------------------------------------------------------------------------

    def _ask(
        self, body: tuple[Any, ...], future: Future[Any], record: DecisionRecord | None
    ) -> int:
        ident = next(self._ids)
        with self._lock:
            if self._stopped:
                raise StoreUnavailable("the decision writer is stopped")
            if self._generation == 0:  # the first use, before `start`: the child now
                self._spawn()
            sock = self._send
            if sock is None:
                raise StoreUnavailable("the decision writer process is starting again")
            self._waiting[ident] = (future, record)
        try:
            self._write(sock, (body[0], ident, *body[1:]))
        except OSError as exc:  # the child is gone or stuck: its reader restarts it
            with self._lock:
                self._waiting.pop(ident, None)
            raise StoreUnavailable(f"the decision writer process cannot be reached: {exc}") from exc
        return ident

    def _call(self, name: str, *args: Any) -> Any:
        future: Future[Any] = Future()
        self._ask(("c", name, args), future, None)
        try:
            return future.result(timeout=self.wait_s)
        except TimeoutError:
            raise StoreUnavailable(
                f"the decision writer process did not answer {name} within {self.wait_s:g} s"
            ) from None

    def _write(self, sock: socket.socket, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            sock.sendall(_HEADER.pack(len(data)) + data)

    def _cancelled(self, ident: int, future: Future[Any]) -> None:
        if not future.cancelled():
            return
        with self._lock:
            self._waiting.pop(ident, None)
            sock = self._send
        if sock is not None:
            with contextlib.suppress(OSError):  # the child is gone: it stores nothing more
                self._write(sock, ("x", ident))

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            _settle(future, error=error)


def _frames(sock: socket.socket) -> Iterator[tuple[Any, ...]]:
    """The messages on `sock` (a length, then a pickle), until its end."""
    buffer = bytearray()
    while True:
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            end = _HEADER.size + size
            if len(buffer) < end:
                break
            message = pickle.loads(memoryview(buffer)[_HEADER.size : end])
            del buffer[:end]
            yield message
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        buffer += chunk


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # settled already (cancelled): nothing to hand over
        log.debug("a decision's request was gone when its outcome came", exc_info=True)


# --- the child ----------------------------------------------------------------------------------


class _Outbox:
    """The child's answers: outcomes gathered into one message per batch, counters when idle."""

    def __init__(self, sock: socket.socket, status: Callable[[], dict[str, Any]]) -> None:
        self._sock = sock
        self._status = status
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="writer-outbox", daemon=True)
        self._thread.start()

    def result(self, ident: int, ok: bool, payload: Any) -> None:
        self._queue.put(("r", ident, ok, payload))

    def put(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)

    def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._sock.sendall(_HEADER.pack(len(data)) + data)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_STATUS_EVERY_S)
            except queue.Empty:
                self._safe(("t", self._status()))
                continue
            items = [item]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            results = [i[1:] for i in items if i is not None and i[0] == "r"]
            for other in (i for i in items if i is not None and i[0] != "r"):
                self._safe(other)
            if results:
                self._safe(("r", results, self._status()))
            if any(i is None for i in items):
                return

    def _safe(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the serving process is gone: nobody to answer
            self.send(message)


def _payload(result: StoredDecision, sent: DecisionRecord) -> tuple[Any, ...]:
    """An outcome as sent back: the chain position and hash when it is the decision sent (the
    serving process has its record), the whole stored decision otherwise (a retry's first)."""
    if result.record is sent:
        return ("same", result.seq, result.prev_hash, result.hash, result.deferred,
                result.replayed, result.purged, result.journaled)  # fmt: skip
    return ("whole", result)


def _error(exc: BaseException) -> BaseException:
    """`exc` if it crosses the socket intact, else a `StoreError` saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return StoreError(f"the decision writer failed: {type(exc).__name__}: {exc}")
    return exc


def child_main(fd_in: int, fd_out: int, config: WriterConfig) -> int:
    from engine.group_commit import GroupCommitter
    from engine.journal import DecisionJournal
    from engine.store import DecisionStore

    sys.setswitchinterval(0.0005)  # the reader and the outbox wait little for the writer
    # The child ends when its serving process does (the end of its socket), after storing what
    # is queued: a signal to the process group (Ctrl-C, a service manager's stop) is the
    # serving process's to act on, not a reason to drop decisions here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd_in)
    out = socket.socket(fileno=fd_out)
    store = DecisionStore(config.database_url, busy_timeout_s=config.busy_timeout_s)
    journal = DecisionJournal(Path(config.journal_dir)) if config.journal_dir else None
    committer = GroupCommitter(
        store, max_batch=config.max_batch, journal=journal, retry_s=config.retry_s
    )

    def status() -> dict[str, Any]:
        return {
            "batches": committer.batches, "appended": committer.appended,
            "journal": None if journal is None else {
                "pending": journal.pending, "journaled": journal.journaled,
                "replayed": journal.replayed,
            },
            "journal_error": committer.journal_error,
        }  # fmt: skip

    outbox = _Outbox(out, status)
    committer.on_adopted = lambda suspended: outbox.put(("o", suspended))
    committer.start()
    calls = ThreadPoolExecutor(max_workers=2, thread_name_prefix="writer-call")
    submitted: dict[int, Future[StoredDecision]] = {}
    guard = threading.Lock()

    def appended(ident: int, sent: DecisionRecord, future: Future[StoredDecision]) -> None:
        with guard:
            submitted.pop(ident, None)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            outbox.result(ident, False, _error(error))
        else:
            outbox.result(ident, True, _payload(future.result(), sent))

    def call(ident: int, name: str, args: tuple[Any, ...]) -> None:
        try:
            value = getattr(committer, name)(*args)
        except Exception as exc:
            outbox.result(ident, False, _error(exc))
        else:
            outbox.result(ident, True, ("whole", value))

    outbox.send(("ready", status()))
    try:
        for message in _frames(sock):
            kind = message[0]
            if kind == "a":
                _, ident, append = message
                try:
                    future = committer.submit(
                        append.record, suspend=append.suspend, notification=append.notification
                    )
                except Exception as exc:
                    outbox.result(ident, False, _error(exc))
                    continue
                with guard:
                    submitted[ident] = future
                future.add_done_callback(functools.partial(appended, ident, append.record))
            elif kind == "x":
                with guard:
                    queued = submitted.get(message[1])
                if queued is not None:
                    queued.cancel()
            elif kind == "c":
                _, ident, name, args = message
                if name not in _CALLS:
                    outbox.result(ident, False, StoreError(f"no such call: {name}"))
                else:
                    calls.submit(call, ident, name, args)
            elif kind == "s":
                break
    finally:
        # Stopped, or the serving process is gone: what is queued is stored, then the end.
        ended = committer.stop()
        if ended and journal is not None:
            journal.close()
        calls.shutdown(wait=True)
        outbox.close()
        store.close()
        sock.close()
        out.close()
    return 0 if ended else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sys.exit(
        child_main(int(sys.argv[1]), int(sys.argv[2]), WriterConfig(**json.loads(sys.argv[3])))
    )

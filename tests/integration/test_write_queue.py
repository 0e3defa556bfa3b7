"""The SQLite write queue of engine/database.py: writers of one database file take turns on a
lock of their own (`<database>.write-lock`: a thread lock in the process, an flock across
processes) before SQLite's write lock, and stop queueing past the busy timeout.

Another process holds the flock here (a real child process, as a second uvicorn worker would),
so what is checked is the queue itself, not SQLite's own busy handler.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from engine.database import _write_locks, connect, writing

_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # released when the test says so (or when it closes the pipe)
"""


def _hold(lock_path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    holder.stdout.close()


def _engine(path: Path, busy_timeout_s: float) -> sa.Engine:
    engine = connect(f"sqlite:///{path}", busy_timeout_s=busy_timeout_s)
    with writing(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    return engine


def _insert_in_thread(engine: sa.Engine, n: int) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def write() -> None:
        with writing(engine) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (n,))
        done.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, done


def _written(engine: sa.Engine) -> list[int]:
    """What the writers stored, in insertion order; the engine is disposed."""
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT n FROM t ORDER BY rowid").scalars())
    finally:
        engine.dispose()


def test_a_writer_waits_for_another_process_in_the_queue_then_goes_on(tmp_path):
    db = tmp_path / "queue.db"
    engine = _engine(db, busy_timeout_s=30)
    holder = _hold(Path(f"{db}.write-lock"))
    try:
        thread, done = _insert_in_thread(engine, 1)
        # SQLite's own lock is free all along: only the queue holds this writer back.
        assert not done.wait(0.5), "the writer went ahead of the process holding the queue"
    finally:
        _release(holder)
    assert done.wait(10), "the writer did not go on once the queue was free"
    thread.join(10)
    assert _written(engine) == [1]


def test_past_the_busy_timeout_a_writer_stops_queueing_and_leaves_the_wait_to_sqlite(tmp_path):
    db = tmp_path / "stuck.db"
    engine = _engine(db, busy_timeout_s=0.3)
    holder = _hold(Path(f"{db}.write-lock"))  # a process that holds the queue and never writes
    try:
        started = time.monotonic()
        thread, done = _insert_in_thread(engine, 2)
        assert done.wait(10), "a writer queued forever behind a stuck process"
        assert time.monotonic() - started >= 0.25  # it did queue first
        thread.join(10)
    finally:
        _release(holder)
    assert _written(engine) == [2]


def test_threads_of_one_process_take_turns_and_every_write_lands(tmp_path):
    db = tmp_path / "threads.db"
    engine = _engine(db, busy_timeout_s=30)
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def write(n: int) -> None:
        nonlocal inside, overlaps
        for i in range(25):
            with writing(engine) as conn:
                with guard:
                    inside += 1
                    overlaps += inside > 1
                conn.exec_driver_sql("INSERT INTO t VALUES (?)", (n * 100 + i,))
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == 0
    assert len(_written(engine)) == 100


def test_one_file_under_two_spellings_has_one_queue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = connect("sqlite:///same.db")
    absolute = connect(f"sqlite:///{tmp_path / 'same.db'}")
    assert _write_locks["same.db"] is _write_locks[str(tmp_path / "same.db")]
    relative.dispose()
    absolute.dispose()

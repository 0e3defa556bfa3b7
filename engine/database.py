"""Connections to the decision store's database: SQLite (embedded default) or PostgreSQL.

SQLite runs in WAL mode with `synchronous=FULL`: a commit returns only once the WAL is on
disk, so a decision is durable before the response that announces it (NORMAL would only
guarantee that a crash leaves the database consistent, possibly without its last commits).
The driver's own transaction handling is switched off and SQLAlchemy's `begin` emits
`BEGIN IMMEDIATE` for write transactions (the database's write lock is taken at the start, so
two writers never both read the chain head) and a plain `BEGIN` for reads (WAL readers do not
block writers). Writers of one database file first queue on a lock of their own
(`<database>.write-lock`: a thread lock in the process, an flock across processes, tried every
0.2-1 ms), so that the write lock passes to the next writer within a millisecond of being free;
SQLite's busy handler alone has a waiting writer sleep 1, 2, 5, 10, 15... ms between tries, and
several uvicorn workers appending at once paid tens of milliseconds per commit. Past the busy
timeout a writer stops queueing and leaves the wait to SQLite, as before (a lock held by a
process that does not queue, or one that hangs, still fails in bounded time).
On PostgreSQL, write transactions are ordinary READ COMMITTED transactions;
the store takes the locks it needs explicitly.

`migrate(engine)` applies the Alembic migrations of `engine/migrations` up to head; no
alembic.ini is needed (the configuration is built here).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc

from engine.chain import canonical
from engine.errors import StoreError, StoreUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WRITE = "arbiter_write"
# Serializes concurrent `migrate` calls (several workers starting at once) on PostgreSQL.
_MIGRATION_LOCK = 0x41524249  # "ARBI"
# PostgreSQL conditions of the whole database, not of one statement: a read-only server (a
# standby after a failover), a schema that is not there, a server shutting down or starting.
_UNAVAILABLE_STATES = frozenset({"25006", "42P01", "57P01", "57P02", "57P03"})


def connect(url: str, *, busy_timeout_s: float = 10.0) -> sa.Engine:
    """An engine for `url`; for SQLite the file's directory is created if missing."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # A server that does not answer fails a connection in seconds, not the OS's minutes:
        # the decision writer then journals (engine/journal.py) instead of hanging.
        return sa.create_engine(
            url, json_serializer=canonical, pool_pre_ping=True,
            connect_args={"connect_timeout": 5},
        )  # fmt: skip
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        _register_writers(parsed.database, busy_timeout_s)
    engine = sa.create_engine(
        url, json_serializer=canonical, connect_args={"timeout": busy_timeout_s}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, see _on_begin
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def writing(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    with translated(), _writers_queue(engine), _for_writes(engine).begin() as conn:
        yield conn


def _for_writes(engine: sa.Engine) -> sa.Engine:
    """`engine` with the option `_on_begin` reads, made once per engine and kept on it (each
    `execution_options` call builds a new engine proxy: about 50 us a transaction)."""
    found: sa.Engine | None = getattr(engine, "_arbiter_for_writes", None)
    if found is None:
        found = engine.execution_options(**{_WRITE: True})
        engine._arbiter_for_writes = found  # type: ignore[attr-defined]
    return found


class _WriteLock:
    """One SQLite file's writers, in turn: threads of this process, then processes."""

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.threads = threading.Lock()
        self.fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        deadline = time.monotonic() + self.timeout_s
        if not self.threads.acquire(timeout=self.timeout_s):
            yield  # queued too long: SQLite's own wait decides
            return
        try:
            locked = self._flock(deadline)
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        finally:
            self.threads.release()

    def _flock(self, deadline: float) -> bool:
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False  # a read-only directory: SQLite's own wait alone
        pause = 0.0002
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.001)


_write_locks: dict[str, _WriteLock] = {}
_write_locks_guard = threading.Lock()


def _writers_queue(engine: sa.Engine) -> Any:
    database = engine.url.database if is_sqlite(engine) else None
    lock = _write_locks.get(database) if database else None
    return lock.held() if lock is not None else nullcontext()


def _register_writers(database: str, timeout_s: float) -> None:
    """The write queue of a SQLite file (none for `:memory:` or `file:` URIs), keyed by the
    URL's database as given: the lock file's path is resolved once, here."""
    if database == ":memory:" or database.startswith("file:"):
        return
    path = os.path.abspath(database) + ".write-lock"
    with _write_locks_guard:
        for lock in _write_locks.values():
            if lock.path == path:  # the same file under another spelling: one queue
                _write_locks.setdefault(database, lock)
                return
        _write_locks.setdefault(database, _WriteLock(path, timeout_s))


@contextmanager
def reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    with translated(), engine.connect() as conn:
        yield conn


@contextmanager
def translated() -> Iterator[None]:
    """Turn SQLAlchemy's and the driver's errors into the store's domain errors."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
        detail = _detail(error)
        message = f"the decision store is unavailable: {detail}"
        raise StoreUnavailable(message, detail=detail) from error
    except exc.DBAPIError as error:
        detail = _detail(error)
        if getattr(error.orig, "sqlstate", None) in _UNAVAILABLE_STATES:
            raise StoreUnavailable(
                f"the decision store is unavailable: {detail}", detail=detail
            ) from error
        raise StoreError(f"the decision store failed: {detail}", detail=detail) from error
    except exc.SQLAlchemyError as error:
        detail = _detail(error)
        raise StoreError(f"the decision store failed: {detail}", detail=detail) from error


def _detail(error: exc.SQLAlchemyError) -> str:
    cause = error.orig if isinstance(error, exc.DBAPIError) else error
    first = str(cause).strip().splitlines()
    return first[0] if first else type(cause).__name__


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision`, in one transaction, safe to run from several workers."""
    config = alembic_config()
    with writing(engine) as conn:
        if not is_sqlite(engine):  # SQLite: BEGIN IMMEDIATE already holds the write lock
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def head_revision() -> str | None:
    """The newest revision in engine/migrations."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration, built in code; with a `url`, Alembic's own commands work too:
    `command.revision(alembic_config(url), "message", autogenerate=True)`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def current_revision(conn: sa.Connection) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    return MigrationContext.configure(conn).get_current_revision()

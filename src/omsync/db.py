"""Database engines for the ledger: SQLite (WAL, embedded default) or PostgreSQL.

Two ways to run a transaction:

- :meth:`Database.run_write` / :meth:`Database.run_read` run one whole transaction as a plain
  function ``fn(conn: sqlalchemy.Connection) -> T`` on a thread: **one thread hop per
  transaction**. The ledger's hot paths (accept, claim, finish, ...) use them. On SQLite every
  write runs on one dedicated writer thread with its own connection; reads run on a small pool
  of reader threads. On PostgreSQL a sync psycopg engine with a pool serves a small thread pool.
- :meth:`Database.write` / :meth:`Database.read` are async context managers over an async
  engine (aiosqlite / psycopg async), for code off the hot paths. Every DBAPI call there is a
  thread hop of its own.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so that it never has to
upgrade its lock half-way (the cause of "database is locked" errors). Writers of one process,
of both kinds, take turns on one asyncio lock instead of SQLite's sleeping busy handler; writers
of other processes (``omsync worker``) are waited for by SQLite's busy timeout, on the writer's
thread, never on the event loop. Readers never block writers under WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import QueuePool

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
SQLITE_READER_THREADS = 2
POSTGRES_MAX_THREADS = 8


def _sqlite_pragmas(dbapi_conn: Any) -> None:
    # Manage transactions ourselves so BEGIN IMMEDIATE is possible.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: every commit reaches the disk before it is acknowledged, so an accepted event
    # survives a power loss too, not only a crash of the process (NORMAL would only be safe
    # for the latter). Intake commits in groups, so this costs one fsync per group.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_hooks(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def sync_url(url: str | None) -> str:
    """The synchronous driver URL for an async one (aiosqlite → pysqlite; psycopg serves both).
    Raises ``ValueError`` without a URL."""
    if not url:
        raise ValueError("no database URL configured")
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    elif parsed.drivername in ("postgresql+asyncpg", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    """The engines (reads and writes, async and sync) over one database URL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._writer_conn: Connection | None = None  # SQLite: the writer thread's own connection
        self._inline: sqlite3.Connection | None = None  # SQLite: read_one's connection (event loop)
        self._inline_path: str | None = None  # SQLite file of read_one's connection (None: threads only)
        self._lock_fd: int | None = None  # SQLite: the file lock writers of all processes take turns on
        if self.dialect == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                if parsed.database != ":memory:" and not parsed.database.startswith("file:") and not parsed.query:
                    self._inline_path = parsed.database
            self.reader = create_async_engine(url)
            self.writer = create_async_engine(url)
            _sqlite_hooks(self.reader.sync_engine, immediate=False)
            _sqlite_hooks(self.writer.sync_engine, immediate=True)
            self.sync_reader: Engine = create_engine(
                sync_url(url), poolclass=QueuePool, pool_size=SQLITE_READER_THREADS, max_overflow=0
            )
            self.sync_writer: Engine = create_engine(sync_url(url), poolclass=QueuePool, pool_size=1, max_overflow=0)
            _sqlite_hooks(self.sync_reader, immediate=False)
            _sqlite_hooks(self.sync_writer, immediate=True)
            self._write_threads = ThreadPoolExecutor(1, thread_name_prefix="omsync-db-writer")
            self._read_threads = ThreadPoolExecutor(SQLITE_READER_THREADS, thread_name_prefix="omsync-db-reader")
        else:
            # The ledger's locking (FOR UPDATE, then re-reading the locked row) is written for READ
            # COMMITTED; pin it so a server whose default is stricter does not fail claims with
            # serialization errors.
            engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                isolation_level="READ COMMITTED",
            )
            self.reader = self.writer = engine
            threads = max(1, min(pool_size, POSTGRES_MAX_THREADS))
            self.sync_reader = self.sync_writer = create_engine(
                sync_url(url), pool_size=threads, max_overflow=0, pool_pre_ping=True,
                isolation_level="READ COMMITTED",
            )
            self._write_threads = self._read_threads = ThreadPoolExecutor(threads, thread_name_prefix="omsync-db")
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._closed = False

    @property
    def is_postgres(self) -> bool:
        """True for PostgreSQL (row locks, ``SKIP LOCKED``); False for SQLite."""
        return self.dialect == "postgresql"

    # -- one thread hop per transaction ------------------------------------------------------------

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` as one write transaction on a database thread; committed when ``fn``
        returns, rolled back when it raises (the exception is raised here).

        ``fn`` must not touch the event loop. On SQLite it runs on the one writer thread, after
        this process's other writers (see the module docstring)."""
        loop = asyncio.get_running_loop()
        if self._write_lock is None:
            return await loop.run_in_executor(self._write_threads, self._pooled_transaction, fn)
        async with self._write_lock:
            return await loop.run_in_executor(self._write_threads, self._sqlite_write, fn)

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a read-only transaction on a database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_threads, self._read_transaction, fn)

    async def read_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        """The first row (or None) of a small read query in driver SQL (``?`` placeholders on
        SQLite, ``%s`` on PostgreSQL), e.g. a lookup by primary key.

        On SQLite it runs at once on the calling thread on a connection whose busy timeout is 0:
        under WAL a read only has to wait in rare moments (a writer resetting the log), and then
        it is handed to a reader thread instead, so the event loop never waits for a lock. On
        PostgreSQL it runs on a pool thread (:meth:`run_read`)."""
        if self._inline_path is not None and not self._closed:
            try:
                return self._inline_reader().execute(sql, params).fetchone()
            except sqlite3.OperationalError:
                self._drop_inline_reader()  # busy, or a broken connection: the thread path
        return await self.run_read(lambda conn: conn.exec_driver_sql(sql, params).first())

    def _inline_reader(self) -> sqlite3.Connection:
        conn = self._inline
        if conn is None:
            conn = sqlite3.connect(self._inline_path or "", isolation_level=None, check_same_thread=False, timeout=0)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA query_only=ON")
            self._inline = conn
        return conn

    def _drop_inline_reader(self) -> None:
        conn, self._inline = self._inline, None
        if conn is not None:
            conn.close()

    def _sqlite_write(self, fn: Callable[[Connection], T]) -> T:
        conn = self._writer_conn
        if conn is None or conn.closed:
            conn = self._writer_conn = self.sync_writer.connect()
        with self._between_processes(), conn.begin():
            return fn(conn)

    @contextlib.contextmanager
    def _between_processes(self) -> Iterator[None]:
        """Writers of several processes on one SQLite file (``serve`` and its workers) take
        turns on an advisory file lock first: a waiter is woken the moment the lock is free,
        where SQLite's busy handler would sleep in growing steps (up to 100 ms) and retry."""
        fd = self._lock_fd
        if fd is None and self._inline_path is not None:
            with contextlib.suppress(OSError):
                fd = self._lock_fd = os.open(self._inline_path + ".write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _pooled_transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.sync_writer.begin() as conn:
            return fn(conn)

    def _read_transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.sync_reader.connect() as conn:
            return fn(conn)

    def _close_writer_connection(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    # -- async transactions (off the hot paths) ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on normal exit and rolled back on error."""
        if self._write_lock is None:
            async with self.writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.writer.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        async with self.reader.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_inline_reader()
        loop = asyncio.get_running_loop()
        if self._write_lock is not None:
            async with self._write_lock:
                await loop.run_in_executor(self._write_threads, self._close_writer_connection)
        await loop.run_in_executor(None, self._shutdown_threads)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()

    def _shutdown_threads(self) -> None:
        self._write_threads.shutdown(wait=True)
        if self._read_threads is not self._write_threads:
            self._read_threads.shutdown(wait=True)
        self.sync_reader.dispose()
        if self.sync_writer is not self.sync_reader:
            self.sync_writer.dispose()

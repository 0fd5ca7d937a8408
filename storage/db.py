"""The async engine for SQLite (WAL, embedded default) or PostgreSQL, and retried transactions."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql import Insert

from .errors import StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_URL = "sqlite+aiosqlite:///data/melomania.db"
RETRY_FOR_S = 30.0  # PostgreSQL restarted (or recovering from a crash) takes connections well within this
CONNECT_TIMEOUT_S = 10.0  # one connect to a host that drops packets must not use up the whole bound
# admin_shutdown, crash_shutdown, cannot_connect_now (starting up, shutting down, in recovery),
# serialization_failure, deadlock_detected: the same transaction succeeds when run again
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
CONNECTION_CLASS = "08"  # SQLSTATE class 08: connection exceptions
TRANSIENT_WORDS = ("starting up", "shutting down", "in recovery mode")
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
    }
)


def make_engine(url: str, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:
            # Take transactions into our own hands (below) and make SQLite wait for, not fail on, locks.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn) -> None:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of one failing
            # with SQLITE_BUSY when its read transaction tries to upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {"timeout": CONNECT_TIMEOUT_S} if "+asyncpg" in url else {}
    return create_async_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: SQLAlchemy's DBAPIError holds the dialect's error in `.orig`, which
    in turn was raised from the driver's (asyncpg's) own; a connect may fail with a bare OSError."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [getattr(current, "orig", None), current.__cause__]  # not __context__: an error
        # raised while handling another (a NotFound after a caught reset, say) is not that one


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, ConnectionError | TimeoutError):  # refused, reset, or a connect that timed out
        return True
    if isinstance(exc, OSError) and exc.errno in NETWORK_ERRNOS:
        return True
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and (state in TRANSIENT_SQLSTATES or state.startswith(CONNECTION_CLASS)):
        return True
    text = str(exc).lower()
    if isinstance(exc, OperationalError | sqlite3.OperationalError) and "locked" in text:
        return True
    return isinstance(exc, DBAPIError) and any(words in text for words in TRANSIENT_WORDS)


def transient(exc: BaseException) -> bool:
    """Whether running the same transaction again may succeed: the database restarting or out of
    reach for a moment, a dropped connection, a serialization failure or deadlock, SQLite locked."""
    return any(_transient_one(cause) for cause in _causes(exc))


def _briefly(exc: BaseException) -> str:
    """An error in one line for the log (the driver's own first line, never a URL)."""
    inner = getattr(exc, "orig", None) or exc
    first = str(inner).splitlines()[0] if str(inner) else ""
    return f"{inner.__class__.__name__}: {first}"[:200]


class Database:
    """One engine and a session factory. `run` executes a function in one transaction, retried
    whole while the database is out of reach (up to `retry_for_s`), so a write is done once or
    not at all."""

    def __init__(self, url: str = DEFAULT_URL, echo: bool = False, retry_for_s: float = RETRY_FOR_S):
        self.url = url
        self.engine = make_engine(url, echo)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.retry_for_s = retry_for_s

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def run(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `fn` in one transaction, retried while the database is out of reach. A cancel (a
        bot stopping its followers, say) waits for the attempt under way to end, then goes on,
        starting no further attempt: cut short, the driver's rollback is interrupted too and the
        pooled connection is left half reset."""
        given_up = asyncio.Event()
        unit = asyncio.ensure_future(self._transaction(fn, given_up))
        try:
            return await asyncio.shield(unit)
        except asyncio.CancelledError:
            given_up.set()
            if not unit.done():
                with contextlib.suppress(BaseException):
                    await unit
            raise

    async def _transaction(self, fn: Callable[[AsyncSession], Awaitable[T]], given_up: asyncio.Event) -> T:
        deadline = time.monotonic() + self.retry_for_s
        delay, attempt = 0.05, 0
        while True:
            attempt += 1
            try:
                async with self.sessions() as session, session.begin():
                    return await fn(session)
            except Exception as exc:
                if not transient(exc):
                    raise
                # jitter: many callers failing together must not all come back at once. The last
                # pause is cut to end at the deadline, so the database gets the whole bound (a
                # pause that would overshoot once gave up after two thirds of it).
                left = deadline - time.monotonic()
                pause = min(random.uniform(delay / 2, delay), left)
                if left <= 0 or given_up.is_set():
                    log.error("database unavailable after %d attempts: %s", attempt, _briefly(exc))
                    raise StorageUnavailable(
                        f"the database stayed unreachable for {self.retry_for_s:g} s; nothing was saved"
                    ) from exc
                level = logging.WARNING if attempt == 1 else logging.DEBUG
                log.log(level, "database unavailable (%s); retrying for up to %g s", _briefly(exc), self.retry_for_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(given_up.wait(), pause)
                if given_up.is_set():  # its caller was cancelled while it waited: no further attempt
                    raise StorageUnavailable("given up: its caller was cancelled") from exc
                delay = min(delay * 2, 2.0)

    async def create_all(self) -> None:
        """Create the tables directly (tests); deployments use Alembic (`melomania db upgrade`)."""
        from .models import Base

        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()


def insert_ignoring_duplicates(session: AsyncSession, table: Any, index_elements: list[str]) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING for the session's dialect (SQLite and PostgreSQL)."""
    name = session.bind.dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[name]
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)

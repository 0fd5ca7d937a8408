"""The async engine for SQLite (WAL, embedded default) or PostgreSQL, and retried transactions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
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
    return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc).lower()


class Database:
    """One engine and a session factory. `run` executes a function in one transaction, retried
    whole on a dropped connection, so a write is done once or not at all."""

    def __init__(self, url: str = DEFAULT_URL, echo: bool = False, retries: int = 3):
        self.url = url
        self.engine = make_engine(url, echo)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.retries = retries

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def run(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `fn` in one transaction, retried when the connection drops. A cancel (a bot
        stopping its followers, say) waits for the transaction to end, then goes on: cut short,
        the driver's rollback is interrupted too and the pooled connection is left half reset."""
        unit = asyncio.ensure_future(self._transaction(fn))
        try:
            return await asyncio.shield(unit)
        except asyncio.CancelledError:
            if not unit.done():
                with contextlib.suppress(BaseException):
                    await unit
            raise

    async def _transaction(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                async with self.sessions() as session, session.begin():
                    return await fn(session)
            except (DBAPIError, OperationalError) as exc:
                if not _transient(exc) or attempt == self.retries:
                    if _transient(exc):
                        raise StorageUnavailable("the database is unavailable; nothing was saved, try again") from exc
                    raise
                log.warning("database connection lost, retrying (%d/%d)", attempt + 1, self.retries)
                await asyncio.sleep(delay)
                delay *= 4
        raise AssertionError("unreachable")

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

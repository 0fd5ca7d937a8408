"""Fixtures that run a storage test on SQLite (a WAL file) and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid

import pytest
from servers import own_postgres_server, postgres_server
from sqlalchemy.ext.asyncio import create_async_engine

from storage import Database

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture
def own_postgres():
    """A PostgreSQL server for one test alone, which it may stop and restart (a PostgresServer)."""
    if os.environ.get("MELOMANIA_TEST_POSTGRES_URL"):
        pytest.skip("a test that restarts PostgreSQL needs a server of its own, not MELOMANIA_TEST_POSTGRES_URL")
    with own_postgres_server() as server:
        yield server


async def _fresh_postgres_db(admin_url: str) -> str:
    name = f"t{next(_counter)}_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    await engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'melomania.db'}"
    admin = request.getfixturevalue("postgres_url")
    return asyncio.run(_fresh_postgres_db(admin))


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    await database.create_all()
    yield database
    await database.dispose()

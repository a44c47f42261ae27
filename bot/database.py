"""Opening the database and applying migrations (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate

from bot.errors import ConfigError


def tortoise_config(database_url: str) -> dict[str, Any]:
    """Tortoise's configuration for ``database_url``."""
    url = database_url.replace("postgresql://", "postgres://", 1)
    if url.startswith("postgres://"):
        url = url.replace("postgres://", "asyncpg://", 1)
    connection: str | dict[str, Any] = url
    if url.startswith("asyncpg://"):
        connection = expand_db_url(url)
        connection["credentials"]["reset"] = _keep_session
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": ["models"],
                "default_connection": "default",
                "migrations": "models.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def _keep_session(connection: object) -> None:
    """What a pooled PostgreSQL connection does when it is given back: nothing more.

    The pool has already rolled back any open transaction. Its default reset would also
    drop session settings, LISTENs and session advisory locks, none of which the service
    uses on pooled connections (the migration lock has a connection of its own), at the
    cost of a round trip after every statement outside a transaction.
    """


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://", "asyncpg://"))


def _ensure_sqlite_folder(database_url: str) -> None:
    if database_url.startswith("sqlite://"):
        path = database_url.removeprefix("sqlite://")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


# Any fixed number: replicas starting together take turns migrating by this PostgreSQL lock.
_MIGRATION_LOCK = 0x5B0A2D
_MIGRATION_POLL_SECONDS = 0.5


async def apply_migrations(database_url: str) -> None:
    """Bring the schema up to date (idempotent; replicas starting at once take turns)."""
    _ensure_sqlite_folder(database_url)
    try:
        async with _migration_turn(database_url):
            await migrate(config=tortoise_config(database_url))
    except OSError as exc:
        raise ConfigError(
            "DATABASE_URL", f"cannot reach the database ({exc}); is it running?"
        ) from exc
    finally:
        await connections.close_all(discard=True)


@asynccontextmanager
async def _migration_turn(database_url: str) -> AsyncIterator[None]:
    """Hold PostgreSQL's advisory lock for migrations (SQLite has one process: no lock)."""
    if not is_postgres(database_url):
        yield
        return
    import asyncpg

    url = database_url.replace("asyncpg://", "postgres://", 1)
    connection = await asyncpg.connect(url)
    try:
        # Polled, not waited for: a replica blocked in pg_advisory_lock is an open transaction,
        # and CREATE INDEX CONCURRENTLY in the migrating replica waits for every open
        # transaction to end, so both would wait for ever.
        while True:
            if await connection.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATION_LOCK):
                break
            await asyncio.sleep(_MIGRATION_POLL_SECONDS)
        yield
    finally:
        await connection.close()  # ends the session, which releases the lock


@asynccontextmanager
async def open_database(database_url: str, *, migrate_first: bool = True) -> AsyncIterator[None]:
    """Connect for the service's lifetime, migrating first; closes every connection on exit."""
    if migrate_first:
        await apply_migrations(database_url)
    _ensure_sqlite_folder(database_url)
    await Tortoise.init(config=tortoise_config(database_url))
    try:
        yield
    finally:
        await connections.close_all()


_MAX_PARAMETERS = 30_000


def placeholders(conn: BaseDBAsyncClient, count: int) -> list[str]:
    """``count`` parameter marks in the connection's dialect (``$1, $2, ...`` or ``?``)."""
    if conn.capabilities.dialect == "postgres":
        return [f"${number}" for number in range(1, count + 1)]
    return ["?"] * count


async def insert_rows(
    conn: BaseDBAsyncClient,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    returning: str = "",
) -> list[dict[str, Any]]:
    """Insert ``rows`` in one statement, without building a model object per row.

    For the hot paths (intake, the job queue), where tortoise's per-object work was most of the
    cost. Values go in as the drivers take them: str, int, bool, bytes, None, aware datetimes,
    and JSON dumped to str. ``returning`` lists columns to read back; the rows come back in no
    promised order, so read back something that tells them apart.
    """
    width = len(columns)
    # Both databases take at most 32,766 parameters a statement: more rows go in several, in order.
    per_statement = max(1, _MAX_PARAMETERS // width)
    found: list[dict[str, Any]] = []
    for first in range(0, len(rows), per_statement):
        chunk = rows[first : first + per_statement]
        marks = placeholders(conn, width * len(chunk))
        values = ", ".join(
            f"({', '.join(marks[index * width : (index + 1) * width])})"
            for index in range(len(chunk))
        )
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"
        params = [value for row in chunk for value in row]
        if not returning:
            await conn.execute_query(sql, params)
        else:
            # execute_query would not fetch the rows of an INSERT on PostgreSQL.
            found += await conn.execute_query_dict(f"{sql} RETURNING {returning}", params)
    return found


# For tortoise's own CLI, to write a migration after changing models/:
#   .venv/bin/tortoise -c bot.database.TORTOISE_ORM makemigrations --name what_changed
TORTOISE_ORM = tortoise_config("sqlite://:memory:")

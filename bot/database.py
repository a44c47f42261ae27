"""Opening the database and applying migrations (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

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
            try:
                await migrate(config=tortoise_config(database_url))
            finally:
                await connections.close_all(discard=True)
    except OSError as exc:
        raise ConfigError(
            "DATABASE_URL", f"cannot reach the database ({exc}); is it running?"
        ) from exc


@asynccontextmanager
async def _migration_turn(database_url: str) -> AsyncIterator[None]:
    """Hold PostgreSQL's advisory lock for migrations (SQLite has one process: no lock)."""
    if not is_postgres(database_url):
        yield
        return
    import asyncpg

    url = database_url.replace("asyncpg://", "postgres://", 1)
    try:
        connection = await asyncpg.connect(url)
    except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise ConfigError(
            "DATABASE_URL",
            f"the database server refuses it ({exc}); check the database's name, the user and"
            " the password, and create the database first (createdb NAME)",
        ) from exc
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


def in_list(conn: BaseDBAsyncClient, count: int) -> str:
    """``(?, ?, ...)`` or ``($1, $2, ...)``: an IN list of ``count`` parameters.

    For the hot paths' ``IN`` queries: tortoise builds a term per value, and for a few dozen
    ids that took the service longer than the database took to answer.
    """
    return f"({', '.join(placeholders(conn, count))})"


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


T = TypeVar("T")


class Prepared(Generic[T]):
    """A query the service runs for every message, its SQL built once instead of each time.

    Tortoise builds a query's SQL anew on every run, and for the small queries of the hot path
    (one row by id, an exists, a few ids) building it costs the service more CPU than the
    database spends answering: twice the time of the statement itself, and four times for a
    query with joins (``select_related``). ``build`` makes the query from its arguments;
    ``stand_ins`` are sample arguments (ints, strs or enum members) it is built with once per
    database dialect. Each call then runs the same SQL with its own arguments::

        _message = Prepared(lambda message_id: Message.filter(id=message_id).first(), 1)
        message = await _message(42)           # or _message(42, conn=conn) in a transaction

    Only arguments that become parameters one to one can vary (``id=...``, ``channel=...``),
    not a list for ``__in`` (its length changes the SQL) nor anything that changes the query's
    shape; ``Prepared`` refuses what it cannot tell apart from a constant. It relies on
    tortoise's query internals (``_make_query``, ``query``, ``_execute``), which
    tests/test_prepared.py checks against the plain queries on both databases.
    """

    def __init__(self, build: Callable[..., Awaitable[T]], *stand_ins: object) -> None:
        for value in stand_ins:
            if isinstance(value, bool) or not isinstance(value, int | str | Enum):
                raise TypeError(f"a stand-in must be an int, a str or an enum member: {value!r}")
        self._build = build
        self._stand_ins = stand_ins
        self._model: Any = None
        # By dialect: the built query, its SQL, and per parameter the index of the argument
        # that fills it or None for a constant, with the constant.
        self._built: dict[str, tuple[Any, str, list[tuple[int | None, object]]]] = {}

    async def __call__(self, *args: object, conn: BaseDBAsyncClient | None = None) -> T:
        if len(args) != len(self._stand_ins):
            raise TypeError(f"expected {len(self._stand_ins)} arguments, got {len(args)}")
        if self._model is None:
            self._model = self._build(*self._stand_ins).model  # type: ignore[attr-defined]
        db: BaseDBAsyncClient = conn or self._model._meta.db
        built = self._built.get(db.capabilities.dialect)
        if built is None:
            built = self._built[db.capabilities.dialect] = self._prepare()
        query, sql, slots = built
        params = [
            constant if index is None else _db_value(args[index]) for index, constant in slots
        ]
        run = copy.copy(query)
        run._db = db
        run.query = _BuiltSql(sql, params)
        result: T = await run._execute()
        return result

    def _prepare(self) -> tuple[Any, str, list[tuple[int | None, object]]]:
        template: Any = self._build(*self._stand_ins)
        template._make_query()
        sql, params = template.query.get_parameterized_sql()
        # Built a second time with other arguments: the parameters that change are arguments.
        other: Any = self._build(*(_another(value) for value in self._stand_ins))
        other._make_query()
        other_sql, other_params = other.query.get_parameterized_sql()
        if other_sql != sql or len(other_params) != len(params):
            raise ValueError("the arguments change the query's SQL: it cannot be prepared")
        wanted = [_db_value(value) for value in self._stand_ins]
        slots: list[tuple[int | None, object]] = []
        for first, second in zip(params, other_params, strict=True):
            if first == second:
                slots.append((None, first))
                continue
            matches = [index for index, value in enumerate(wanted) if value == first]
            if len(matches) != 1:
                raise ValueError(f"parameter {first!r} is not exactly one stand-in")
            slots.append((matches[0], None))
        if sorted({index for index, _ in slots if index is not None}) != list(range(len(wanted))):
            raise ValueError("every argument must become one parameter of the query")
        return template, sql, slots


class _BuiltSql:
    """What a query's ``query`` attribute gives its ``_execute``: SQL and parameters."""

    __slots__ = ("params", "sql")

    def __init__(self, sql: str, params: list[object]) -> None:
        self.sql = sql
        self.params = params

    def get_parameterized_sql(self) -> tuple[str, list[object]]:
        return self.sql, self.params


def _db_value(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _another(value: object) -> object:
    """A different argument of the same kind (the second build of ``Prepared``)."""
    if isinstance(value, Enum):
        members = list(type(value))
        if len(members) < 2:
            raise ValueError(f"{type(value).__name__} has one member: it is a constant")
        return members[(members.index(value) + 1) % len(members)]
    if isinstance(value, int):
        return value + 1
    assert isinstance(value, str)
    return f"{value}~"


# For tortoise's own CLI, to write a migration after changing models/:
#   .venv/bin/tortoise -c bot.database.TORTOISE_ORM makemigrations --name what_changed
TORTOISE_ORM = tortoise_config("sqlite://:memory:")

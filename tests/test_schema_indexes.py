"""The schema is what the code assumes: every index the models declare is in the database, on
both backends, and the hot paths' raw inserts name every column of their tables.

SQLite rebuilds a table to alter a column, and such a rebuild once dropped indexes the models
declare (fixed by migration 0013): the query-plan test reads plans on PostgreSQL only, so this
compares the declarations with what each database holds.
"""

from __future__ import annotations

from tortoise import Tortoise, connections
from tortoise.indexes import Index

from bot import intake, jobs
from models import Job, Message


def _declared() -> set[tuple[str, tuple[str, ...]]]:
    """(table, columns) of every index the models declare: ``db_index`` fields and Meta."""
    declared: set[tuple[str, tuple[str, ...]]] = set()
    for model in Tortoise.apps["models"].values():
        meta = model._meta
        for name, field in meta.fields_map.items():
            if field.index and not field.pk:
                declared.add((meta.db_table, (meta.fields_db_projection.get(name, name),)))
        for index in meta.indexes:
            fields = index.fields if isinstance(index, Index) else index
            columns = tuple(meta.fields_db_projection.get(f, f) for f in fields)
            declared.add((meta.db_table, columns))
    return declared


async def _present() -> set[tuple[str, tuple[str, ...]]]:
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        rows = await conn.execute_query_dict(
            """
            SELECT t.relname AS table_name,
                   (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
                      FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                   ) AS columns
              FROM pg_index i
              JOIN pg_class t ON t.oid = i.indrelid
              JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = current_schema()
            """
        )
        return {(str(r["table_name"]), tuple(str(r["columns"]).split(","))) for r in rows}
    present: set[tuple[str, tuple[str, ...]]] = set()
    indexes = await conn.execute_query_dict(
        "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index'"
    )
    for row in indexes:
        info = await conn.execute_query_dict(f"PRAGMA index_info('{row['name']}')")
        present.add((str(row["tbl_name"]), tuple(str(c["name"]) for c in info)))
    return present


async def test_every_declared_index_is_in_the_database(db: str) -> None:
    declared = _declared()
    assert ("jobs", ("serial_key", "state")) in declared  # the one whose loss showed it
    missing = sorted(declared - await _present())
    assert missing == [], f"indexes the models declare but the database lacks: {missing}"


def test_the_raw_inserts_name_every_column_of_their_table() -> None:
    # Intake and the job queue insert without the ORM (bot/database.py::insert_rows): a column
    # added to the model must be added to their lists too, or it would be left to the database.
    for model, columns in ((Message, intake._UNTHREADED), (Job, jobs._COLUMNS)):
        expected = set(model._meta.fields_db_projection.values()) - {"id"}
        assert sorted(columns) == sorted(expected), model._meta.db_table

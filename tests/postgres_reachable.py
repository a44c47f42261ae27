"""Exit 0 when the test PostgreSQL server answers (``make test`` runs the suite on it then)."""

from __future__ import annotations

import asyncio
import os

import asyncpg

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


async def reachable() -> bool:
    try:
        connection = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


if __name__ == "__main__":
    raise SystemExit(0 if asyncio.run(reachable()) else 1)

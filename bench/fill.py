"""A year of history for a PostgreSQL database, written with bulk SQL.

``fill_history`` adds, to a database migrated by ``bot.database.apply_migrations``: customers
(four conversations each, a few heavy ones, one with about 700), their identities (e-mail,
Telegram, webhook; some customers have two), conversations over the last year (most closed, a
few thousand open, some snoozed, some owned, some moved to another channel and so with a former
thread), five messages each, both ways, shown in Slack (``chat_ts``), audit entries and the done
jobs such a history leaves behind (two per message). Every row is made by
``INSERT ... SELECT ... FROM generate_series`` on the server, so a million messages take well
under a few minutes; the secondary indexes are dropped and built again once at the end, which
is quicker than keeping them up to date row by row. Rows get ids after those already stored.

    python -m bench.fill postgres://postgres@127.0.0.1:5432/switchboard_history [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from bot.database import open_database

MESSAGES_PER_CONVERSATION = 5
CONVERSATIONS_PER_CUSTOMER = 4
#: Conversations of the heaviest customer (a reseller writing for their clients).
HEAVIEST = 716
#: Further heavy customers and their conversations each.
HEAVY_CUSTOMERS = 10
HEAVY = 60
#: Open conversations per 200,000 (the rest is closed).
OPEN_PER_200K = 3000
SKILLS = ("general", "billing", "technical", "shipping", "returns")
TABLES = (
    "customers",
    "identities",
    "conversations",
    "former_threads",
    "messages",
    "attachments",
    "audit_entries",
    "jobs",
)


@dataclass(frozen=True, slots=True)
class _Sizes:
    """How many rows of each kind, and the ids already taken per table."""

    conversations: int
    customers: int
    heaviest: int
    heavy_customers: int
    heavy: int
    open_from: int
    base: dict[str, int]

    @property
    def messages(self) -> int:
        return self.conversations * MESSAGES_PER_CONVERSATION

    def parameters(self) -> dict[str, int]:
        light = self.customers - 1 - self.heavy_customers
        return {
            "conversations": self.conversations,
            "customers": self.customers,
            "heaviest": self.heaviest,
            "heavy_customers": self.heavy_customers,
            "heavy": self.heavy,
            "light": max(light, 1),
            "open_from": self.open_from,
            "stride": _coprime_stride(self.conversations),
            **{f"{table}_base": base for table, base in self.base.items()},
        }


def _coprime_stride(n: int) -> int:
    """A step that visits every number below ``n`` once, so heavy customers spread over time."""
    stride = 7919
    while math.gcd(stride, n) != 1:
        stride += 2
    return stride


def _sizes(messages: int, base: dict[str, int]) -> _Sizes:
    conversations = max(messages // MESSAGES_PER_CONVERSATION, 1)
    customers = max(conversations // CONVERSATIONS_PER_CUSTOMER, 2)
    # A smaller history keeps the proportions: no customer holds more than 1% of it.
    heaviest = min(HEAVIEST, max(conversations // 100, 1))
    heavy_customers = min(HEAVY_CUSTOMERS, customers // 4)
    heavy = min(HEAVY, conversations // 400)
    open_count = max(conversations * OPEN_PER_200K // 200_000, 1)
    return _Sizes(
        conversations=conversations,
        customers=customers,
        heaviest=heaviest,
        heavy_customers=heavy_customers,
        heavy=heavy,
        open_from=conversations - open_count + 1,
        base=base,
    )


# Conversation n (1..conversations) belongs to customer n's owner: the permuted number p puts
# the heaviest customer's conversations, then the heavy ones', then everyone else's, spread
# over the year. The customer numbers here count from 1, before the table's base is added.
_CUSTOMER_OF = """
CASE
  WHEN p <= :heaviest THEN 1
  WHEN p <= :heaviest + :heavy_customers * :heavy THEN 2 + (p - :heaviest - 1) / GREATEST(:heavy, 1)
  ELSE 2 + :heavy_customers + (p - :heaviest - :heavy_customers * :heavy - 1) % :light
END
"""

_STEPS: tuple[tuple[str, str], ...] = (
    (
        "customers",
        """
INSERT INTO customers (id, name, created_at)
SELECT :customers_base + k, 'Customer ' || (:customers_base + k),
       now() - interval '400 days' + k * (interval '365 days' / :customers)
FROM generate_series(1, :customers) AS k
""",
    ),
    (
        "identities",
        # One identity per customer (its channel by the customer number), and a Telegram one
        # too for every tenth customer.
        """
INSERT INTO identities (id, customer_id, channel, address, display_name, created_at)
SELECT :identities_base + k, :customers_base + k,
       CASE WHEN k % 10 < 7 THEN 'email' WHEN k % 10 < 9 THEN 'telegram' ELSE 'webhook' END,
       CASE WHEN k % 10 < 7
              THEN 'customer' || (:customers_base + k) || '@example' || (k % 500) || '.org'
            WHEN k % 10 < 9 THEN (5550000000 + :customers_base + k)::text
            ELSE 'widget:visitor-' || (:customers_base + k) END,
       'Customer ' || (:customers_base + k),
       now() - interval '400 days' + k * (interval '365 days' / :customers)
FROM generate_series(1, :customers) AS k
UNION ALL
SELECT :identities_base + :customers + k / 10, :customers_base + k, 'telegram',
       (6660000000 + :customers_base + k)::text, 'Customer ' || (:customers_base + k),
       now() - interval '390 days' + k * (interval '365 days' / :customers)
FROM generate_series(10, :customers, 10) AS k
""",
    ),
    (
        "conversations",
        f"""
INSERT INTO conversations (
    id, token, customer_id, identity_id, channel, thread_key, subject, normalised_subject,
    skill, priority, priority_reason, language, sentiment, confidence, status, owner,
    chat_channel, chat_thread_ts, created_at, updated_at, last_inbound_at, snoozed_until,
    first_reply_at, first_reply_seconds, closed_at, resolution_seconds)
SELECT :conversations_base + n, token, :customers_base + k, identity, channel,
       CASE channel WHEN 'telegram' THEN address
                    WHEN 'webhook' THEN 'widget:chat-' || n END,
       subject, lower(subject), skill,
       CASE WHEN n % 20 = 0 THEN 'urgent' WHEN n % 20 < 4 THEN 'high'
            WHEN n % 20 < 17 THEN 'normal' ELSE 'low' END,
       '', CASE WHEN n % 3 = 0 THEN 'de' ELSE 'en' END,
       CASE WHEN n % 7 = 0 THEN 'negative' ELSE 'neutral' END, 0.5 + (n % 50) / 100.0,
       CASE WHEN n >= :open_from OR n % 997 = 0 THEN 'open' ELSE 'closed' END,
       CASE WHEN (n >= :open_from OR n % 997 = 0) AND n % 3 = 0 THEN 'U0AGENT' || (n % 20)
            ELSE '' END,
       'C0' || upper(skill),
       extract(epoch FROM created)::bigint || '.'
         || lpad(((:conversations_base + n) % 1000000)::text, 6, '0'),
       created, LEAST(created + 5 * spacing + interval '1 hour', now()), created + 4 * spacing,
       CASE WHEN n >= :open_from AND n % 50 = 0 THEN now() + (n % 48) * interval '1 hour' END,
       -- The reports' facts: the first reply is message 1, closed conversations closed last.
       created + spacing, extract(epoch FROM spacing)::int,
       CASE WHEN n < :open_from AND n % 997 <> 0
            THEN LEAST(created + 5 * spacing + interval '1 hour', now()) END,
       CASE WHEN n < :open_from AND n % 997 <> 0
            THEN extract(epoch FROM LEAST(5 * spacing + interval '1 hour', now() - created))::int
       END
FROM (
    SELECT n, k,
           substr(md5((:conversations_base + n)::text), 1, 6) || to_hex(:conversations_base + n)
             AS token,
           CASE WHEN k % 10 = 0 AND n % 2 = 0 THEN :identities_base + :customers + k / 10
                ELSE :identities_base + k END AS identity,
           CASE WHEN k % 10 = 0 AND n % 2 = 0 THEN 'telegram'
                WHEN k % 10 < 7 THEN 'email' WHEN k % 10 < 9 THEN 'telegram'
                ELSE 'webhook' END AS channel,
           CASE WHEN k % 10 = 0 AND n % 2 = 0 THEN (6660000000 + :customers_base + k)::text
                ELSE (5550000000 + :customers_base + k)::text END AS address,
           (ARRAY['Invoice charged twice', 'Where is my parcel?', 'Cannot log in',
                  'Refund for order', 'Question about my plan', 'Password reset',
                  'Rechnung doppelt abgebucht', 'Lieferung fehlt'])[1 + n % 8]
             || ' #' || (n % 5000) AS subject,
           (ARRAY{list(SKILLS)!r})[1 + (n * 7) % {len(SKILLS)}] AS skill,
           created,
           LEAST(interval '2 hours', (now() - created) / 6) AS spacing
    FROM (
        SELECT n, {_CUSTOMER_OF} AS k,
               now() - interval '365 days' + (n - 1) * (interval '365 days' / :conversations)
                 AS created
        FROM (SELECT n, ((n - 1)::bigint * :stride) % :conversations + 1 AS p
              FROM generate_series(1, :conversations) AS n) AS numbered
    ) AS owned
) AS shaped
ORDER BY n
""",
    ),
    (
        "former_threads",
        # Every fiftieth conversation was moved once: its first thread is a former one.
        """
INSERT INTO former_threads (id, conversation_id, chat_channel, chat_thread_ts, created_at)
SELECT :former_threads_base + n / 50, c.id, 'C0TRIAGE',
       split_part(c.chat_thread_ts, '.', 1)::bigint - 30 || '.'
         || split_part(c.chat_thread_ts, '.', 2),
       c.created_at + interval '10 minutes'
FROM generate_series(50, :conversations, 50) AS n
JOIN conversations AS c ON c.id = :conversations_base + n
""",
    ),
    (
        "messages",
        # Five per conversation: the customer writes (0, 2, 4), an agent answers (1, 3). A few
        # customer messages are automatic, a few replies failed or were undone.
        """
INSERT INTO messages (
    id, conversation_id, thread_key, conversation_token, direction, channel, dedup_key,
    external_id, sender_name, sender_address, author_id, subject, text, full_text, replies_to,
    raw_source, is_automated, automated_reason, chat_ts, chat_files_posted, delivery_state,
    delivery_error, created_at, response_seconds)
SELECT m, conversation, thread_key, NULL, CASE WHEN inbound THEN 'in' ELSE 'out' END, channel,
       CASE WHEN NOT inbound THEN 'slack:' || chat_channel || ':' || chat_ts
            WHEN channel = 'email' THEN 'email:<m' || m || '@mail.example.org>'
            ELSE channel || ':' || m END,
       CASE WHEN channel <> 'email' THEN m::text
            WHEN inbound THEN '<m' || m || '@mail.example.org>'
            ELSE '<sb.' || token || '.' || m || '@help.shop.example>' END,
       CASE WHEN inbound THEN display_name ELSE 'Agent ' || (m % 20) END,
       CASE WHEN inbound THEN address ELSE '' END,
       CASE WHEN inbound THEN '' ELSE 'U0AGENT' || (m % 20) END,
       CASE WHEN channel <> 'email' THEN '' WHEN step = 0 THEN subject ELSE 'Re: ' || subject END,
       body, CASE WHEN inbound AND step > 0 THEN body || E'\n\n> ' || subject ELSE body END,
       CASE WHEN inbound AND step > 0 AND channel = 'email'
            THEN jsonb_build_array('<sb.' || token || '.' || (m - 1) || '@help.shop.example>')
            ELSE '[]'::jsonb END,
       NULL, inbound AND m % 97 = 0,
       CASE WHEN inbound AND m % 97 = 0 THEN 'Auto-Submitted: auto-replied' ELSE '' END,
       chat_ts, false,
       CASE WHEN inbound THEN NULL WHEN m % 211 = 0 THEN 'failed'
            WHEN m % 307 = 0 THEN 'cancelled' ELSE 'sent' END,
       CASE WHEN NOT inbound AND m % 211 = 0 THEN 'the mail relay refused it' ELSE '' END,
       created, CASE WHEN NOT inbound THEN extract(epoch FROM created - previous)::int END
FROM (
    SELECT :messages_base + (c.id - :conversations_base - 1) * 5 + step + 1 AS m, step,
           step % 2 = 0 AS inbound, c.id AS conversation, c.thread_key, c.channel, c.token,
           c.subject, c.chat_channel, i.address, i.display_name,
           split_part(c.chat_thread_ts, '.', 1)::bigint + 60 * (step + 1) || '.'
             || split_part(c.chat_thread_ts, '.', 2) AS chat_ts,
           c.created_at + step * (c.last_inbound_at - c.created_at) / 4 AS created,
           c.created_at + greatest(step - 1, 0) * (c.last_inbound_at - c.created_at) / 4
             AS previous,
           (ARRAY['Hello, I was charged twice for my last invoice, can you check?',
                  'Thanks for writing! I have looked into it and refunded the second charge.',
                  'My parcel has not arrived yet, the tracking page shows nothing new.',
                  'Sorry for the wait: the parcel left our warehouse this morning.',
                  'Ich kann mich seit gestern nicht mehr anmelden, das Passwort geht nicht.',
                  'Bitte setzen Sie Ihr Passwort über den Link in dieser Nachricht zurück.',
                  'Could you tell me what my plan includes and when it renews?',
                  'Your plan renews on the first of the month and includes priority help.'])
             [1 + (c.id % 4) * 2 + step % 2] || ' (' || c.id || '/' || step || ')' AS body
    FROM conversations AS c
    JOIN identities AS i ON i.id = c.identity_id
    CROSS JOIN generate_series(0, 4) AS step
    WHERE c.id > :conversations_base
    ORDER BY c.id, step
) AS rows
""",
    ),
    (
        "attachments",
        # One customer message in a hundred came with a small file.
        """
INSERT INTO attachments (id, message_id, filename, content_type, size, data)
SELECT :attachments_base + (m - :messages_base) / 100, m, 'screenshot.png', 'image/png', 64,
       decode(repeat('89504e47', 16), 'hex')
FROM generate_series(:messages_base + 100, :messages_base + :conversations * 5, 100) AS m
""",
    ),
    (
        "audit_entries",
        # Closing, for every closed one; taking it, for a third; the priority (a lead's choice,
        # or the waiting rules' raise) for a tenth; the move, for those with a former thread.
        """
INSERT INTO audit_entries (
    id, conversation_id, actor_id, actor_name, action, detail, summary, created_at)
SELECT :audit_entries_base + row_number() OVER (ORDER BY c.id, e.kind), c.id,
       CASE WHEN e.kind = 2 AND c.id % 20 = 0 THEN '' ELSE 'U0AGENT' || (c.id % 20) END,
       CASE WHEN e.kind = 2 AND c.id % 20 = 0 THEN 'Switchboard' ELSE 'Agent ' || (c.id % 20) END,
       (ARRAY['assign', 'reassign', 'priority', 'close'])[e.kind + 1],
       CASE e.kind WHEN 0 THEN jsonb_build_object('owner', 'U0AGENT' || (c.id % 20))
                   WHEN 1 THEN jsonb_build_object('from', 'general', 'to', c.skill,
                                                  'moved_from', jsonb_build_array('C0TRIAGE', '1'))
                   WHEN 2 THEN jsonb_build_object('from', 'normal', 'to', c.priority)
                   ELSE '{}'::jsonb END,
       (ARRAY['took this conversation.', 'moved this to another channel.',
              'changed the priority.', 'closed this conversation.'])[e.kind + 1],
       c.created_at + (e.kind + 1) * interval '20 minutes'
FROM conversations AS c
CROSS JOIN generate_series(0, 3) AS e (kind)
WHERE c.id > :conversations_base
  AND CASE e.kind WHEN 0 THEN c.id % 3 = 0
                  WHEN 1 THEN (c.id - :conversations_base) % 50 = 0
                  WHEN 2 THEN c.id % 10 = 0
                  ELSE c.status = 'closed' END
""",
    ),
    (
        "jobs",
        # Two per message, done: threading and posting a customer's message; delivering an
        # agent's reply and showing it.
        """
INSERT INTO jobs (
    id, kind, payload, serial_key, conversation_id, state, run_at, attempts, locked_until,
    locked_by, last_error, created_at, updated_at)
SELECT :jobs_base + (m.id - :messages_base - 1) * 2 + j + 1,
       CASE WHEN m.direction = 'in' THEN (ARRAY['thread_inbound', 'post_inbound'])[j + 1]
            ELSE (ARRAY['deliver_reply', 'show_change'])[j + 1] END,
       jsonb_build_object('message_id', m.id),
       CASE WHEN m.direction = 'in' AND j = 0
              THEN left('sender:' || m.channel || ':' || m.sender_address, 64)
            WHEN m.direction = 'out' AND j = 0 THEN 'replies:' || m.conversation_id
            ELSE 'conversation:' || m.conversation_id END,
       m.conversation_id, 'done', m.created_at, 1, NULL, '', '',
       m.created_at, m.created_at + interval '2 seconds'
FROM messages AS m
CROSS JOIN generate_series(0, 1) AS j
WHERE m.id > :messages_base
ORDER BY m.id, j
""",
    ),
)


def _bind(sql: str, parameters: dict[str, int]) -> str:
    """``sql`` with its ``:name`` parameters written in (all are integers we computed)."""
    for name in sorted(parameters, key=len, reverse=True):
        sql = sql.replace(f":{name}", str(int(parameters[name])))
    return sql


def _asyncpg_url(database_url: str) -> str:
    for prefix in ("asyncpg://", "postgresql://"):
        if database_url.startswith(prefix):
            return "postgres://" + database_url.removeprefix(prefix)
    return database_url


@contextlib.asynccontextmanager
async def scratch_database(
    admin_url: str, prefix: str, *, keep: bool = False
) -> AsyncIterator[str]:
    """A new database on the server of ``admin_url``, migrated; dropped afterwards unless
    ``keep``. Yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        async with open_database(url):
            pass
        yield url
    finally:
        if not keep:
            admin = await asyncpg.connect(admin_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def fill_history(
    database_url: str,
    messages: int = 1_000_000,
    *,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Add about ``messages`` messages of history (and all that goes with them) to the database."""
    say = progress or (lambda line: None)
    connection = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SET maintenance_work_mem = '256MB'")
        # The ordered inserts sort in memory instead of on disk.
        await connection.execute("SET work_mem = '256MB'")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            # The rows reference each other correctly by construction: a superuser skips the
            # foreign key checks (a trigger call per row), as pg_restore --disable-triggers does.
            await connection.execute("SET session_replication_role = replica")
        base = {
            table: int(await connection.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}"))
            for table in TABLES
        }
        sizes = _sizes(messages, base)
        parameters = sizes.parameters()
        say(
            f"filling {sizes.messages:,} messages in {sizes.conversations:,} conversations "
            f"of {sizes.customers:,} customers"
        )
        started = time.monotonic()
        async with connection.transaction():
            indexes = await _drop_secondary_indexes(connection)
            for table, sql in _STEPS:
                step_started = time.monotonic()
                status = await connection.execute(_bind(sql, parameters))
                rows = int(status.rsplit(" ", 1)[-1])
                say(f"{table}: {rows:,} rows in {time.monotonic() - step_started:.1f} s")
            for table in TABLES:
                await connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
            step_started = time.monotonic()
            for definition in indexes:
                await connection.execute(definition)
            say(f"indexes: {len(indexes)} built in {time.monotonic() - step_started:.1f} s")
        step_started = time.monotonic()
        for table in TABLES:
            await connection.execute(f"VACUUM ANALYZE {table}")
        say(f"vacuum analyze: {time.monotonic() - step_started:.1f} s")
        say(f"history filled in {time.monotonic() - started:.1f} s")
    finally:
        await connection.close()


async def _drop_secondary_indexes(connection: asyncpg.Connection) -> list[str]:
    """Drop the indexes that back no constraint; returns how to build them again."""
    rows = await connection.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index AS i
        JOIN pg_class AS t ON t.oid = i.indrelid
        WHERE t.relname = ANY($1::text[]) AND t.relnamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
        """,
        list(TABLES),
    )
    for row in rows:
        await connection.execute(f"DROP INDEX {row['name']}")
    return [str(row["definition"]) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="a PostgreSQL database migrated by switchboard")
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(fill_history(args.database_url, args.messages, progress=print))


if __name__ == "__main__":
    main()

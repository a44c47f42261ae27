"""Deadlines at scale: open conversations with running clocks, minute by minute, while they close.

Each population (by default 10,000 and 100,000 open conversations) gets a PostgreSQL database
of its own, filled with bulk SQL: each conversation has a customer message, a running first
reply clock (4 h) and resolution clock (40 h), 24/7, having arrived at some minute of the last
four hours, and its one ``sla_check`` job due at its next threshold. Then, for ``--minutes``
simulated minutes, the real code runs: the clock moves on a minute, ``--close`` per mille of
the conversations are closed by a lead (``Workflow.close``: the audit entry, the card's redraw,
the clocks dropped), and the job runner works off what came due (the warnings and breaches of
that minute, their posts, the redraws) against a chat that shows nothing.

Printed as JSON: per minute, the CPU seconds of this process (the service's part) and of the
PostgreSQL server, the events worked off, and the rows of every table the deadlines touch;
then the CPU per event of the larger population against the smaller (a ratio: the cost of a
minute follows what happens in it, not how many conversations are open), and the rows at the
end against the start (clocks go as conversations close: nothing only grows but the record of
what happened, the audit entries and finished jobs, which retention and ``keep_done_days``
remove).

    python -m bench.deadlines [--populations 10000,100000] [--minutes 5] [--close 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.history import ADMIN_URL, SilentChat, scratch_databases
from bot.database import apply_migrations, open_database
from bot.deadlines import Deadlines, PostAlert, RedrawCard, SlaCheck
from bot.jobkinds import POST_ALERT, REDRAW_CARD, SHOW_CHANGE, SLA_CHECK
from bot.jobs import JobRunner
from bot.roles import Actor
from bot.routing import FixedSkillClassifier
from bot.settings import Settings, settings_from_toml
from bot.workflow import ShowChange, Workflow
from models import Conversation, ConversationStatus

#: The minute the filled conversations are seen from.
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ARRIVALS_MINUTES = 240
TABLES = ("conversations", "messages", "sla_clocks", "jobs", "audit_entries")

SETTINGS = """
[sla]
week = "24/7"
leads_channel = "support-leads"

[[sla.policies]]
first_response = "4h"
next_response = "2h"
resolution = "40h"

[jobs]
workers = 8

[[skills]]
name = "general"
channel = "support"
"""

FILL = (
    """INSERT INTO customers (id, name, created_at)
    SELECT n, 'Customer ' || n, $1::timestamptz FROM generate_series(1, $2::int) AS n""",
    """INSERT INTO identities (id, customer_id, channel, address, display_name, created_at)
    SELECT n, n, 'email', 'customer' || n || '@example.org', '', $1::timestamptz
    FROM generate_series(1, $2::int) AS n""",
    """INSERT INTO conversations (
        id, token, customer_id, identity_id, channel, thread_key, subject, normalised_subject,
        skill, priority, priority_reason, language, sentiment, confidence, status, owner,
        chat_channel, chat_thread_ts, created_at, updated_at, last_inbound_at, snoozed_until)
    SELECT n, substr(md5(n::text), 1, 6) || to_hex(n), n, n, 'email', NULL, 'Question ' || n,
           'question ' || n, 'general', 'normal', '', 'en', 'neutral', 0.9, 'open', '',
           'C0SUPPORT', '1796000000.' || lpad(n::text, 6, '0'),
           $1::timestamptz - (n % 240) * interval '1 minute', $1::timestamptz,
           $1::timestamptz - (n % 240) * interval '1 minute', NULL
    FROM generate_series(1, $2::int) AS n""",
    """INSERT INTO messages (
        id, conversation_id, thread_key, conversation_token, direction, channel, dedup_key,
        external_id, sender_name, sender_address, author_id, subject, text, full_text,
        replies_to, raw_source, is_automated, automated_reason, chat_ts, chat_files_posted,
        delivery_state, delivery_error, created_at)
    SELECT n, n, NULL, NULL, 'in', 'email', 'email:<m' || n || '@example.org>',
           '<m' || n || '@example.org>', 'Customer ' || n, 'customer' || n || '@example.org',
           '', 'Question ' || n, 'Where is my parcel?', 'Where is my parcel?', '[]', NULL,
           false, '', '1796000000.' || lpad(n::text, 6, '0'), true, NULL, '',
           $1::timestamptz - (n % 240) * interval '1 minute'
    FROM generate_series(1, $2::int) AS n""",
    # Elapsed: n % 240 minutes. First reply: 4 h, warned at 3 h; resolution: 40 h, 30 h.
    """INSERT INTO sla_clocks (
        conversation_id, target, target_seconds, remaining_seconds, running_since, due_at,
        stage, breach_audit_id, created_at)
    SELECT n, t.target, t.seconds, t.seconds - (n % 240) * 60, $1::timestamptz,
           $1::timestamptz + (t.seconds - (n % 240) * 60) * interval '1 second',
           CASE WHEN t.target = 'first_response' AND n % 240 >= 180 THEN 'warned' ELSE '' END,
           NULL, $1::timestamptz
    FROM generate_series(1, $2::int) AS n,
         (VALUES ('first_response', 14400), ('resolution', 144000)) AS t(target, seconds)""",
    # The one check of each conversation, due at the first reply's next threshold.
    """INSERT INTO jobs (
        kind, payload, serial_key, conversation_id, state, run_at, attempts, locked_until,
        locked_by, last_error, created_at, updated_at)
    SELECT 'sla_check', jsonb_build_object('conversation_id', n), 'sla:' || n, n, 'pending',
           $1::timestamptz + (CASE WHEN n % 240 >= 180 THEN 240 ELSE 180 END - n % 240)
                * interval '1 minute',
           0, NULL, '', '', $1::timestamptz, $1::timestamptz
    FROM generate_series(1, $2::int) AS n""",
)


@dataclass
class Minute:
    """What one simulated minute cost and left behind."""

    minute: int
    service_cpu_s: float
    postgres_cpu_s: float
    events: int
    closed: int
    rows: dict[str, int] = field(default_factory=dict)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``url``'s database (Linux /proc).

    Only this database's backends: other work on the same server does not count.
    """
    db = await asyncpg.connect(url)
    try:
        pids = [
            int(pid)
            for pid in await db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            for pid in pid.values()
        ]
    finally:
        await db.close()
    return {pid: seconds for pid in pids if (seconds := _cpu_of(pid)) is not None}


def _cpu_of(pid: int) -> float | None:
    """CPU seconds (user and system) a process has used, or None once it is gone."""
    try:
        values = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return None
    return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


async def _fill(url: str, population: int) -> None:
    db = await asyncpg.connect(url)
    try:
        for statement in FILL:
            await db.execute(statement, START, population)
        for table in ("customers", "identities", "conversations", "messages"):
            await db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        await db.execute("VACUUM (ANALYZE)")
    finally:
        await db.close()


async def _rows(url: str) -> dict[str, int]:
    db = await asyncpg.connect(url)
    try:
        rows = {t: int(await db.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
        rows["open_conversations"] = int(
            await db.fetchval("SELECT count(*) FROM conversations WHERE status = 'open'")
        )
        rows["unfinished_jobs"] = int(
            await db.fetchval(
                "SELECT count(*) FROM jobs "
                "WHERE state IN ('pending', 'queued', 'running', 'parked')"
            )
        )
        return rows
    finally:
        await db.close()


async def run_population(
    url: str, population: int, minutes: int, close_per_mille: int
) -> dict[str, Any]:
    """Fill ``population`` open conversations, then simulate ``minutes`` minutes."""
    await apply_migrations(url)
    started = time.monotonic()
    await _fill(url, population)
    filled_s = time.monotonic() - started
    settings: Settings = settings_from_toml(
        SETTINGS, {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "x", "DATABASE_URL": url}
    )
    clock = FakeClock(START)
    chat = SilentChat()
    deadlines = Deadlines(chat, settings, clock=clock)
    workflow = Workflow(
        chat,
        settings,
        FixedSkillClassifier("general"),
        clock=clock,
        deadlines_of=deadlines.views,
        after_change=deadlines.reconcile,
    )
    runner = JobRunner(
        {
            SLA_CHECK: SlaCheck(deadlines),
            SHOW_CHANGE: ShowChange(workflow),
            POST_ALERT: PostAlert(chat),
            REDRAW_CARD: RedrawCard(chat, workflow.card),
        },
        settings.jobs,
        clock=clock,
        only_own_kinds=True,
    )
    lead = Actor("U0LEAD", "Lena")
    closing = max(population * close_per_mille // 1000, 1)
    before = await _rows(url)
    rounds: list[Minute] = []
    async with open_database(url, migrate_first=False):
        next_to_close = 1
        for minute in range(1, minutes + 1):
            cpu, pg_cpu = time.process_time(), await _backend_cpu(url)
            clock.now = START + timedelta(minutes=minute)
            to_close = (
                await Conversation.filter(id__gte=next_to_close, status=ConversationStatus.OPEN)
                .order_by("id")
                .limit(closing)
            )
            for conversation in to_close:
                await workflow.close(lead, conversation)
            next_to_close = to_close[-1].id + 1 if to_close else next_to_close
            done = 0
            while jobs := await runner.claim(settings.jobs.workers):
                await asyncio.gather(*(runner._run(job) for job in jobs))
                done += len(jobs)
            rounds.append(
                Minute(
                    minute,
                    round(time.process_time() - cpu, 2),
                    round(_spent(pg_cpu, await _backend_cpu(url)), 2),
                    done,
                    len(to_close),
                    await _rows(url),
                )
            )
    return {
        "open_conversations": population,
        "fill_seconds": round(filled_s, 1),
        "rows_before": before,
        "minutes": [vars(m) for m in rounds],
    }


def _cpu_per_event(result: dict[str, Any]) -> float:
    minutes = result["minutes"]
    cpu = sum(float(m["service_cpu_s"]) + float(m["postgres_cpu_s"]) for m in minutes)
    events = sum(int(m["events"]) for m in minutes)
    return cpu / max(events, 1)


async def main_async(populations: list[int], minutes: int, close_per_mille: int) -> dict[str, Any]:
    results = []
    async with scratch_databases(ADMIN_URL, *(f"deadlines{p}" for p in populations)) as urls:
        for url, population in zip(urls, populations, strict=True):
            results.append(await run_population(url, population, minutes, close_per_mille))
    small, large = results[0], results[-1]
    first, last = large["minutes"][0], large["minutes"][-1]
    return {
        "populations": results,
        "cpu_ms_per_event": {
            str(r["open_conversations"]): round(_cpu_per_event(r) * 1000, 2) for r in results
        },
        "ratio_cpu_per_event_large_vs_small": round(
            _cpu_per_event(large) / max(_cpu_per_event(small), 1e-9), 2
        ),
        "ratio_cpu_last_vs_first_minute": round(
            (last["service_cpu_s"] + last["postgres_cpu_s"])
            / max(first["service_cpu_s"] + first["postgres_cpu_s"], 1e-9),
            2,
        ),
        "sla_clocks_start_end": [large["rows_before"]["sla_clocks"], last["rows"]["sla_clocks"]],
        "unfinished_jobs_start_end": [
            large["rows_before"]["unfinished_jobs"],
            last["rows"]["unfinished_jobs"],
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--populations", default="10000,100000")
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--close", type=int, default=10, help="per mille closed each minute")
    args = parser.parse_args()
    populations = [int(p) for p in args.populations.split(",")]
    print(json.dumps(asyncio.run(main_async(populations, args.minutes, args.close)), indent=2))


if __name__ == "__main__":
    main()

"""How long a report takes over a year of history on PostgreSQL, against a week's.

A fresh database is filled with a year of history by bulk SQL (``bench.fill``: 1,000,000
messages in 200,000 conversations by default, with the facts reports read: first replies,
closings, each reply's wait), and a deadline breach for one conversation in fifty. Then the
report the service builds for ``/switchboard report`` (``bot.reports.Reports.report``, with
deadlines on) is timed for a week, a month and the whole year, for all skills and for one, the
median of ``--runs``; and drawing the year's charts (``adapters.charts.report_png``).

Prints one JSON object (milliseconds, and the year's time as a multiple of the week's);
progress goes to stderr. The database is dropped at the end unless ``--keep``.

    python -m bench.reports [--messages 1000000] [--runs 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from adapters.charts import report_png
from bench.fill import fill_history, scratch_database
from bot.database import open_database
from bot.reports import Reports
from bot.settings import Settings, SlaSettings
from tests.postgres_reachable import ADMIN_URL


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _breaches(url: str) -> int:
    """A first-reply breach for one conversation in fifty, as bot/deadlines.py records it."""
    connection = await asyncpg.connect(url)
    try:
        status = await connection.execute(
            """
            INSERT INTO audit_entries (conversation_id, actor_id, actor_name, action, detail,
                                       summary, created_at)
            SELECT id, '', 'Switchboard', 'sla breach',
                   jsonb_build_object('target', 'first_response'), 'First reply overdue.',
                   created_at + interval '4 hours'
            FROM conversations WHERE id % 50 = 0
            """
        )
        await connection.execute("VACUUM ANALYZE audit_entries")
        return int(status.rsplit(" ", 1)[-1])
    finally:
        await connection.close()


async def run(admin_url: str, messages: int, runs: int, keep: bool) -> dict[str, object]:
    async with scratch_database(admin_url, "switchboard_bench_reports", keep=keep) as url:
        say(f"database {url}: filling {messages:,} messages")
        await fill_history(url, messages=messages, progress=say)
        say(f"sla breaches: {await _breaches(url):,}")
        now = datetime.now(UTC)
        settings = replace(Settings(), sla=SlaSettings(enabled=True))
        reports = Reports(settings, clock=lambda: now)
        year = f"{(now - timedelta(days=365)).date()}..{now.date()}"
        timed: dict[str, float] = {}
        opened: dict[str, int] = {}
        async with open_database(url, migrate_first=False):
            for label, period, skill in (
                ("week", "week", ""),
                ("month", "month", ""),
                ("year", year, ""),
                ("week_one_skill", "week", "billing"),
                ("year_one_skill", year, "billing"),
            ):
                times = []
                for _ in range(runs):
                    started = time.perf_counter()
                    report = await reports.report(reports.period(period), skill)
                    times.append(time.perf_counter() - started)
                timed[label] = statistics.median(times) * 1000
                opened[label] = report.opened
                say(f"{label}: {timed[label]:.0f} ms ({report.opened:,} conversations opened)")
            started = time.perf_counter()
            png = report_png(await reports.report(reports.period(year)))
            chart_ms = (time.perf_counter() - started) * 1000
        return {
            "messages": messages,
            "runs": runs,
            "report_ms": {k: round(v, 1) for k, v in timed.items()},
            "conversations_opened": opened,
            "year_over_week": round(timed["year"] / timed["week"], 1),
            "year_report_and_chart_ms": round(chart_ms, 1),
            "chart_bytes": len(png),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=ADMIN_URL, help="an admin URL of the server")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the filled database")
    args = parser.parse_args()
    result = asyncio.run(run(args.postgres, args.messages, args.runs, args.keep))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

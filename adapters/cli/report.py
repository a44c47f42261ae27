"""``switchboard report``: the team's figures for a period, as text, CSV, JSON or a PNG.

It reads the service's database directly (beside a live service), the same figures
``/switchboard report`` posts in Slack.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from pathlib import Path

from bot.database import open_database
from bot.errors import ActionRefused
from bot.reports import Report, Reports, agent_lines, summary_lines
from bot.routing import skill_names
from bot.settings import config_path, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard report ...``."""
    report = subparsers.add_parser(
        "report",
        help="the team's figures for a period: volume, response times, backlog, agents",
        description=(
            "Figures from stored facts: conversations opened, first reply and resolution "
            "times (p50, p90; business time once [sla] has hours), deadlines met, the open "
            "backlog by age, replies per agent and the sentiment mix."
        ),
    )
    report.add_argument(
        "period",
        nargs="?",
        default="week",
        help="today, week (since Monday), month, or FROM..TO as YYYY-MM-DD..YYYY-MM-DD",
    )
    report.add_argument("--skill", default="", help="only this skill's conversations")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="one figure per row, for a spreadsheet")
    form.add_argument("--json", action="store_true", help="one JSON object, for a BI tool")
    form.add_argument("--png", type=Path, metavar="FILE", help="also draw the charts into FILE")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    reports = Reports(settings)

    async def build() -> Report:
        async with open_database(settings.database_url, migrate_first=False):
            skill = args.skill.lower()
            if skill and skill not in await skill_names():
                raise ActionRefused(f"there is no skill {skill!r}")
            return await reports.report(reports.period(args.period), skill)

    try:
        report = asyncio.run(build())
    except ActionRefused as exc:
        print(f"switchboard report: {exc.reason.replace('`', '')}", file=sys.stderr)
        return 2
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(("figure", "group", "when", "value"))
        writer.writerows(report.rows())
    elif args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print("\n".join(summary_lines(report)))
        for line in agent_lines(report, lambda user_id: user_id):
            print(f"  {line}")
        if args.png is not None:
            from adapters.charts import report_png

            args.png.write_bytes(report_png(report))
            print(f"Charts: {args.png}")
    return 0

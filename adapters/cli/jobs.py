"""Job subcommands for operators: ``jobs list``, ``jobs retry``, ``jobs drop``.

They work on the service's database directly, so they run beside a live service: a retried job
is picked up by its job runner at the next poll, a dropped one lets the next job of its
conversation go.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from tortoise.functions import Count

from adapters.cli import confirmed
from bot.database import open_database
from bot.jobkinds import CATALOGUE
from bot.jobs import end_jobs, retry_jobs, utcnow
from bot.settings import config_path, load_settings
from models import UNFINISHED, Job, JobState

#: What ``jobs list`` shows unless ``--state`` says otherwise: work not done yet, and failures.
LISTED = (*UNFINISHED, JobState.FAILED)
DROP_REASON = "dropped by an operator"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard jobs ...``."""
    jobs = subparsers.add_parser(
        "jobs",
        help="see waiting and failed work, retry it or drop it",
        description=(
            "Every step after a message arrives is a job. Jobs that carry a customer's message "
            "or an agent's reply park (instead of failing) while Slack refuses the token, a "
            "channel is missing or an outside system is down, and resume by themselves."
        ),
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "list", help="waiting (pending, queued, parked, running) and failed jobs, oldest first"
    )
    listing.add_argument(
        "--state",
        action="append",
        choices=[state.value for state in JobState],
        help="only jobs in this state (repeat for several)",
    )
    listing.add_argument("--kind", choices=sorted(CATALOGUE), help="only jobs of this kind")
    listing.add_argument(
        "--limit", type=int, default=100, help="show at most this many (default 100)"
    )
    listing.set_defaults(func=_list)
    retry = commands.add_parser(
        "retry", help="run a failed or parked job again now, with a fresh count of tries"
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, help="the job's id (from `jobs list`)")
    which.add_argument("--all-failed", action="store_true", help="every failed job")
    retry.set_defaults(func=_retry)
    drop = commands.add_parser(
        "drop",
        help="end a job that has not started, without running it",
        description=(
            "The job ends as cancelled and the next job of its conversation goes on. A dropped "
            "customer message never reaches Slack; a dropped reply never reaches the customer."
        ),
    )
    drop.add_argument("id", type=int, help="the job's id (from `jobs list`)")
    drop.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    drop.set_defaults(func=_drop)


def _with_database(args: argparse.Namespace, work: Callable[[], Awaitable[int]]) -> int:
    """Run ``work`` on the database the settings name; its result is the exit status."""
    settings = load_settings(config_path(args.config))

    async def run() -> int:
        async with open_database(settings.database_url, migrate_first=False):
            return await work()

    status: int = asyncio.run(run())
    return status


def _list(args: argparse.Namespace) -> int:
    states = args.state or [state.value for state in LISTED]
    return _with_database(args, lambda: list_jobs(states, args.kind, args.limit))


def _retry(args: argparse.Namespace) -> int:
    return _with_database(args, lambda: retry(args.id, all_failed=args.all_failed))


def _drop(args: argparse.Namespace) -> int:
    return _with_database(args, lambda: drop(args.id, yes=args.yes))


async def list_jobs(states: Sequence[str], kind: str | None, limit: int) -> int:
    """Print the jobs in ``states`` (of ``kind``) as a table, oldest first."""
    query = Job.filter(state__in=list(states))
    if kind:
        query = query.filter(kind=kind)
    total = await query.count()
    if not total:
        print(f"No {' or '.join(states)} jobs{f' of kind {kind}' if kind else ''}.")
        return 0
    jobs = await query.order_by("id").limit(max(limit, 1))
    now = utcnow()
    rows = [
        (
            str(job.id),
            job.kind,
            job.state.value,
            age(now, job.created_at),
            str(job.attempts),
            " ".join(job.last_error.split()) or "-",
        )
        for job in jobs
    ]
    print(table(("ID", "KIND", "STATE", "AGE", "TRIES", "REASON"), rows))
    if total > len(jobs):
        print(f"... and {total - len(jobs)} more (--limit {total} shows them all)")
    counts = await query.group_by("state").annotate(n=Count("id")).values_list("state", "n")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts))
    print(f"{total} job(s): {summary}")
    return 0


async def retry(job_id: int | None, *, all_failed: bool) -> int:
    """Run one failed or parked job, or every failed job, again now."""
    if all_failed:
        failed = await Job.filter(state=JobState.FAILED).order_by("id")
        retried = await retry_jobs(failed)
        print(f"{retried} failed job(s) will run again now." if retried else "No job failed.")
        return 0
    assert job_id is not None
    job = await _job(job_id)
    if job is None:
        return 1
    if job.state not in (JobState.FAILED, JobState.PARKED):
        print(
            f"switchboard: job {job.id} is {job.state.value}, not failed or parked: there is "
            "nothing to retry (`switchboard jobs list` shows what failed)",
            file=sys.stderr,
        )
        return 1
    if not await retry_jobs([job]):
        print(
            f"switchboard: job {job.id} changed while this ran; see `switchboard jobs list`",
            file=sys.stderr,
        )
        return 1
    print(f"Job {job.id} ({job.kind}) will run again now.")
    return 0


async def drop(job_id: int, *, yes: bool) -> int:
    """End a job that is not running, after asking unless ``yes``."""
    job = await _job(job_id)
    if job is None:
        return 1
    if job.state is JobState.RUNNING:
        print(
            f"switchboard: job {job.id} is running now and cannot be dropped; wait until it "
            "finishes or parks (`switchboard jobs list` shows its state), then drop it",
            file=sys.stderr,
        )
        return 1
    if job.state not in (*UNFINISHED, JobState.FAILED):
        print(
            f"switchboard: job {job.id} has already ended ({job.state.value}); "
            "there is nothing to drop",
            file=sys.stderr,
        )
        return 1
    about = f", about conversation {job.conversation_id}" if job.conversation_id else ""
    if not yes and not await confirmed(f"Drop job {job.id} ({job.kind}{about})? [y/N] "):
        print("Nothing was dropped.")
        return 1
    if not await end_jobs([job], JobState.CANCELLED, DROP_REASON, failed_too=True):
        print(
            f"switchboard: job {job.id} started or ended meanwhile and was not dropped; "
            "see `switchboard jobs list`",
            file=sys.stderr,
        )
        return 1
    print(f"Dropped job {job.id} ({job.kind}).")
    return 0


async def _job(job_id: int) -> Job | None:
    job = await Job.get_or_none(id=job_id)
    if job is None:
        print(
            f"switchboard: there is no job {job_id}; `switchboard jobs list` shows the ids",
            file=sys.stderr,
        )
    return job


def age(now: datetime, since: datetime) -> str:
    """How long ago ``since`` was, in its two largest units: "45s", "3m 20s", "2d 4h"."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last one is left as long as it is."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)

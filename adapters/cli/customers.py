"""Customer data subcommands: ``customers forget`` (on request) and ``customers purge`` (cron)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

from slack_sdk.web.async_client import AsyncWebClient

from adapters.cli import confirmed
from adapters.slack.chat import SlackChat
from bot.database import open_database
from bot.errors import ActionRefused
from bot.jobkinds import ERASE_THREAD
from bot.jobs import JobRunner, utcnow
from bot.privacy import (
    CustomerAddress,
    EraseThread,
    Privacy,
    Removal,
    erase_note,
    parse_address,
)
from bot.settings import Settings, config_path, load_settings
from models import UNFINISHED, Job, JobState

# How long the command works on the Slack threads itself before leaving them to the service.
ERASE_TIMEOUT_SECONDS = 120.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard customers ...``."""
    customers = subparsers.add_parser(
        "customers", help="remove customers' data: on request, or after the retention period"
    )
    commands = customers.add_subparsers(dest="customers_command", required=True, metavar="COMMAND")
    forget = commands.add_parser(
        "forget",
        help="remove everything stored about one customer and blank their Slack threads",
        description=(
            "Remove the customer's identities, conversations, messages, attachments, audit "
            "entries, triage examples learned from their words and queued work, and replace "
            "Switchboard's posts in their Slack threads with a dated note. Messages agents "
            "wrote in those threads are counted and left: a bot cannot change them."
        ),
    )
    forget.add_argument(
        "address",
        help="anna@example.org, telegram:<user id> or webhook:<source>:<sender id>",
    )
    forget.add_argument(
        "--dry-run", action="store_true", help="show what would be removed and change nothing"
    )
    forget.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(func=_forget)
    purge = commands.add_parser(
        "purge",
        help="remove closed conversations older than [retention] closed_conversations_days",
        description=(
            "What the service does every hour, for running from cron. Slack threads are left "
            "to Slack's own retention settings."
        ),
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="show what would be removed and change nothing"
    )
    purge.set_defaults(func=_purge)


def _forget(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    try:
        who = parse_address(args.address)
    except ActionRefused as exc:
        print(f"switchboard: {exc.reason}", file=sys.stderr)
        return 2
    status: int = asyncio.run(_run_forget(settings, who, dry_run=args.dry_run, yes=args.yes))
    return status


async def _run_forget(settings: Settings, who: CustomerAddress, *, dry_run: bool, yes: bool) -> int:
    async with open_database(settings.database_url, migrate_first=False):
        privacy = Privacy(settings.retention)
        found = await privacy.forget(who, dry_run=True)
        if found.nothing:
            print(f"Nothing is stored about {who}.")
            return 0
        for customer in found.customers:
            print(f"Customer: {customer}")
        if dry_run or not yes:
            _show(found)
        if dry_run:
            print("Dry run: nothing was changed.")
            return 0
        if not yes and not await confirmed("Remove all of this for good? [y/N] "):
            print("Nothing was changed.")
            return 1
        user = os.environ.get("USER") or "unknown user"
        removed = await privacy.forget(who, actor=f"command line ({user})")
        print(f"Removed: {removed.summary()}.")
        if removed.threads:
            print(f"Slack: {len(removed.threads)} thread(s) to erase.")
        if removed.erase_jobs:
            await _erase_threads(settings, removed.erase_jobs)
    return 0


def _show(removal: Removal) -> None:
    print(f"Would remove: {removal.summary()}.")
    if removal.threads:
        print(
            f"Slack: Switchboard's posts in {len(removal.threads)} thread(s) would say "
            f'"{erase_note(utcnow())}"'
        )


async def _erase_threads(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Run the Slack erasure now; what Slack refuses for the moment is left to the service."""
    client = AsyncWebClient(
        token=settings.slack.bot_token,
        base_url=settings.slack.api_url or AsyncWebClient.BASE_URL,
    )
    handler = EraseThread(SlackChat(client))
    runner = JobRunner({ERASE_THREAD: handler}, settings.jobs, only_own_kinds=True)
    # Jobs still due afterwards are reported below and finished by the service.
    with contextlib.suppress(TimeoutError):
        await runner.run_until_idle(timeout=ERASE_TIMEOUT_SECONDS)
    erased = handler.erased
    print(
        f"Slack: {erased.replaced} post(s) now show the note; {erased.files_deleted} file(s) "
        "deleted."
    )
    if erased.left:
        print(
            f"Slack: {erased.left} message(s) agents wrote in those threads were left: a bot "
            "cannot change people's messages. Delete them in Slack if they repeat the "
            "customer's data."
        )
    waiting = await Job.filter(id__in=job_ids, state__in=UNFINISHED)
    failed = await Job.filter(id__in=job_ids, state=JobState.FAILED)
    for job in waiting:
        thread = ERASE_THREAD.payload_of(job)
        print(
            f"Slack: thread {thread.thread_ts} in {thread.chat_channel} could not be changed "
            f"yet ({job.last_error or 'busy'}); the running service retries it."
        )
    for job in failed:
        thread = ERASE_THREAD.payload_of(job)
        print(
            f"Slack: thread {thread.thread_ts} in {thread.chat_channel} could not be changed "
            f"({job.last_error}); change it by hand.",
            file=sys.stderr,
        )


def _purge(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    status: int = asyncio.run(_run_purge(settings, dry_run=args.dry_run))
    return status


async def _run_purge(settings: Settings, *, dry_run: bool) -> int:
    privacy = Privacy(settings.retention)
    cutoff = privacy.cutoff()
    if cutoff is None:
        print("retention.closed_conversations_days is 0: conversations are kept for ever.")
        return 0
    async with open_database(settings.database_url, migrate_first=False):
        removal = await privacy.purge_closed(dry_run=dry_run)
    since = f"{cutoff:%Y-%m-%d %H:%M} UTC"
    if removal.nothing:
        print(f"No closed conversation has been left without activity since {since}.")
    elif dry_run:
        print(f"Would remove (no activity since {since}): {removal.summary()}.")
        print("Dry run: nothing was changed.")
    else:
        print(f"Removed (no activity since {since}): {removal.summary()}.")
    return 0

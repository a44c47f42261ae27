"""A job that outlives its lease still runs once: leases are renewed, and claims are checked.

Two workers share the queue (as two replicas do). A job that takes three times its lease is
not taken by the other worker while its own worker lives; a worker killed mid-job loses the job
to the other worker once, after the lease ran out; a worker whose claim was taken commits
nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from slack_sdk.web.async_client import AsyncWebClient
from tortoise.transactions import in_transaction

from bot.errors import LeaseLost
from bot.jobkinds import PURGE_CLOSED
from bot.jobs import JobKind, JobRunner, hold_claim, utcnow
from bot.privacy import Hold, Privacy, PurgeClosed, Removal, schedule_purge
from bot.settings import JobSettings, RetentionSettings
from bot.shapes import ChannelKind
from models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Customer,
    Identity,
    Job,
    JobState,
)
from standins.slack import SlackSandbox
from tests.conftest import BOT_TOKEN, eventually

ROOT = Path(__file__).resolve().parents[1]
LEASE = 0.6
SETTINGS = JobSettings(
    workers=2,
    lease_seconds=LEASE,
    poll_seconds=0.05,
    idle_poll_seconds=0.05,
    backoff_base_seconds=0.05,
)


@dataclass(frozen=True, slots=True)
class SlowPost:
    text: str


SLOW = JobKind("slow_post", SlowPost, lambda payload: "slow")


@dataclass
class PostsAfterAWhile:
    """Works three leases long, then posts the job's text to Slack (a side effect to count)."""

    client: AsyncWebClient
    seconds: float = 3 * LEASE
    runs: list[datetime] = field(default_factory=list)

    async def run(self, job: Job) -> None:
        self.runs.append(utcnow())
        await asyncio.sleep(self.seconds)
        text = SLOW.payload_of(job).text
        await self.client.chat_postMessage(channel="support", text=text)

    async def give_up(self, job: Job, reason: str) -> None:
        raise AssertionError(f"the slow job failed: {reason}")


def leases(outcome: str) -> float:
    value = REGISTRY.get_sample_value("switchboard_job_leases_total", {"outcome": outcome})
    return value or 0.0


def client_of(slack: SlackSandbox) -> AsyncWebClient:
    return AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)


def posts(slack: SlackSandbox, text: str) -> int:
    return sum(1 for m in slack.channel_messages("support") if m.get("text") == text)


async def done(job: Job) -> bool:
    return (await Job.get(id=job.id)).state is JobState.DONE


@pytest.mark.usefixtures("db")
async def test_a_job_three_leases_long_runs_once_with_two_workers(slack: SlackSandbox) -> None:
    first, second = PostsAfterAWhile(client_of(slack)), PostsAfterAWhile(client_of(slack))
    workers = [JobRunner({SLOW: first}, SETTINGS), JobRunner({SLOW: second}, SETTINGS)]
    renewed_before = leases("renewed")
    job = await SLOW.enqueue(SlowPost("once only"))
    for worker in workers:
        await worker.start()
    try:
        await eventually(lambda: done(job), timeout=20)
    finally:
        for worker in workers:
            await worker.stop()
    assert len(first.runs) + len(second.runs) == 1
    assert posts(slack, "once only") == 1
    assert (await Job.get(id=job.id)).attempts == 1
    assert leases("renewed") >= renewed_before + 2


@pytest.mark.usefixtures("db")
async def test_a_worker_whose_claim_was_taken_commits_nothing() -> None:
    late = JobRunner({SLOW: PostsAfterAWhile(AsyncWebClient())}, SETTINGS)
    job = await SLOW.enqueue(SlowPost("taken over"))
    (claimed_by_late,) = await late.claim(1)
    # Its lease runs out (a stalled process) and another worker takes the job.
    await Job.filter(id=job.id).update(locked_until=utcnow())
    await asyncio.sleep(0.01)
    other = JobRunner({SLOW: PostsAfterAWhile(AsyncWebClient())}, SETTINGS)
    (claimed_by_other,) = await other.claim(1)
    assert claimed_by_other.locked_by != claimed_by_late.locked_by
    lost_before = leases("lost")

    await late._end(claimed_by_late, JobState.DONE, "")  # the late worker finishes after all
    async with in_transaction() as conn:
        with pytest.raises(LeaseLost):
            await hold_claim(claimed_by_late, conn)

    stored = await Job.get(id=job.id)
    assert stored.state is JobState.RUNNING
    assert stored.locked_by == claimed_by_other.locked_by
    assert leases("lost") == lost_before + 1


async def test_a_worker_killed_mid_job_loses_it_once_after_the_lease_ran_out(
    db: str, slack: SlackSandbox, tmp_path: Path
) -> None:
    job = await SLOW.enqueue(SlowPost("after the crash"))
    started = tmp_path / "started"
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.lease_worker",
        db,
        str(started),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await eventually(lambda: asyncio.to_thread(started.exists), timeout=30)
        await asyncio.sleep(LEASE)  # it renews its lease while it works
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    held_until = (await Job.get(id=job.id)).locked_until
    assert held_until is not None

    survivor = PostsAfterAWhile(client_of(slack), seconds=0)
    runner = JobRunner({SLOW: survivor}, SETTINGS)
    await runner.start()
    try:
        await eventually(lambda: done(job), timeout=20)
    finally:
        await runner.stop()
    assert len(survivor.runs) == 1
    assert survivor.runs[0] >= held_until
    assert posts(slack, "after the crash") == 1
    assert (await Job.get(id=job.id)).attempts == 2


class SlowPurge(Privacy):
    """Retention one conversation a batch, each batch a lease long: the purge lasts 3 leases."""

    async def purge_closed(
        self, *, dry_run: bool = False, batch: int = 1, hold: Hold | None = None
    ) -> Removal:
        return await super().purge_closed(dry_run=dry_run, batch=1, hold=hold)

    async def _purge(
        self, ids: list[int], cutoff: datetime, dry_run: bool, hold: Hold | None
    ) -> Removal:
        await asyncio.sleep(LEASE)
        return await super()._purge(ids, cutoff, dry_run, hold)


class CountedPurge(PurgeClosed):
    def __init__(self, privacy: Privacy) -> None:
        super().__init__(privacy)
        self.runs = 0

    async def run(self, job: Job) -> None:
        self.runs += 1
        await super().run(job)


@pytest.mark.usefixtures("db")
async def test_a_purge_three_leases_long_runs_once_with_two_workers() -> None:
    privacy = SlowPurge(RetentionSettings(closed_conversations_days=30))
    customer = await Customer.create(name="Alt")
    identity = await Identity.create(
        customer=customer, channel=ChannelKind.EMAIL, address="alt@kunde.example"
    )
    long_ago = utcnow() - timedelta(days=60)
    for number in range(3):
        conversation = await Conversation.create(
            token=f"OLD{number}",
            customer=customer,
            identity=identity,
            channel=ChannelKind.EMAIL,
            status=ConversationStatus.CLOSED,
        )
        await Conversation.filter(id=conversation.id).update(updated_at=long_ago)
    handlers = [CountedPurge(privacy), CountedPurge(privacy)]
    workers = [JobRunner({PURGE_CLOSED: handler}, SETTINGS) for handler in handlers]
    await schedule_purge(privacy)
    for worker in workers:
        await worker.start()
    try:

        async def purged() -> bool:
            return not await Conversation.exists()

        await eventually(purged, timeout=20)
        await eventually(lambda: _purge_done(), timeout=10)
    finally:
        for worker in workers:
            await worker.stop()
    assert sum(handler.runs for handler in handlers) == 1
    # One audit entry a batch: three batches, none run twice.
    assert await AuditEntry.filter(action="retention").count() == 3


async def _purge_done() -> bool:
    return await Job.filter(kind=PURGE_CLOSED.name, state=JobState.DONE).exists()

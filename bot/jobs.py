"""Durable jobs: every step after intake, retried with backoff until it is done.

A job is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has one writer
anyway) and leased: a worker that dies mid-job leaves a lease that runs out, and the job is
claimed again. Jobs sharing a ``serial_key`` run one at a time, oldest first, so the messages of
one conversation reach Slack and the customer in the order they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q, Subquery
from tortoise.functions import Min
from tortoise.transactions import in_transaction

from bot.errors import PermanentDeliveryError, TransientDeliveryError
from bot.settings import JobSettings
from models import Job, JobState

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobHandler(Protocol):
    """Runs one kind of job. ``run`` must be safe to repeat after a crash."""

    async def run(self, job: Job) -> None: ...

    async def give_up(self, job: Job, reason: str) -> None:
        """Called once when the job will not be tried again (show the failure to people)."""
        ...


async def enqueue(
    kind: str,
    payload: Mapping[str, object],
    *,
    serial_key: str,
    run_at: datetime | None = None,
    now: datetime | None = None,
    conn: BaseDBAsyncClient | None = None,
) -> Job:
    """Add a job; pass ``conn`` of the transaction that stores what the job is about."""
    job = new_job(kind, payload, serial_key=serial_key, run_at=run_at or now or utcnow())
    await job.save(using_db=conn)
    return job


def new_job(kind: str, payload: Mapping[str, object], *, serial_key: str, run_at: datetime) -> Job:
    """A job not saved yet (``Job.bulk_create`` adds many in one statement)."""
    return Job(kind=kind, payload=dict(payload), serial_key=serial_key, run_at=run_at)


def backoff_seconds(attempts: int, settings: JobSettings, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the server's Retry-After."""
    exponential = settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
    delay = min(exponential, settings.backoff_max_seconds) * random.uniform(0.8, 1.2)
    return float(max(delay, retry_after or 0.0))


class JobRunner:
    """Claims due jobs and runs them with their handlers, ``settings.workers`` at a time.

    With ``only_own_kinds`` it claims only the kinds it has handlers for (a command line tool
    running its own jobs beside the service); the service's runner claims every kind.
    """

    def __init__(
        self,
        handlers: Mapping[str, JobHandler],
        settings: JobSettings,
        *,
        clock: Clock = utcnow,
        on_outcome: Callable[[str, str], None] | None = None,
        only_own_kinds: bool = False,
    ) -> None:
        self.handlers = dict(handlers)
        self.settings = settings
        self.only_own_kinds = only_own_kinds
        self.clock = clock
        self.worker_id = f"w-{uuid.uuid4().hex[:12]}"
        self._on_outcome = on_outcome
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """A job was added: look for work now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="job-runner")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming; let running jobs finish for ``grace_seconds``, then release them."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            free = self.settings.workers - len(self._running)
            claimed: list[Job] = []
            if free > 0:
                try:
                    claimed = await self.claim(free)
                except Exception:
                    log.exception("claiming jobs failed; retrying")
            for job in claimed:
                task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Run due jobs until none is due (tests and the demo use this instead of ``start``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            jobs = await self.claim(self.settings.workers)
            if not jobs:
                return
            await asyncio.gather(*(self._run(job) for job in jobs))
        raise TimeoutError(f"jobs still due after {timeout} s")

    async def claim(self, limit: int) -> list[Job]:
        """Lease up to ``limit`` due jobs whose serial key has no older unfinished job."""
        now = self.clock()
        due = Q(state=JobState.PENDING, run_at__lte=now) | Q(
            state=JobState.RUNNING, locked_until__lt=now
        )
        if self.only_own_kinds:
            due &= Q(kind__in=list(self.handlers))
        # Only the oldest unfinished job of each serial key may run. Picking them in the query
        # itself matters: a window of due jobs filtered afterwards can be all followers waiting
        # behind a head that is backing off, and then nothing would run at all.
        heads = Subquery(
            Job.filter(state__in=(JobState.PENDING, JobState.RUNNING))
            .group_by("serial_key")
            .annotate(first=Min("id"))
            .values("first")
        )
        async with in_transaction() as conn:
            chosen = (
                await Job.filter(due, id__in=heads)
                .order_by("run_at", "id")
                .limit(limit)
                .select_for_update(skip_locked=True)
                .using_db(conn)
            )
            lease = now + timedelta(seconds=self.settings.lease_seconds)
            for job in chosen:
                job.state = JobState.RUNNING
                job.locked_until = lease
                job.locked_by = self.worker_id
                job.attempts += 1
                await job.save(
                    using_db=conn,
                    update_fields=["state", "locked_until", "locked_by", "attempts", "updated_at"],
                )
            return list(chosen)

    async def _run(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        if handler is None:
            await self._finish(job, JobState.FAILED, f"no handler for job kind {job.kind!r}")
            return
        try:
            await handler.run(job)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(job))
            raise
        except PermanentDeliveryError as exc:
            await self._give_up(handler, job, exc.reason)
        except TransientDeliveryError as exc:
            await self._retry(handler, job, exc.reason, exc.retry_after)
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.kind)
            await self._retry(handler, job, f"{type(exc).__name__}: {exc}", None)
        else:
            await self._finish(job, JobState.DONE, "")

    async def _retry(
        self, handler: JobHandler, job: Job, reason: str, retry_after: float | None
    ) -> None:
        if job.attempts >= self.settings.max_attempts:
            await self._give_up(handler, job, f"gave up after {job.attempts} attempts: {reason}")
            return
        delay = backoff_seconds(job.attempts, self.settings, retry_after)
        log.warning(
            "job will be retried",
            extra={"job": job.id, "kind": job.kind, "reason": reason, "delay": round(delay, 1)},
        )
        await Job.filter(id=job.id, locked_by=self.worker_id).update(
            state=JobState.PENDING,
            run_at=self.clock() + timedelta(seconds=delay),
            locked_until=None,
            last_error=reason,
        )
        self._outcome(job.kind, "retried")

    async def _give_up(self, handler: JobHandler, job: Job, reason: str) -> None:
        log.error("job failed for good", extra={"job": job.id, "kind": job.kind, "reason": reason})
        try:
            await handler.give_up(job, reason)
        finally:
            await self._finish(job, JobState.FAILED, reason)

    async def _finish(self, job: Job, state: JobState, error: str) -> None:
        await Job.filter(id=job.id).update(state=state, locked_until=None, last_error=error)
        self._outcome(job.kind, state.value)

    async def _release(self, job: Job) -> None:
        await Job.filter(id=job.id, locked_by=self.worker_id).update(
            state=JobState.PENDING, locked_until=None
        )

    def _outcome(self, kind: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(kind, outcome)


async def cancel_pending(job_id: int) -> bool:
    """Cancel a job that has not started; False if it is already running or finished."""
    updated = await Job.filter(id=job_id, state=JobState.PENDING).update(state=JobState.CANCELLED)
    return updated == 1


async def queue_depth(now: datetime | None = None) -> int:
    """How many jobs are due, retrying or running; one scheduled for later (a snooze) is not."""
    waiting = Q(run_at__lte=now or utcnow()) | Q(attempts__gt=0)
    due = (Q(state=JobState.PENDING) & waiting) | Q(state=JobState.RUNNING)
    return await Job.filter(due).count()

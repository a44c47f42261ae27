"""Durable jobs: every step after intake, retried with backoff until it is done.

Each kind of job is defined once as a ``JobKind`` (bot/jobkinds.py lists them all): its name,
its payload dataclass, the serial key a payload runs under, and whether it may park.

How a job moves::

    enqueue ─> pending ─claim─> running ─> done
       │          ▲                │  ├──> pending   (a retry, later, with backoff)
       │          │                │  ├──> parked    (waits on a person or an outage)
       └> queued ─┘ (its turn)     │  └──> failed    (can never succeed; shown to people)
                                   └─────> cancelled (an undo, an operator's drop)

- **One at a time per serial key, oldest first.** Only the oldest unfinished job of a key is
  ``pending``; later ones are ``queued`` and become pending when it ends. So the claim only
  looks at due pending rows, and costs the same with a million jobs queued behind others.
  Enqueueing and ending take the key's advisory lock on PostgreSQL (SQLite has one writer).
- **Leases.** A claim leases the job to one worker under a fresh claim token (``locked_by``).
  The worker renews the lease while the job runs; if a renewal finds the token gone, another
  worker holds the job, and this one stops it and records nothing. Every state change checks
  the token, and long jobs call ``hold_claim`` in each transaction they commit.
- **Hand-over.** A job can leave the work that follows from it at once to its own worker
  (``run_next``: a message's post after its threading). That job is saved already leased, and
  the worker runs it as soon as the first one is done: no claim, no turn of the runner's loop.
  If the worker dies in between, the lease runs out and another worker claims it as usual.
- **Parking.** Work that carries a customer's message or an agent's reply (``may_park``) never
  fails for good because of a wrong token, a missing channel or a long outage: it parks, is
  tried again every ``park_retry_seconds``, and at once when the runner's probe (Slack's
  auth.test) answers again. Its followers wait behind it, so order still holds afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q, Subquery
from tortoise.fields.data import JSON_DUMPS
from tortoise.functions import Count, Min
from tortoise.transactions import in_transaction

from bot.database import insert_rows, placeholders
from bot.errors import (
    BlockedDeliveryError,
    DeliveryRefused,
    LeaseLost,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.metrics import JOB_LEASES
from bot.settings import JobSettings
from models import UNFINISHED, Job, JobState

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
P = TypeVar("P", bound="DataclassInstance")

# The length of ``Job.serial_key``.
_KEY_LENGTH = 64

#: Unfinished jobs that have not started: what a cancel or an operator's drop can end.
NOT_STARTED = (JobState.PENDING, JobState.QUEUED, JobState.PARKED)
#: States of a key's head: while one of these is there, the key's queued jobs wait.
HEAD = (JobState.PENDING, JobState.RUNNING, JobState.PARKED)
# Jobs deleted in one statement when old finished jobs are tidied away, and statements a tidy.
_PRUNE_BATCH = 5000
_PRUNE_BATCHES_PER_TIDY = 10
# How often the runner's loop also looks for parked jobs and expired leases.
_FULL_CLAIM_SECONDS = 2.0
# How often a runner tidies the queue (finished jobs, stuck queues, parked work's probe).
MAINTENANCE_SECONDS = 30.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class NewJob:
    """A job not saved yet (``JobKind.new``): what ``enqueue_jobs`` and ``start_queue`` save.

    A plain object rather than a ``Job`` model: intake adds a job per message, and building
    tortoise models was a tenth of its CPU. ``payload`` holds the payload's fields as they are
    (not copied): they are written as JSON when the job is saved.
    """

    kind: str
    payload: dict[str, Any]
    serial_key: str
    conversation_id: int | None
    run_at: datetime
    state: JobState = JobState.PENDING
    attempts: int = 0
    locked_until: datetime | None = None
    locked_by: str = ""


@dataclass(frozen=True, slots=True)
class JobKind(Generic[P]):
    """One kind of job, defined once: name, payload, serial key and whether it may park."""

    name: str
    payload_type: type[P]
    serial_key: Callable[[P], str]
    #: Carries a customer's message or an agent's reply: never fails for good for a cause a
    #: person can fix or that passes; it parks instead.
    may_park: bool = False

    def stored_key(self, payload: P) -> str:
        """The serial key of ``payload`` as the jobs table stores it (64 characters at most)."""
        return self.serial_key(payload)[:_KEY_LENGTH]

    def new(self, payload: P, *, run_at: datetime) -> NewJob:
        """A job not saved yet; ``enqueue_jobs`` saves many at once."""
        return NewJob(
            kind=self.name,
            payload={f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)},
            serial_key=self.stored_key(payload),
            conversation_id=getattr(payload, "conversation_id", None),
            run_at=run_at,
        )

    async def enqueue(
        self,
        payload: P,
        *,
        conn: BaseDBAsyncClient | None = None,
        run_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Job:
        """Add a job; pass ``conn`` of the transaction that stores what the job is about."""
        return await enqueue_job(self.new(payload, run_at=run_at or now or utcnow()), conn)

    def payload_of(self, job: Job) -> P:
        """The job's payload as its dataclass (jobs stored before a field existed get defaults)."""
        data: dict[str, Any] = dict(job.payload)
        if job.conversation_id is not None:
            data.setdefault("conversation_id", job.conversation_id)
        names = {f.name for f in dataclasses.fields(self.payload_type)}
        return self.payload_type(**{k: v for k, v in data.items() if k in names})


class JobHandler(Protocol):
    """Runs one kind of job. ``run`` must be safe to repeat after a crash."""

    async def run(self, job: Job) -> None: ...

    async def give_up(self, job: Job, reason: str) -> None:
        """Called once when the job will not be tried again (show the failure to people)."""
        ...


async def enqueue_jobs(jobs: Sequence[NewJob], conn: BaseDBAsyncClient | None = None) -> None:
    """Save new jobs: pending when their serial key is free, queued behind it otherwise."""
    if conn is None:
        async with in_transaction() as own:
            await enqueue_jobs(jobs, own)
        return
    await _queue_behind_busy_keys(jobs, conn)
    await _insert(jobs, conn)
    _count_added(jobs)


async def enqueue_job(job: NewJob, conn: BaseDBAsyncClient | None = None) -> Job:
    """Save one new job as ``enqueue_jobs`` does; returns it saved, with its id."""
    if conn is None:
        async with in_transaction() as own:
            return await enqueue_job(job, own)
    await _queue_behind_busy_keys([job], conn)
    saved = await _insert_one(job, conn)
    _count_added([job])
    return saved


async def _queue_behind_busy_keys(jobs: Sequence[NewJob], conn: BaseDBAsyncClient) -> None:
    """Each job pending when its serial key is free, queued behind its unfinished work (or an
    earlier job of the same key in ``jobs``) otherwise; the keys stay locked (``_lock_keys``)."""
    busy = await _lock_busy_keys(sorted({job.serial_key for job in jobs}), conn)
    for job in jobs:
        job.state = JobState.QUEUED if job.serial_key in busy else JobState.PENDING
        busy.add(job.serial_key)


async def start_queue(jobs: Sequence[NewJob], conn: BaseDBAsyncClient | None = None) -> None:
    """Save the first jobs of a serial key that has had none: one statement, no lock.

    The first is pending, the others queue behind it in order. Only for a key that nobody
    else can have used yet (a conversation's first timers, set by the job that opened it).
    """
    if len({job.serial_key for job in jobs}) > 1:
        raise ValueError("start_queue takes the jobs of one serial key")
    for index, job in enumerate(jobs):
        job.state = JobState.QUEUED if index else JobState.PENDING
    await _insert(jobs, conn or connections.get("default"))
    _count_added(jobs)


_COLUMNS = (
    "kind", "payload", "serial_key", "conversation_id", "state", "run_at",
    "attempts", "locked_until", "locked_by", "last_error", "created_at", "updated_at",
)  # fmt: skip


def _row(job: NewJob, now: datetime) -> tuple[object, ...]:
    return (
        job.kind, JSON_DUMPS(job.payload), job.serial_key, job.conversation_id, job.state.value,
        job.run_at, job.attempts, job.locked_until, job.locked_by, "", now, now,
    )  # fmt: skip


async def _insert(jobs: Sequence[NewJob], conn: BaseDBAsyncClient) -> None:
    """Save new jobs in one statement, in order (a key's queue runs in id order)."""
    now = utcnow()
    await insert_rows(conn, "jobs", _COLUMNS, [_row(job, now) for job in jobs])


async def _insert_one(job: NewJob, conn: BaseDBAsyncClient) -> Job:
    """Save one new job; returns it as the ``Job`` a runner runs and a later save() updates."""
    now = utcnow()
    (row,) = await insert_rows(conn, "jobs", _COLUMNS, [_row(job, now)], returning="id")
    saved = Job(
        id=int(row["id"]),
        kind=job.kind,
        payload=job.payload,
        serial_key=job.serial_key,
        conversation_id=job.conversation_id,
        state=job.state,
        run_at=job.run_at,
        attempts=job.attempts,
        locked_until=job.locked_until,
        locked_by=job.locked_by,
        created_at=now,
        updated_at=now,
    )
    saved._saved_in_db = True  # as after save(): a later save() updates this row
    return saved


@dataclass(slots=True)
class _Running:
    """The job a runner's task is running now, and what it hands over (``run_next``)."""

    runner: JobRunner
    #: Saved leased to this worker, each with the loop time it was saved at.
    handed: list[tuple[Job, float]] = field(default_factory=list)
    #: False once the job's handler is over: later hand-overs are enqueued as usual.
    open: bool = True


_RUNNING: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "switchboard_running_job", default=None
)


async def run_next(job: NewJob, conn: BaseDBAsyncClient, *, new_key: bool = False) -> None:
    """Save ``job`` to run on this worker as soon as the job it is running now is done.

    For work that follows at once from the running job (a message's post after its
    threading): it is saved leased to this worker, so it needs no claim and no turn of the
    runner's loop. It is a job like any other all the same: if the worker dies first, its
    lease runs out and another worker claims it. When its key has unfinished work, outside a
    runner's job, or for a kind this runner does not run, it is enqueued as usual instead.

    Call it in a transaction the running job commits before it returns. ``new_key``: nobody
    else can have used the key yet (``start_queue``'s rule), so no lock and no look.
    """
    running = _RUNNING.get()
    if running is None or not running.open or job.kind not in running.runner.handlers:
        await (start_queue([job], conn) if new_key else enqueue_jobs([job], conn))
        return
    if not new_key and await _lock_busy_keys([job.serial_key], conn):
        job.state = JobState.QUEUED
        await _insert([job], conn)
        return
    runner = running.runner
    job.state = JobState.RUNNING
    job.attempts = 1
    job.locked_by = runner.new_token()
    job.locked_until = runner.clock() + timedelta(seconds=runner.settings.lease_seconds)
    saved = await _insert_one(job, conn)
    running.handed.append((saved, asyncio.get_running_loop().time()))


#: Jobs due at once that this process has added so far (``enqueue_jobs``, ``start_queue``).
#: After a job, a runner looks for more work only when this moved, the job let a queued one go,
#: or it was at capacity: anything else (another replica's jobs, a timer coming due, a job
#: queued behind another) its next poll or the promotion finds.
_due_jobs_added = 0


def _count_added(jobs: Sequence[NewJob]) -> None:
    global _due_jobs_added
    now = utcnow()
    _due_jobs_added += sum(1 for j in jobs if j.state is JobState.PENDING and j.run_at <= now)


def jobs_added() -> int:
    """How many jobs due at once this process has added (it only grows)."""
    return _due_jobs_added


async def _lock_busy_keys(keys: Sequence[str], conn: BaseDBAsyncClient) -> set[str]:
    """Lock the serial keys (``_lock_keys``) and return those with unfinished work.

    On PostgreSQL one call (``switchboard_busy_keys``, models/migrations/0012) does both: it
    reads after taking the locks, as the two statements did.
    """
    if keys and conn.capabilities.dialect == "postgres":
        _, rows = await conn.execute_query(
            "SELECT k FROM switchboard_busy_keys($1::text[]) AS k", [sorted(keys)]
        )
        return {str(row["k"]) for row in rows}
    await _lock_keys(keys, conn)
    return await _busy(keys, conn)


async def _busy(keys: Sequence[str], conn: BaseDBAsyncClient) -> set[str]:
    """The keys among ``keys`` with unfinished work: a new job of theirs queues behind it."""
    if not keys:
        return set()
    marks = placeholders(conn, len(keys) + len(UNFINISHED))
    keys_in, states_in = ", ".join(marks[: len(keys)]), ", ".join(marks[len(keys) :])
    _, rows = await conn.execute_query(
        f"SELECT DISTINCT serial_key FROM jobs WHERE serial_key IN ({keys_in})"
        f" AND state IN ({states_in})",
        [*keys, *(state.value for state in UNFINISHED)],
    )
    return {str(row["serial_key"]) for row in rows}


async def _lock_keys(keys: Sequence[str], conn: BaseDBAsyncClient) -> None:
    """Hold the serial keys' advisory locks until the transaction ends (PostgreSQL only).

    Whoever enqueues behind a key or ends its head holds the lock, so a job is never queued
    behind a head that has just ended. Keys are locked in sorted order, so two transactions
    never wait on each other in a circle.
    """
    if not keys or conn.capabilities.dialect != "postgres":
        return
    await conn.execute_query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
        [sorted(keys)],
    )


async def _promote_next(serial_key: str, conn: BaseDBAsyncClient) -> bool:
    """Make the oldest queued job of a key pending, if nothing else of the key is unfinished.

    True if it did.
    """
    # One statement: this runs after every job, so it is worth a round trip. Its states are
    # HEAD's.
    mark = "$1" if conn.capabilities.dialect == "postgres" else "?"
    promoted, _ = await conn.execute_query(
        f"""UPDATE jobs SET state = 'pending'
        WHERE id = (SELECT MIN(id) FROM jobs WHERE serial_key = {mark} AND state = 'queued')
          AND NOT EXISTS (
            SELECT 1 FROM jobs WHERE serial_key = {mark}
              AND state IN ('pending', 'running', 'parked')
          )""",
        [serial_key] if mark == "$1" else [serial_key, serial_key],
    )
    return bool(promoted)


async def end_jobs(
    jobs: Iterable[Job],
    state: JobState,
    reason: str,
    conn: BaseDBAsyncClient | None = None,
    *,
    failed_too: bool = False,
) -> int:
    """End jobs that are not running (cancel, drop) and let the next of each key go.

    With ``failed_too`` a failed job is ended as well: an operator who dropped it has seen it.
    """
    chosen = list(jobs)
    if not chosen:
        return 0
    if conn is None:
        async with in_transaction() as own:
            return await end_jobs(chosen, state, reason, own, failed_too=failed_too)
    keys = sorted({job.serial_key for job in chosen})
    await _lock_keys(keys, conn)
    endable = [*NOT_STARTED, JobState.FAILED] if failed_too else list(NOT_STARTED)
    ended = await (
        Job.filter(id__in=[job.id for job in chosen], state__in=endable)
        .using_db(conn)
        .update(state=state, locked_until=None, last_error=reason, updated_at=utcnow())
    )
    for key in keys:
        await _promote_next(key, conn)
    return int(ended)


async def cancel_pending(job_id: int) -> bool:
    """Cancel a job that has not started; False if it is already running or finished."""
    job = await Job.get_or_none(id=job_id)
    if job is None:
        return False
    return await end_jobs([job], JobState.CANCELLED, "") == 1


async def cancel_about(kind: JobKind[Any], conversation_id: int, conn: BaseDBAsyncClient) -> None:
    """Cancel the jobs of ``kind`` about a conversation that have not started (a snooze's
    wake-up, moot waiting checks)."""
    waiting = (
        await Job.filter(kind=kind.name, conversation_id=conversation_id, state__in=NOT_STARTED)
        .using_db(conn)
        .all()
    )
    await end_jobs(waiting, JobState.CANCELLED, "", conn)


async def hold_claim(job: Job, conn: BaseDBAsyncClient) -> None:
    """Raise ``LeaseLost`` unless this worker still holds ``job``; locks its row until commit.

    Long jobs call it in each transaction they commit, so a worker whose lease ran out never
    commits over the worker that took the job over.
    """
    held = (
        await Job.filter(id=job.id, locked_by=job.locked_by, state=JobState.RUNNING)
        .select_for_update()
        .using_db(conn)
        .values_list("id", flat=True)
    )
    if not held:
        raise LeaseLost(f"job {job.id} ({job.kind}) is no longer held by this worker")


def backoff_seconds(attempts: int, settings: JobSettings, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the server's Retry-After."""
    exponential = settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
    delay = min(exponential, settings.backoff_max_seconds) * random.uniform(0.8, 1.2)
    return float(max(delay, retry_after or 0.0))


Probe = Callable[[], Awaitable[bool]]


def next_wait(wait: float, settings: JobSettings, *, found: bool, woken: bool) -> float:
    """How long the runner's loop next waits for a wake-up before it looks for jobs again.

    ``poll_seconds`` after a look that found work or a wake-up; otherwise twice the last wait,
    up to ``idle_poll_seconds``. Jobs this process adds wake it at once; what else comes due (a
    timer, another replica's work) waits at most that long, and an idle service does not ask the
    database twice a second.
    """
    if found or woken:
        return settings.poll_seconds
    return min(wait * 2, settings.idle_wait_limit)


class JobRunner:
    """Claims due jobs and runs them with their handlers, ``settings.workers`` at a time.

    With ``only_own_kinds`` it claims only the kinds it has handlers for (a command line tool
    running its own jobs beside the service); the service's runner claims every kind.
    ``probe`` tells whether parked work may go on now (the service asks Slack's auth.test).
    """

    def __init__(
        self,
        handlers: Mapping[JobKind[Any], JobHandler],
        settings: JobSettings,
        *,
        clock: Clock = utcnow,
        on_outcome: Callable[[str, str], None] | None = None,
        only_own_kinds: bool = False,
        probe: Probe | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.kinds = {kind.name: kind for kind in handlers}
        self.handlers = {kind.name: handler for kind, handler in handlers.items()}
        self.settings = settings
        self.only_own_kinds = only_own_kinds
        self.clock = clock
        self.probe = probe
        self.worker_id = f"w-{uuid.uuid4().hex[:12]}"
        self._on_outcome = on_outcome
        # Set by whoever adds a job (``wake`` lets them hold it before the runner exists).
        self._wake = wake or asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._tidy_task: asyncio.Task[None] | None = None
        self._next_full_claim = 0.0
        self._added_at_claim = -1

    def notify(self) -> None:
        """A job was added: look for work now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="job-runner")
        self._tidy_task = asyncio.create_task(self._tidy_loop(), name="job-tidying")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming; let running jobs finish for ``grace_seconds``, then release them."""
        self._stopping.set()
        self._wake.set()
        if self._tidy_task is not None:
            self._tidy_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tidy_task
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self) -> None:
        wait = self.settings.poll_seconds
        while not self._stopping.is_set():
            free = self.settings.workers - len(self._running)
            claimed: list[Job] = []
            self._added_at_claim = jobs_added()
            if free > 0:
                loop_time = asyncio.get_running_loop().time()
                all_due = loop_time >= self._next_full_claim
                if all_due:
                    every = min(_FULL_CLAIM_SECONDS, self.settings.park_retry_seconds)
                    self._next_full_claim = loop_time + every
                try:
                    claimed = await self.claim(free, all_due=all_due)
                except Exception:
                    log.exception("claiming jobs failed; retrying")
            for job in claimed:
                task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue
            self._wake.clear()
            woken = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
                woken = True
            wait = next_wait(wait, self.settings, found=bool(claimed), woken=woken)

    def _finished(self, task: asyncio.Task[None]) -> None:
        was_full = len(self._running) >= self.settings.workers
        self._running.discard(task)
        # Look for work again only if there can be some the last claim did not see: it left
        # due jobs for want of a free worker, or jobs were added since (by the job that just
        # ended, most often). A promoted follower wakes the loop in ``_end``.
        if was_full or jobs_added() != self._added_at_claim:
            self._wake.set()

    async def _tidy_loop(self) -> None:
        """Tidy the queue now and every ``MAINTENANCE_SECONDS``, beside the claiming loop."""
        while True:
            try:
                await self.maintain()
            except Exception:
                log.exception("tidying the job queue failed; trying again later")
            await asyncio.sleep(MAINTENANCE_SECONDS)

    async def maintain(self) -> None:
        """Delete old finished jobs, free stuck queues, resume parked work whose cause is gone."""
        before = self.clock() - timedelta(days=self.settings.keep_done_days)
        await prune_finished(before, batches=_PRUNE_BATCHES_PER_TIDY)
        await unstick_queues()
        parked = await Job.filter(state=JobState.PARKED).exists()
        if parked and self.probe is not None and await self.probe():
            resumed = await resume_parked(self.clock())
            if resumed:
                log.info("parked jobs resume", extra={"jobs": resumed})
                self.notify()

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Run due jobs until none is due (tests and the demo use this instead of ``start``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            jobs = await self.claim(self.settings.workers)
            if not jobs:
                return
            await asyncio.gather(*(self._run(job) for job in jobs))
        raise TimeoutError(f"jobs still due after {timeout} s")

    async def claim(self, limit: int, *, all_due: bool = True) -> list[Job]:
        """Lease up to ``limit`` due jobs (each the head of its serial key) to this worker.

        Without ``all_due`` only pending jobs are looked at: parked jobs and expired leases
        come due seconds or minutes apart, so the runner's loop looks for them less often.
        """
        now = self.clock()
        token = self.new_token()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        # Small index scans instead of one OR: each reads only as many rows as it takes.
        sources = [_PENDING_DUE]
        if all_due:
            sources += [_PARKED_DUE, _LEASE_EXPIRED]
        kinds = list(self.handlers) if self.only_own_kinds else None
        chosen: list[Job] = []
        conn = connections.get("default")
        for due in sources:
            if len(chosen) >= limit:
                break
            wanted = limit - len(chosen)
            if conn.capabilities.dialect == "postgres":
                chosen += await _lease_postgres(conn, due, now, wanted, kinds, lease, token)
            else:
                chosen += await _lease(due, now, wanted, kinds, lease, token)
        return chosen

    def new_token(self) -> str:
        """A fresh claim token of this worker (``locked_by`` of the jobs it leases)."""
        return f"{self.worker_id}-{uuid.uuid4().hex[:16]}"

    async def _run(self, job: Job) -> None:
        """Run ``job``, then what it handed over (``run_next``), on this task."""
        handed = await self._run_one(job)
        while handed:
            follower, saved_at = handed.pop(0)
            try:
                if await self._still_held(follower, saved_at):
                    handed = await self._run_one(follower) + handed
            except asyncio.CancelledError:
                # Stopping: what was not started goes back to the queue for the next worker.
                await asyncio.shield(self._release_all([j for j, _ in handed]))
                raise

    async def _still_held(self, job: Job, saved_at: float) -> bool:
        """Whether a handed-over job's lease is still this worker's; renewed if it is old.

        Within a third of the lease nobody else can have claimed it (the keeper renews at
        that pace too); later, the renewal tells.
        """
        if asyncio.get_running_loop().time() - saved_at < self.settings.lease_seconds / 3:
            return True
        renewed = await Job.filter(
            id=job.id, locked_by=job.locked_by, state=JobState.RUNNING
        ).update(locked_until=self.clock() + timedelta(seconds=self.settings.lease_seconds))
        if not renewed:
            self._lost(job, "it was handed over, and its lease ran out before it started")
        return bool(renewed)

    async def _run_one(self, job: Job) -> list[tuple[Job, float]]:
        """Run one job and record its outcome; returns the jobs it handed over, when it is
        done (a job that failed may have handed over nothing that was committed)."""
        handler = self.handlers.get(job.kind)
        if handler is None:
            await self._end(job, JobState.FAILED, f"no handler for job kind {job.kind!r}")
            return []
        running = _Running(self)
        current = asyncio.current_task()
        assert current is not None
        lost = asyncio.Event()
        # Set once the handler is over: its outcome is being recorded, and each state change
        # checks the token itself, so the keeper must no longer stop this task.
        ran = asyncio.Event()
        keeper = asyncio.create_task(
            self._keep_lease(job, current, lost, ran), name=f"lease-{job.id}"
        )
        context = _RUNNING.set(running)
        try:
            try:
                await handler.run(job)
            finally:
                running.open = False
                _RUNNING.reset(context)
                ran.set()
        except asyncio.CancelledError:
            await asyncio.shield(self._release_all([j for j, _ in running.handed]))
            if lost.is_set():
                return []  # another worker holds the job now; it records the outcome
            await asyncio.shield(self._release(job))
            raise
        except LeaseLost as exc:
            self._lost(job, str(exc))
        except PermanentDeliveryError as exc:
            expected = isinstance(exc, DeliveryRefused)
            await self._give_up(handler, job, exc.reason, expected=expected)
        except BlockedDeliveryError as exc:
            if self._may_park(job):
                await self._park(job, exc.reason)
            else:
                await self._retry(handler, job, exc.reason, exc.retry_after)
        except TransientDeliveryError as exc:
            await self._retry(handler, job, exc.reason, exc.retry_after)
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.kind)
            await self._retry(handler, job, f"{type(exc).__name__}: {exc}", None)
        else:
            await self._end(job, JobState.DONE, "")
            return running.handed
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        # Not done: what it handed over (if that was committed at all) goes to the queue, so
        # the next worker claims it instead of waiting for its lease to end.
        await self._release_all([j for j, _ in running.handed])
        return []

    async def _keep_lease(
        self, job: Job, task: asyncio.Task[Any], lost: asyncio.Event, ran: asyncio.Event
    ) -> None:
        """Renew ``job``'s lease while it runs; stop the job if another worker took it.

        A renewal that finds the job no longer running after its handler is over (``ran``)
        finds the outcome this worker has just recorded: that is not a lost lease.
        """
        every = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                renewed = await Job.filter(
                    id=job.id, locked_by=job.locked_by, state=JobState.RUNNING
                ).update(locked_until=self.clock() + timedelta(seconds=self.settings.lease_seconds))
            except Exception:
                log.exception("renewing the lease of job %s failed; trying again", job.id)
                continue
            if renewed:
                JOB_LEASES.labels("renewed").inc()
                continue
            if ran.is_set():
                return
            self._lost(job, "its lease was not renewed in time")
            lost.set()
            task.cancel()
            return

    def _lost(self, job: Job, why: str) -> None:
        JOB_LEASES.labels("lost").inc()
        log.warning(
            "lost the lease of a running job: stopped it, recorded nothing",
            extra={"job": job.id, "kind": job.kind, "reason": why},
        )

    def _may_park(self, job: Job) -> bool:
        kind = self.kinds.get(job.kind)
        return kind is not None and kind.may_park

    async def _retry(
        self, handler: JobHandler, job: Job, reason: str, retry_after: float | None
    ) -> None:
        if job.attempts >= self.settings.max_attempts:
            if self._may_park(job):
                await self._park(job, f"still failing after {job.attempts} attempts: {reason}")
            else:
                await self._give_up(
                    handler, job, f"gave up after {job.attempts} attempts: {reason}"
                )
            return
        delay = backoff_seconds(job.attempts, self.settings, retry_after)
        log.warning(
            "job will be retried",
            extra={"job": job.id, "kind": job.kind, "reason": reason, "delay": round(delay, 1)},
        )
        await self._requeue(job, JobState.PENDING, delay, reason, "retried")

    async def _park(self, job: Job, reason: str) -> None:
        log.warning(
            "job parked until its cause is fixed",
            extra={"job": job.id, "kind": job.kind, "reason": reason},
        )
        await self._requeue(
            job, JobState.PARKED, self.settings.park_retry_seconds, reason, "parked"
        )

    async def _requeue(
        self, job: Job, state: JobState, delay: float, reason: str, outcome: str
    ) -> None:
        updated = await Job.filter(
            id=job.id, locked_by=job.locked_by, state=JobState.RUNNING
        ).update(
            state=state,
            run_at=self.clock() + timedelta(seconds=delay),
            locked_until=None,
            last_error=reason,
            updated_at=utcnow(),
        )
        if updated:
            self._outcome(job.kind, outcome)
        else:
            self._lost(job, f"it was to be {outcome}")

    async def _give_up(
        self, handler: JobHandler, job: Job, reason: str, *, expected: bool = False
    ) -> None:
        if not await Job.filter(id=job.id, locked_by=job.locked_by).exists():
            self._lost(job, "it was to fail")
            return
        log.log(
            logging.INFO if expected else logging.ERROR,
            "job refused" if expected else "job failed for good",
            extra={"job": job.id, "kind": job.kind, "reason": reason},
        )
        try:
            await handler.give_up(job, reason)
        finally:
            await self._end(job, JobState.FAILED, reason)

    async def _end(self, job: Job, state: JobState, error: str) -> None:
        outcome = await _end_running(job, state, error)
        if outcome == "lost":
            self._lost(job, f"it was to be {state.value}")
            return
        self._outcome(job.kind, state.value)
        if outcome == "promoted":
            self._wake.set()  # the next job of its key is due now

    async def _release_all(self, jobs: list[Job]) -> None:
        for job in jobs:
            await self._release(job)

    async def _release(self, job: Job) -> None:
        await Job.filter(id=job.id, locked_by=job.locked_by, state=JobState.RUNNING).update(
            state=JobState.PENDING, locked_until=None, updated_at=utcnow()
        )

    def _outcome(self, kind: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(kind, outcome)


@dataclass(frozen=True, slots=True)
class _Due:
    """Where a claim looks for due jobs: as SQL (``{now}`` the moment) and as a filter."""

    sql: str
    filter: Callable[[datetime], Q]


_PENDING_DUE = _Due(
    "state = 'pending' AND run_at <= {now}",
    lambda now: Q(state=JobState.PENDING, run_at__lte=now),
)
_PARKED_DUE = _Due(
    "state = 'parked' AND run_at <= {now}",
    lambda now: Q(state=JobState.PARKED, run_at__lte=now),
)
_LEASE_EXPIRED = _Due(
    "state = 'running' AND locked_until < {now}",
    lambda now: Q(state=JobState.RUNNING, locked_until__lt=now),
)


async def _lease_postgres(
    conn: BaseDBAsyncClient,
    due: _Due,
    now: datetime,
    limit: int,
    kinds: list[str] | None,
    lease: datetime,
    token: str,
) -> list[Job]:
    """Lease due jobs in one statement (it runs before every job: one round trip).

    SKIP LOCKED lets replicas claim side by side, each taking rows the others have not locked.
    """
    only_kinds = "AND kind = ANY($6::text[])" if kinds is not None else ""
    rows = await conn.execute_query_dict(
        f"""UPDATE jobs SET state = 'running', locked_until = $2, locked_by = $3,
              attempts = attempts + 1, updated_at = $4
            WHERE id IN (
              SELECT id FROM jobs WHERE {due.sql.format(now="$1")} {only_kinds}
              ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
            RETURNING *""",
        [now, lease, token, utcnow(), limit, *([kinds] if kinds is not None else [])],
    )
    return sorted((Job._init_from_db(**row) for row in rows), key=lambda j: (j.run_at, j.id))


async def _lease(
    due: _Due, now: datetime, limit: int, kinds: list[str] | None, lease: datetime, token: str
) -> list[Job]:
    """Lease due jobs on SQLite, whose one process claims alone (no row locks there)."""
    async with in_transaction() as conn:
        query = Job.filter(due.filter(now))
        if kinds is not None:
            query = query.filter(kind__in=kinds)
        chosen = await query.order_by("run_at", "id").limit(limit).using_db(conn)
        if not chosen:
            return []
        await (
            Job.filter(id__in=[job.id for job in chosen])
            .using_db(conn)
            .update(
                state=JobState.RUNNING,
                locked_until=lease,
                locked_by=token,
                attempts=F("attempts") + 1,
                updated_at=utcnow(),
            )
        )
    for job in chosen:
        job.state = JobState.RUNNING
        job.locked_until = lease
        job.locked_by = token
        job.attempts += 1
    return chosen


#: How ending a running job went (``_end_running``).
Ending = Literal["lost", "ended", "promoted"]


async def _end_running(job: Job, state: JobState, error: str) -> Ending:
    """End a job this worker runs and let the next of its key go.

    Returns "ended", "promoted" (a queued job of its key is pending now), or "lost" (the lease
    is lost: another worker holds the job). On PostgreSQL one call of ``switchboard_finish_job``
    (models/migrations/0012) does it all.
    """
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        rows = await conn.execute_query_dict(
            "SELECT switchboard_finish_job($1, $2, $3, $4, $5, $6) AS outcome",
            [job.id, job.locked_by, state.value, error, utcnow(), job.serial_key],
        )
        outcome = str(rows[0]["outcome"])
        return "lost" if outcome == "lost" else "promoted" if outcome == "promoted" else "ended"
    async with in_transaction() as own:
        ended = await (
            Job.filter(id=job.id, locked_by=job.locked_by, state=JobState.RUNNING)
            .using_db(own)
            .update(state=state, locked_until=None, last_error=error, updated_at=utcnow())
        )
        if not ended:
            return "lost"
        return "promoted" if await _promote_next(job.serial_key, own) else "ended"


async def prune_finished(before: datetime, *, batches: int | None = None) -> int:
    """Delete jobs that ended (done or cancelled) before ``before``, a batch at a time.

    ``batches`` bounds the work of one call, so tidying a large backlog never holds up the
    runner's loop for long: the next tidying goes on where this one stopped.
    """
    removed = 0
    while batches is None or batches > 0:
        if batches is not None:
            batches -= 1
        # One statement a batch, the ids chosen in the database: an IN list of 5,000 ids built
        # by the ORM held the event loop for tens of milliseconds a batch (a slow post behind it).
        batch = (
            Job.filter(state__in=(JobState.DONE, JobState.CANCELLED), updated_at__lt=before)
            .limit(_PRUNE_BATCH)
            .values("id")
        )
        deleted = await Job.filter(id__in=Subquery(batch)).delete()
        removed += deleted
        if deleted < _PRUNE_BATCH:
            return removed
    return removed


async def unstick_queues() -> int:
    """Let a queue go on whose every unfinished job is queued (a safety net; normally none)."""
    heads = (
        await Job.filter(state=JobState.QUEUED)
        .exclude(serial_key__in=Subquery(Job.filter(state__in=HEAD).values("serial_key")))
        .values_list("serial_key", flat=True)
    )
    keys = sorted({str(key) for key in heads})
    await promote_next(keys)
    return len(keys)


async def promote_next(keys: Iterable[str]) -> None:
    """Let the oldest queued job of each key go, if nothing else of the key is unfinished.

    For whoever deletes unfinished jobs (forgetting a customer, a retention purge): call it
    after the deleting transaction commits, so no follower waits behind a deleted head.
    """
    for key in sorted(set(keys)):
        async with in_transaction() as conn:
            await _lock_keys([key], conn)
            await _promote_next(key, conn)


async def resume_parked(now: datetime) -> int:
    """Make every parked job due now (its cause is gone)."""
    return int(await Job.filter(state=JobState.PARKED).update(run_at=now))


async def retry_jobs(jobs: Iterable[Job], now: datetime | None = None) -> int:
    """An operator's retry: failed or parked jobs run again now, with a fresh count of tries.

    A retried job whose key has other unfinished work queues behind it.
    """
    chosen = [job for job in jobs if job.state in (JobState.FAILED, JobState.PARKED)]
    retried = 0
    for job in chosen:
        async with in_transaction() as conn:
            await _lock_keys([job.serial_key], conn)
            if job.state is JobState.PARKED:
                state = JobState.PARKED
            elif await _busy([job.serial_key], conn):
                state = JobState.QUEUED
            else:
                state = JobState.PENDING
            retried += await (
                Job.filter(id=job.id, state=job.state)
                .using_db(conn)
                .update(state=state, run_at=now or utcnow(), attempts=0, updated_at=utcnow())
            )
    return retried


@dataclass(frozen=True, slots=True)
class Waiting:
    """Unfinished jobs of one kind that are due: how many, and since when the oldest."""

    kind: str
    count: int
    oldest: datetime


async def waiting_by_kind(now: datetime | None = None) -> list[Waiting]:
    """Unfinished jobs by kind that wait (what /healthz and /metrics report).

    Parked and retrying jobs wait even while their next try is ahead (``_waits``).
    """
    rows = (
        await Job.filter(_waits(now or utcnow()))
        .group_by("kind")
        .annotate(count=Count("id"), oldest=Min("created_at"))
        .values("kind", "count", "oldest")
    )
    return [Waiting(str(r["kind"]), int(r["count"]), _aware(r["oldest"])) for r in rows]


def _waits(now: datetime) -> Q:
    """Unfinished jobs that wait: due, or tried before (retrying, parked or running).

    A job scheduled for later that was never tried (a snooze's end, a reply in its undo
    window) does not wait yet.
    """
    tried = Q(attempts__gt=0) | Q(state=JobState.PARKED)
    return Q(state__in=UNFINISHED) & (Q(run_at__lte=now) | tried)


def _aware(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def queue_depth(now: datetime | None = None) -> int:
    """How many jobs are due, retrying, parked or running; one scheduled for later is not."""
    return await Job.filter(_waits(now or utcnow())).count()

"""The durable job queue: retries, backoff, Retry-After, ordering per conversation, leases."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.transactions import in_transaction

import bot.jobs as jobs_module
from bot.errors import BlockedDeliveryError, PermanentDeliveryError, TransientDeliveryError
from bot.jobs import (
    JobKind,
    JobRunner,
    cancel_pending,
    end_jobs,
    enqueue_jobs,
    next_wait,
    prune_finished,
    queue_depth,
    retry_jobs,
    run_next,
    unstick_queues,
    utcnow,
    waiting_by_kind,
)
from bot.settings import JobSettings
from models import Job, JobState
from tests.conftest import eventually

SETTINGS = JobSettings(
    workers=4, lease_seconds=60, max_attempts=3, backoff_base_seconds=2, backoff_max_seconds=60
)


@dataclass(frozen=True, slots=True)
class Item:
    """A test job's payload: the serial key it runs under."""

    key: str


POST = JobKind("post", Item, lambda item: item.key)
DELIVER = JobKind("deliver", Item, lambda item: item.key)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Recorder:
    """A handler that fails as told and remembers what it ran."""

    failures: list[Exception] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    gave_up: list[tuple[int, str]] = field(default_factory=list)

    async def run(self, job: Job) -> None:
        self.ran.append(job.id)
        if self.failures:
            raise self.failures.pop(0)

    async def give_up(self, job: Job, reason: str) -> None:
        self.gave_up.append((job.id, reason))


async def state_of(job: Job) -> Job:
    return await Job.get(id=job.id)


@pytest.mark.usefixtures("db")
async def test_a_job_runs_once_and_is_done() -> None:
    clock = Clock()
    recorder = Recorder()
    runner = JobRunner({POST: recorder}, SETTINGS, clock=clock)
    job = await POST.enqueue(Item("c1"), now=clock())

    await runner.run_until_idle()
    await runner.run_until_idle()

    assert recorder.ran == [job.id]
    assert (await state_of(job)).state is JobState.DONE
    assert await queue_depth() == 0


@pytest.mark.usefixtures("db")
async def test_a_transient_failure_is_retried_after_backoff_and_retry_after() -> None:
    clock = Clock()
    recorder = Recorder(failures=[TransientDeliveryError("Slack: rate limited", retry_after=30)])
    runner = JobRunner({POST: recorder}, SETTINGS, clock=clock)
    job = await POST.enqueue(Item("c1"), now=clock())

    await runner.run_until_idle()
    waiting = await state_of(job)
    assert waiting.state is JobState.PENDING
    assert waiting.last_error == "Slack: rate limited"
    assert waiting.run_at >= clock() + timedelta(seconds=30)

    clock.advance(29)
    await runner.run_until_idle()
    assert recorder.ran == [job.id]

    clock.advance(2)
    await runner.run_until_idle()
    assert recorder.ran == [job.id, job.id]
    assert (await state_of(job)).state is JobState.DONE


@pytest.mark.usefixtures("db")
async def test_a_permanent_failure_gives_up_at_once_and_says_why() -> None:
    clock = Clock()
    recorder = Recorder(failures=[PermanentDeliveryError("mailbox unknown")])
    runner = JobRunner({DELIVER: recorder}, SETTINGS, clock=clock)
    job = await DELIVER.enqueue(Item("r1"), now=clock())

    await runner.run_until_idle()

    assert recorder.gave_up == [(job.id, "mailbox unknown")]
    failed = await state_of(job)
    assert failed.state is JobState.FAILED
    assert failed.last_error == "mailbox unknown"


@pytest.mark.usefixtures("db")
async def test_repeated_transient_failures_give_up_after_max_attempts() -> None:
    clock = Clock()
    recorder = Recorder(failures=[TransientDeliveryError("relay down")] * 5)
    runner = JobRunner({DELIVER: recorder}, SETTINGS, clock=clock)
    job = await DELIVER.enqueue(Item("r1"), now=clock())

    for _ in range(5):
        await runner.run_until_idle()
        clock.advance(120)

    assert len(recorder.ran) == SETTINGS.max_attempts
    assert len(recorder.gave_up) == 1
    assert "gave up after 3 attempts: relay down" in recorder.gave_up[0][1]
    assert (await state_of(job)).state is JobState.FAILED


@pytest.mark.usefixtures("db")
async def test_jobs_of_one_conversation_run_in_order_even_across_retries() -> None:
    clock = Clock()
    recorder = Recorder(failures=[TransientDeliveryError("Slack 500")])
    runner = JobRunner({POST: recorder}, SETTINGS, clock=clock)
    first = await POST.enqueue(Item("c1"), now=clock())
    second = await POST.enqueue(Item("c1"), now=clock())
    other = await POST.enqueue(Item("c2"), now=clock())

    await runner.run_until_idle()
    # The first failed and waits; the second must wait behind it, other conversations not.
    assert recorder.ran == [first.id, other.id]

    clock.advance(10)
    await runner.run_until_idle()
    assert recorder.ran == [first.id, other.id, first.id, second.id]


@pytest.mark.usefixtures("db")
async def test_followers_waiting_behind_backed_off_jobs_do_not_starve_other_work() -> None:
    # Many conversations whose first job is backing off and whose next job is due: those
    # followers are the oldest due jobs, and none of them may run yet. Work of another
    # conversation, due later, must still be found.
    clock = Clock()
    recorder = Recorder()
    runner = JobRunner({POST: recorder}, SETTINGS, clock=clock)
    for number in range(SETTINGS.workers * 10):
        await POST.enqueue(Item(f"c{number}"), run_at=clock() + timedelta(hours=1))
        await POST.enqueue(Item(f"c{number}"), now=clock())
    clock.advance(1)
    free = await POST.enqueue(Item("other"), now=clock())

    claimed = await runner.claim(SETTINGS.workers)

    assert [job.id for job in claimed] == [free.id]


@pytest.mark.usefixtures("db")
async def test_a_job_held_by_a_dead_worker_is_taken_over_after_its_lease() -> None:
    clock = Clock()
    dead = JobRunner({POST: Recorder()}, SETTINGS, clock=clock)
    job = await POST.enqueue(Item("c1"), now=clock())
    assert [j.id for j in await dead.claim(1)] == [job.id]

    recorder = Recorder()
    alive = JobRunner({POST: recorder}, SETTINGS, clock=clock)
    assert await alive.claim(1) == []

    clock.advance(SETTINGS.lease_seconds + 1)
    await alive.run_until_idle()
    assert recorder.ran == [job.id]
    assert (await state_of(job)).attempts == 2


@pytest.mark.usefixtures("db")
async def test_only_a_pending_job_can_be_cancelled() -> None:
    clock = Clock()
    later = await DELIVER.enqueue(Item("r1"), run_at=clock() + timedelta(seconds=10))
    running = await DELIVER.enqueue(Item("r2"), now=clock())
    await JobRunner({}, SETTINGS, clock=clock).claim(1)

    assert await cancel_pending(later.id) is True
    assert await cancel_pending(running.id) is False
    assert (await state_of(later)).state is JobState.CANCELLED


PARKABLE = JobKind("reply", Item, lambda item: item.key, may_park=True)


@pytest.mark.usefixtures("db")
async def test_customer_work_parks_on_a_cause_a_person_fixes_and_its_followers_wait() -> None:
    clock = Clock()
    recorder = Recorder(failures=[BlockedDeliveryError("Slack: invalid_auth")])
    runner = JobRunner({PARKABLE: recorder}, SETTINGS, clock=clock)
    first = await PARKABLE.enqueue(Item("c1"), now=clock())
    second = await PARKABLE.enqueue(Item("c1"), now=clock())

    await runner.run_until_idle()
    parked = await state_of(first)
    assert parked.state is JobState.PARKED
    assert parked.last_error == "Slack: invalid_auth"
    assert (await state_of(second)).state is JobState.QUEUED
    assert recorder.gave_up == []

    clock.advance(SETTINGS.park_retry_seconds + 1)
    await runner.run_until_idle()
    assert recorder.ran == [first.id, first.id, second.id]
    assert (await state_of(second)).state is JobState.DONE


@pytest.mark.usefixtures("db")
async def test_customer_work_parks_instead_of_giving_up_after_max_attempts() -> None:
    clock = Clock()
    recorder = Recorder(failures=[TransientDeliveryError("relay down")] * 5)
    runner = JobRunner({PARKABLE: recorder}, SETTINGS, clock=clock)
    job = await PARKABLE.enqueue(Item("r1"), now=clock())

    for _ in range(SETTINGS.max_attempts):
        await runner.run_until_idle()
        clock.advance(120)

    parked = await state_of(job)
    assert parked.state is JobState.PARKED
    assert parked.last_error == "still failing after 3 attempts: relay down"
    assert recorder.gave_up == []


@pytest.mark.usefixtures("db")
async def test_parked_work_goes_on_at_once_when_the_probe_says_the_cause_is_gone() -> None:
    clock = Clock()
    answers = [False, True]

    async def slack_answers() -> bool:
        return answers.pop(0)

    recorder = Recorder(failures=[BlockedDeliveryError("Slack: invalid_auth")])
    runner = JobRunner({PARKABLE: recorder}, SETTINGS, clock=clock, probe=slack_answers)
    job = await PARKABLE.enqueue(Item("c1"), now=clock())
    await runner.run_until_idle()

    await runner.maintain()  # Slack still refuses: it stays parked for later
    await runner.run_until_idle()
    assert (await state_of(job)).state is JobState.PARKED
    await runner.maintain()  # Slack accepts the token again
    await runner.run_until_idle()
    assert (await state_of(job)).state is JobState.DONE


@pytest.mark.usefixtures("db")
async def test_finished_jobs_go_a_bounded_batch_at_a_time_and_nothing_else_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs_module, "_PRUNE_BATCH", 3)
    old = utcnow() - timedelta(days=8)
    await enqueue_jobs([POST.new(Item(f"k{n}"), run_at=old) for n in range(10)])
    ids = sorted(await Job.all().values_list("id", flat=True))
    await Job.filter(id__in=ids[:6]).update(state=JobState.DONE, updated_at=old)
    await Job.filter(id=ids[6]).update(state=JobState.CANCELLED, updated_at=old)
    await Job.filter(id=ids[7]).update(state=JobState.DONE)  # finished today: kept
    await Job.filter(id=ids[8]).update(state=JobState.FAILED, updated_at=old)  # for people
    # ids[9] is still pending.

    assert await prune_finished(utcnow() - timedelta(days=7), batches=2) == 6
    assert await prune_finished(utcnow() - timedelta(days=7), batches=2) == 1
    assert sorted(await Job.all().values_list("id", flat=True)) == ids[7:]


@pytest.mark.usefixtures("db")
async def test_old_finished_jobs_are_deleted_and_a_stuck_queue_goes_on() -> None:
    clock = Clock()
    runner = JobRunner({POST: Recorder()}, SETTINGS, clock=clock)
    done = await POST.enqueue(Item("c1"), now=clock())
    await runner.run_until_idle()
    await Job.filter(id=done.id).update(updated_at=utcnow() - timedelta(days=8))
    # A follower whose head vanished (deleted by hand): the tidying lets it go on.
    stuck = await POST.enqueue(Item("c2"), now=clock())
    await Job.filter(id=stuck.id).update(state=JobState.QUEUED)

    assert await prune_finished(utcnow() - timedelta(days=7)) == 1
    assert await unstick_queues() == 1
    assert not await Job.filter(id=done.id).exists()
    assert (await state_of(stuck)).state is JobState.PENDING


@pytest.mark.usefixtures("db")
async def test_an_operator_retries_failed_work_and_drops_waiting_work() -> None:
    clock = Clock()
    recorder = Recorder(failures=[PermanentDeliveryError("mailbox unknown")])
    runner = JobRunner({DELIVER: recorder}, SETTINGS, clock=clock)
    failed = await DELIVER.enqueue(Item("r1"), now=clock())
    await runner.run_until_idle()
    assert (await state_of(failed)).state is JobState.FAILED

    assert await retry_jobs([await state_of(failed)], now=clock()) == 1
    await runner.run_until_idle()
    assert (await state_of(failed)).state is JobState.DONE

    head = await DELIVER.enqueue(Item("r2"), run_at=clock() + timedelta(hours=1))
    follower = await DELIVER.enqueue(Item("r2"), now=clock())
    assert await end_jobs([head], JobState.CANCELLED, "dropped by an operator") == 1
    assert (await state_of(follower)).state is JobState.PENDING


@pytest.mark.usefixtures("db")
async def test_parked_and_retrying_work_counts_as_waiting_between_its_tries() -> None:
    clock = Clock()
    recorder = Recorder(failures=[BlockedDeliveryError("Slack: invalid_auth")])
    runner = JobRunner({PARKABLE: recorder}, SETTINGS, clock=clock)
    await PARKABLE.enqueue(Item("c1"), now=clock())
    await POST.enqueue(Item("later"), run_at=clock() + timedelta(hours=1))
    await runner.run_until_idle()

    (waiting,) = await waiting_by_kind(clock())
    assert (waiting.kind, waiting.count) == ("reply", 1)


@pytest.mark.usefixtures("db")
async def test_a_lease_renewal_after_the_job_ended_does_not_stop_the_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The keeper can renew just after the outcome is stored and before it is stopped (the
    commit's answer is slow to come back): it finds the job done, which is no lost lease."""
    quick = JobSettings(workers=1, lease_seconds=0.3)
    outcomes: list[str] = []
    runner = JobRunner({POST: Recorder()}, quick, on_outcome=lambda _, o: outcomes.append(o))
    recorded = JobRunner._end

    async def slow_to_return(self: JobRunner, job: Job, state: JobState, error: str) -> None:
        await recorded(self, job, state, error)
        await asyncio.sleep(quick.lease_seconds)

    monkeypatch.setattr(JobRunner, "_end", slow_to_return)
    job = await POST.enqueue(Item("c1"))

    await runner.run_until_idle()

    assert (await state_of(job)).state is JobState.DONE
    assert outcomes == ["done"]
    assert "lost the lease" not in caplog.text


@pytest.mark.usefixtures("db")
async def test_a_job_that_waited_long_is_kept_for_the_days_after_it_ended() -> None:
    clock = Clock()
    job = await POST.enqueue(Item("c1"), now=clock())
    ten_days_ago = utcnow() - timedelta(days=10)
    await Job.filter(id=job.id).update(created_at=ten_days_ago, updated_at=ten_days_ago)
    await JobRunner({POST: Recorder()}, SETTINGS, clock=clock).run_until_idle()

    assert await prune_finished(utcnow() - timedelta(days=7)) == 0
    assert (await state_of(job)).state is JobState.DONE


@pytest.mark.usefixtures("db")
async def test_thousands_of_jobs_enqueued_at_once_are_all_kept_in_order() -> None:
    # More rows than one statement's parameters allow (12 a job): several inserts, in order.
    clock = Clock()
    await enqueue_jobs([POST.new(Item("one key"), run_at=clock()) for _ in range(3_000)])

    states = [job.state for job in await Job.filter(serial_key="one key").order_by("id")]
    assert len(states) == 3_000
    assert states[0] == JobState.PENDING  # the first is the key's head, the rest queue behind
    assert set(states[1:]) == {JobState.QUEUED}


@dataclass
class HandsOver:
    """A first step that hands its follow-up (a ``DELIVER`` job of ``key``) to its worker, and
    fails after committing it as often as told."""

    key: str
    clock: Clock
    failures: list[Exception] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)

    async def run(self, job: Job) -> None:
        self.ran.append(job.id)
        async with in_transaction() as conn:
            await run_next(DELIVER.new(Item(self.key), run_at=self.clock()), conn)
        if self.failures:
            raise self.failures.pop(0)

    async def give_up(self, job: Job, reason: str) -> None:
        pass


class CountingRunner(JobRunner):
    """Counts its claims that found work."""

    claims = 0

    async def claim(self, limit: int, *, all_due: bool = True) -> list[Job]:
        claimed = await super().claim(limit, all_due=all_due)
        self.claims += bool(claimed)
        return claimed


@pytest.mark.usefixtures("db")
async def test_a_handed_over_job_runs_next_on_the_same_worker_without_a_claim() -> None:
    clock = Clock()
    first, follow = HandsOver("c9", clock), Recorder()
    runner = CountingRunner({POST: first, DELIVER: follow}, SETTINGS, clock=clock)
    job = await POST.enqueue(Item("c1"), now=clock())

    await runner.run_until_idle()

    assert first.ran == [job.id]
    assert len(follow.ran) == 1
    assert runner.claims == 1  # the first job's; the follow-up needed none
    handed = await Job.get(id=follow.ran[0])
    assert (handed.kind, handed.state, handed.attempts) == ("deliver", JobState.DONE, 1)
    assert await queue_depth() == 0


@pytest.mark.usefixtures("db")
async def test_a_hand_over_to_a_busy_key_queues_behind_it_in_order() -> None:
    clock = Clock()
    first, follow = HandsOver("c9", clock), Recorder()
    runner = JobRunner({POST: first, DELIVER: follow}, SETTINGS, clock=clock)
    earlier = await DELIVER.enqueue(Item("c9"), now=clock(), run_at=clock() + timedelta(hours=1))
    await POST.enqueue(Item("c1"), now=clock())

    await runner.run_until_idle()
    assert follow.ran == []  # behind the earlier job of its key, which is not due yet
    (queued,) = await Job.filter(kind="deliver", state=JobState.QUEUED)

    clock.advance(3600)
    await runner.run_until_idle()
    await runner.run_until_idle()
    assert follow.ran == [earlier.id, queued.id]


@pytest.mark.usefixtures("db")
async def test_what_a_failed_job_handed_over_goes_to_the_queue_and_still_runs() -> None:
    clock = Clock()
    first = HandsOver("c9", clock, failures=[TransientDeliveryError("after the commit")])
    follow = Recorder()
    runner = JobRunner({POST: first, DELIVER: follow}, SETTINGS, clock=clock)
    await POST.enqueue(Item("c1"), now=clock())

    await runner.run_until_idle()
    # Not run by the failed job's worker, but released to the queue (not left leased until
    # its lease ends), and claimed from there as any job: its second attempt.
    (released,) = await Job.filter(kind="deliver")
    assert follow.ran == [released.id]
    assert (released.state, released.attempts) == (JobState.DONE, 2)
    (retried,) = await Job.filter(kind="post")
    assert retried.state is JobState.PENDING


@pytest.mark.usefixtures("db")
async def test_a_handed_over_job_of_a_worker_that_died_is_claimed_when_its_lease_ends() -> None:
    clock = Clock()
    first, follow = HandsOver("c9", clock), Recorder()
    dying = JobRunner({POST: first, DELIVER: follow}, SETTINGS, clock=clock)
    await POST.enqueue(Item("c1"), now=clock())
    (job,) = await dying.claim(1)
    # The worker runs the first job and dies before the follow-up starts.
    handed = await dying._run_one(job)
    assert len(handed) == 1
    assert follow.ran == []

    other = JobRunner({DELIVER: follow}, SETTINGS, clock=clock)
    await other.run_until_idle()
    assert follow.ran == []  # still leased
    clock.advance(SETTINGS.lease_seconds + 1)
    await other.run_until_idle()
    assert follow.ran == [handed[0][0].id]
    assert (await state_of(handed[0][0])).state is JobState.DONE


@pytest.mark.usefixtures("db")
async def test_outside_a_job_a_hand_over_is_an_ordinary_enqueue() -> None:
    async with in_transaction() as conn:
        await run_next(DELIVER.new(Item("c9"), run_at=utcnow()), conn)
    (job,) = await Job.all()
    assert (job.state, job.attempts, job.locked_by) == (JobState.PENDING, 0, "")


def test_an_idle_runner_looks_less_and_less_often_and_at_once_after_work_or_a_wake_up() -> None:
    settings = JobSettings(poll_seconds=0.5, idle_poll_seconds=2.0)
    waits = [settings.poll_seconds]
    for _ in range(4):
        waits.append(next_wait(waits[-1], settings, found=False, woken=False))
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert next_wait(2.0, settings, found=True, woken=False) == 0.5
    assert next_wait(2.0, settings, found=False, woken=True) == 0.5
    # A limit below the first wait does not shorten it.
    shorter = JobSettings(poll_seconds=0.5, idle_poll_seconds=0.1)
    assert next_wait(0.5, shorter, found=False, woken=False) == 0.5


@pytest.mark.usefixtures("db")
async def test_an_idle_runner_still_finds_work_nobody_woke_it_for() -> None:
    # Another replica's job, or a timer coming due: nothing in this process wakes the runner.
    recorder = Recorder()
    settings = JobSettings(workers=2, poll_seconds=0.05, idle_poll_seconds=0.4)
    runner = JobRunner({POST: recorder}, settings)
    await runner.start()
    try:
        await asyncio.sleep(1.0)  # looks found nothing: it waits the longest now
        job = await POST.enqueue(Item("c1"), now=utcnow())
        await eventually(lambda: _done(job))
        assert recorder.ran == [job.id]
    finally:
        await runner.stop()


async def _done(job: Job) -> bool:
    return (await state_of(job)).state is JobState.DONE

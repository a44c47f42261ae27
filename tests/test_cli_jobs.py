"""`switchboard jobs`: an operator lists waiting and failed work, retries it or drops it."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.cli import main
from adapters.cli.jobs import age
from bot.database import open_database
from bot.jobkinds import DELIVER_REPLY, POST_INBOUND, PURGE_CLOSED, MessagePayload, NoPayload
from models import Job, JobState
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, toml_for

Switchboard = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
async def switchboard(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Switchboard:
    """Runs the command line on the test's database; returns its status and its output."""
    async with open_database(database_url):
        pass  # migrated; the commands connect on their own
    config = tmp_path / "switchboard.toml"
    config.write_text(toml_for())
    for name, value in (
        ("SLACK_BOT_TOKEN", BOT_TOKEN),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
        ("DATABASE_URL", database_url),
    ):
        monkeypatch.setenv(name, value)

    async def run(*args: str) -> tuple[int, str]:
        try:
            status = await asyncio.to_thread(main, ["--config", str(config), "jobs", *args])
        except SystemExit as exited:  # argparse refused the arguments
            status = int(exited.code or 0)
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    return run


def stored(database_url: str) -> AbstractAsyncContextManager[None]:
    """The test's database, connected between two commands."""
    return open_database(database_url, migrate_first=False)


async def backdate(job: Job, *, hours: float, state: JobState, reason: str = "") -> None:
    """Make ``job`` look as if it was created ``hours`` ago and is now in ``state``."""
    await Job.filter(id=job.id).update(
        created_at=datetime.now(UTC) - timedelta(hours=hours),
        state=state,
        last_error=reason,
        attempts=3,
    )


async def some_jobs() -> dict[str, int]:
    """One job in each state an operator meets, by a name for the test."""
    parked = await POST_INBOUND.enqueue(MessagePayload(message_id=1, conversation_id=7))
    behind = await POST_INBOUND.enqueue(MessagePayload(message_id=2, conversation_id=7))
    failed = await DELIVER_REPLY.enqueue(MessagePayload(message_id=3, conversation_id=8))
    done = await DELIVER_REPLY.enqueue(MessagePayload(message_id=4, conversation_id=9))
    purge = await PURGE_CLOSED.enqueue(NoPayload())
    await backdate(
        parked, hours=2.5, state=JobState.PARKED, reason="chat.postMessage: invalid_auth"
    )
    await backdate(failed, hours=30, state=JobState.FAILED, reason="Telegram: bot was blocked")
    await backdate(done, hours=1, state=JobState.DONE)
    return {
        "parked": parked.id,
        "behind": behind.id,
        "failed": failed.id,
        "done": done.id,
        "purge": purge.id,
    }


def row(out: str, job_id: int) -> list[str]:
    """The cells of a job's line in the table (the reason's words as separate cells)."""
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [str(job_id)])


async def test_list_shows_waiting_and_failed_work_with_reasons(
    switchboard: Switchboard, database_url: str
) -> None:
    async with stored(database_url):
        ids = await some_jobs()

    status, out = await switchboard("list")
    assert status == 0
    assert out.splitlines()[0].split() == ["ID", "KIND", "STATE", "AGE", "TRIES", "REASON"]
    parked = row(out, ids["parked"])
    # The age's minutes are left out: the clock goes on while the command starts.
    assert parked[:4] == [str(ids["parked"]), "post_inbound", "parked", "2h"]
    assert parked[5:] == ["3", "chat.postMessage:", "invalid_auth"]
    assert row(out, ids["behind"])[2] == "queued"
    assert row(out, ids["failed"])[2:5] == ["failed", "1d", "6h"]
    assert "bot was blocked" in out
    assert "done" not in out.split()
    assert out.splitlines()[-1] == "4 job(s): 1 failed, 1 parked, 1 pending, 1 queued"

    status, out = await switchboard("list", "--state", "failed", "--state", "parked")
    assert status == 0
    assert {row(out, ids["parked"])[2], row(out, ids["failed"])[2]} == {"parked", "failed"}
    assert "queued" not in out

    status, out = await switchboard("list", "--kind", "deliver_reply", "--state", "done")
    assert (status, row(out, ids["failed"] + 1)[2]) == (0, "done")

    status, out = await switchboard("list", "--kind", "purge_closed", "--state", "failed")
    assert (status, out.strip()) == (0, "No failed jobs of kind purge_closed.")

    status, out = await switchboard("list", "--limit", "1")
    assert "... and 3 more (--limit 4 shows them all)" in out


async def test_a_wrong_kind_or_state_is_refused_with_the_choices(switchboard: Switchboard) -> None:
    status, out = await switchboard("list", "--kind", "post")
    assert status == 2
    assert "invalid choice: 'post' (choose from" in out
    assert "'post_inbound'" in out
    status, out = await switchboard("list", "--state", "stuck")
    assert (status, "'parked'" in out) == (2, True)


async def test_retry_runs_a_failed_job_again_and_refuses_what_cannot_be_retried(
    switchboard: Switchboard, database_url: str
) -> None:
    async with stored(database_url):
        ids = await some_jobs()

    status, out = await switchboard("retry", str(ids["failed"]))
    assert (status, out.strip()) == (0, f"Job {ids['failed']} (deliver_reply) will run again now.")
    async with stored(database_url):
        job = await Job.get(id=ids["failed"])
        assert (job.state, job.attempts) == (JobState.PENDING, 0)

    status, out = await switchboard("retry", str(ids["behind"]))
    assert status == 1
    assert f"job {ids['behind']} is queued, not failed or parked: there is nothing" in out

    status, out = await switchboard("retry", "99999")
    assert status == 1
    assert "there is no job 99999; `switchboard jobs list` shows the ids" in out


async def test_retry_all_failed_retries_every_failed_job(
    switchboard: Switchboard, database_url: str
) -> None:
    async with stored(database_url):
        first = await DELIVER_REPLY.enqueue(MessagePayload(message_id=1, conversation_id=1))
        second = await DELIVER_REPLY.enqueue(MessagePayload(message_id=2, conversation_id=2))
        for job in (first, second):
            await backdate(job, hours=1, state=JobState.FAILED, reason="relay said 554")

    status, out = await switchboard("retry", "--all-failed")
    assert (status, out.strip()) == (0, "2 failed job(s) will run again now.")
    status, out = await switchboard("retry", "--all-failed")
    assert (status, out.strip()) == (0, "No job failed.")
    status, out = await switchboard("retry", str(first.id), "--all-failed")
    assert (status, "not allowed with argument" in out) == (2, True)


async def test_drop_asks_first_then_lets_the_next_job_of_the_conversation_go(
    switchboard: Switchboard,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with stored(database_url):
        ids = await some_jobs()
    asked: list[str] = []

    def answer(reply: str) -> None:
        def ask(prompt: str) -> str:
            asked.append(prompt)
            return reply

        monkeypatch.setattr(builtins, "input", ask)

    answer("n")
    status, out = await switchboard("drop", str(ids["parked"]))
    assert (status, out.strip()) == (1, "Nothing was dropped.")
    assert asked == [f"Drop job {ids['parked']} (post_inbound, about conversation 7)? [y/N] "]

    answer("y")
    status, out = await switchboard("drop", str(ids["parked"]))
    assert (status, out.strip()) == (0, f"Dropped job {ids['parked']} (post_inbound).")
    async with stored(database_url):
        dropped = await Job.get(id=ids["parked"])
        assert (dropped.state, dropped.last_error) == (
            JobState.CANCELLED,
            "dropped by an operator",
        )
        assert (await Job.get(id=ids["behind"])).state is JobState.PENDING

    asked.clear()
    status, out = await switchboard("drop", str(ids["purge"]), "--yes")
    assert (status, out.strip(), asked) == (0, f"Dropped job {ids['purge']} (purge_closed).", [])


async def test_a_failed_job_an_operator_has_seen_can_be_dropped(
    switchboard: Switchboard, database_url: str
) -> None:
    async with stored(database_url):
        ids = await some_jobs()

    status, out = await switchboard("drop", str(ids["failed"]), "--yes")
    assert (status, out.strip()) == (0, f"Dropped job {ids['failed']} (deliver_reply).")
    status, out = await switchboard("list", "--state", "failed")
    assert str(ids["failed"]) not in out.split()


async def test_drop_refuses_a_running_or_finished_job(
    switchboard: Switchboard, database_url: str
) -> None:
    async with stored(database_url):
        ids = await some_jobs()
        await Job.filter(id=ids["behind"]).update(state=JobState.RUNNING)

    status, out = await switchboard("drop", str(ids["behind"]), "--yes")
    assert status == 1
    assert f"job {ids['behind']} is running now and cannot be dropped; wait until" in out

    status, out = await switchboard("drop", str(ids["done"]), "--yes")
    assert status == 1
    assert f"job {ids['done']} has already ended (done)" in out

    status, out = await switchboard("drop", "99999", "--yes")
    assert (status, "there is no job 99999" in out) == (1, True)


def test_age_reads_in_its_two_largest_units() -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    after = [
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=3, seconds=20), "3m 20s"),
        (timedelta(hours=2, minutes=30, seconds=5), "2h 30m"),
        (timedelta(days=2, hours=4, minutes=59), "2d 4h"),
        (timedelta(seconds=-5), "0s"),
    ]
    assert [age(start + delta, start) for delta, _ in after] == [text for _, text in after]

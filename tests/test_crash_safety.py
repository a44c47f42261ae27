"""A crash between steps loses nothing and posts nothing twice; Slack outages only delay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from adapters.slack.chat import SlackChat
from bot.jobs import Clock, utcnow
from bot.shapes import ConversationCard, CustomerPost
from models import Conversation, Job, JobState, Message
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import AGENT, LEASE_SECONDS, Harness, SettingsFactory, running
from tests.test_flow_email_to_slack import mail


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no handler catches it."""


class CrashAfterPosting(SlackChat):
    """Posts to Slack, then 'dies' before Switchboard can record the post."""

    crash_in: ClassVar[set[str]] = set()

    async def post_root(self, chat_channel: str, card: ConversationCard, *, marker: str) -> str:
        ts = await super().post_root(chat_channel, card, marker=marker)
        self._maybe_crash("post_root")
        return ts

    async def post_in_thread(
        self, chat_channel: str, thread_ts: str, post: CustomerPost, *, marker: str
    ) -> str:
        ts = await super().post_in_thread(chat_channel, thread_ts, post, marker=marker)
        self._maybe_crash("post_in_thread")
        return ts

    def _maybe_crash(self, step: str) -> None:
        if step in CrashAfterPosting.crash_in:
            CrashAfterPosting.crash_in.discard(step)
            raise Crash


def clock_after_leases(count: int) -> Clock:
    """A clock ``count`` job leases (of the test settings) ahead of now."""
    ahead = timedelta(seconds=count * (LEASE_SECONDS + 1))
    return lambda: utcnow() + ahead


async def run_jobs_until_crash(harness: Harness) -> None:
    """Run due jobs one by one until one of them hits the simulated crash."""
    for _ in range(10):
        jobs = await harness.service.runner.claim(1)
        assert jobs, "no job left before the crash"
        try:
            await harness.service.runner._run(jobs[0])
        except Crash:
            return
    raise AssertionError("the crash never came")


async def test_crashes_after_posting_do_not_post_twice_after_restarts(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, monkeypatch: Any
) -> None:
    monkeypatch.setattr("adapters.service.SlackChat", CrashAfterPosting)
    # Jobs run by hand (run_jobs=False), so that each crash hits this test and not a worker.
    CrashAfterPosting.crash_in = {"post_root"}
    async with running(make_settings, slack, relay, run_jobs=False) as harness:
        await harness.send_mail(mail("Hilfe, Server down", message_id="<crash@kunde.example>"))
        await harness.send_mail(mail("Noch da?", message_id="<crash-2@kunde.example>"))
        await run_jobs_until_crash(harness)
    assert len(slack.channel_messages("support")) == 1

    # On PostgreSQL the job a dead process held is free again once its lease runs out (SQLite,
    # with a single process, frees it at start); these restarts happen after that.
    CrashAfterPosting.crash_in = {"post_in_thread"}
    later = clock_after_leases(1)
    async with running(make_settings, slack, relay, run_jobs=False, clock=later) as harness:
        await run_jobs_until_crash(harness)

    even_later = clock_after_leases(2)
    async with running(make_settings, slack, relay, clock=even_later) as harness:
        await harness.settled()
        assert not await Message.filter(chat_ts=None).exists()

    roots = slack.channel_messages("support")
    assert len(roots) == 1
    thread = slack.thread("support", roots[0]["ts"])
    assert [m["text"].split(": ", 1)[1] for m in thread[1:]] == ["Hilfe, Server down", "Noch da?"]


UNASSIGNED_RULE = """
[[rules]]
name = "Nobody took it"
when = { event = "unassigned", minutes = 30 }
then = { post_to = "support-leads" }
"""


async def test_a_crash_right_after_the_first_post_still_starts_what_a_new_thread_starts(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, monkeypatch: Any
) -> None:
    monkeypatch.setattr("adapters.service.SlackChat", CrashAfterPosting)
    CrashAfterPosting.crash_in = {"post_in_thread"}
    async with running(
        make_settings, slack, relay, run_jobs=False, extra=UNASSIGNED_RULE
    ) as harness:
        await harness.send_mail(mail("Hilfe, Server down", message_id="<crash@kunde.example>"))
        await run_jobs_until_crash(harness)
        conversation = await Conversation.get()
        assert conversation.chat_thread_ts is not None  # the thread was opened, then the crash

    later = clock_after_leases(1)
    async with running(make_settings, slack, relay, clock=later, extra=UNASSIGNED_RULE) as h:
        await h.settled()
        # The retry knew the message had opened the thread: the rule's timer runs.
        timers = await Job.filter(kind="run_rules", serial_key__endswith=":Nobody took it")
        assert [t.conversation_id for t in timers] == [conversation.id]
    (root,) = slack.channel_messages("support")
    assert len(slack.thread("support", root["ts"])) == 2  # the root and the message, once


async def test_slack_errors_and_rate_limits_delay_posting_but_lose_nothing(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    slack.fail_next("chat.postMessage", status=500, count=2)
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    async with running(make_settings, slack, relay) as harness:
        for number in range(3):
            await harness.send_mail(mail(f"Nachricht {number}", subject=f"Thema {number}"))
        await harness.settled(timeout=20)
        assert await Job.filter(attempts__gt=1).count() >= 1

    roots = slack.channel_messages("support")
    assert len(roots) == 3
    for root in roots:
        # Each message once; one sender's later threads also point to the earlier ones.
        thread = slack.thread("support", root["ts"])[1:]
        posts = [m for m in thread if not m["text"].startswith("This customer wrote before")]
        assert len(posts) == 1


async def test_stopping_leaves_unfinished_work_as_jobs(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay) as harness:
        await harness.service.runner.stop()
        for number in range(5):
            await harness.send_mail(mail(f"Offen {number}", subject=f"Offen {number}"))
        # One sender's messages: the first is pending, the others queue behind it.
        assert await Job.filter(state__in=(JobState.PENDING, JobState.QUEUED)).count() == 5

    async with running(make_settings, slack, relay) as harness:
        await harness.settled()
    assert len(slack.channel_messages("support")) == 5


async def test_a_reply_slack_could_not_authorise_is_refused_for_a_retry_not_dropped(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay) as harness:
        await harness.send_mail(mail("Wo bleibt meine Bestellung?"))
        await harness.settled()
        conversation = await Conversation.get()
        assert conversation.chat_thread_ts is not None
        posted = slack.post_as_user(
            "support", AGENT, "Sie ist unterwegs.", thread_ts=conversation.chat_thread_ts
        )
        # bolt checks its token with auth.test before the first event; Slack fails that call.
        slack.fail_next("auth.test", status=500)

        refused = await harness.events.send_message_event("support", posted["ts"])
        again = await harness.events.send_message_event("support", posted["ts"])
        await harness.settled()

    assert refused.status == 503
    assert again.status == 200
    (sent,) = relay.received
    body = sent.message.get_body(("plain",))
    assert body is not None
    assert "Sie ist unterwegs." in body.get_content()

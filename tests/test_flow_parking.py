"""No customer message is ever stuck: work waits (parks) on a wrong token or a long outage.

Mail accepted with 250 while Slack refuses the token, or while Slack is down for longer than
the retries last, reaches its thread once the cause is gone: each message exactly once, and in
the order the customer wrote them.
"""

from __future__ import annotations

import pytest

from models import Job, JobState
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, eventually, running
from tests.test_flow_email_to_slack import mail

TEXTS = ("Erste Nachricht", "Zweite Nachricht", "Dritte Nachricht")


async def customer_writes_three_mails(harness: Harness) -> None:
    for text in TEXTS:
        await harness.send_mail(mail(text))


async def parked_posts() -> list[Job]:
    return await Job.filter(kind="post_inbound", state=JobState.PARKED)


def shown_texts(harness: Harness) -> list[str]:
    (root,) = harness.slack.channel_messages("support")
    replies = harness.slack.thread("support", root["ts"])[1:]
    return [text for reply in replies for text in TEXTS if text in str(reply.get("text", ""))]


async def test_mail_accepted_under_a_wrong_token_reaches_slack_once_the_token_is_fixed(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = {"SLACK_BOT_TOKEN": "xoxb-typo-in-the-token"}
    async with running(make_settings, slack, relay, env=wrong) as harness:
        # The start says so plainly, and the service still takes mail.
        refused = [r for r in caplog.records if "Slack refuses SLACK_BOT_TOKEN" in r.message]
        assert [r.levelname for r in refused] == ["ERROR"]
        assert "invalid_auth" in str(refused[0].__dict__.get("reason"))
        await customer_writes_three_mails(harness)  # each answered 250

        async def first_post_parked_and_the_others_queued_behind_it() -> bool:
            queued = Job.filter(kind="post_inbound", state=JobState.QUEUED)
            return len(await parked_posts()) == 1 and await queued.count() == 2

        await eventually(first_post_parked_and_the_others_queued_behind_it)
        (parked,) = await parked_posts()
        assert "invalid_auth" in parked.last_error
        assert "SLACK_BOT_TOKEN" in parked.last_error
        assert not slack.channel_messages("support")
        assert not await Job.filter(state=JobState.FAILED).exists()

    # The operator fixes the token and restarts the service.
    async with running(make_settings, slack, relay) as harness:
        await harness.settled()
        assert shown_texts(harness) == list(TEXTS)
        assert not await Job.filter(state__in=(JobState.PARKED, JobState.FAILED)).exists()


async def test_parked_work_resumes_when_slack_accepts_the_token_again_without_a_restart(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    revoked = {"SLACK_BOT_TOKEN": "xoxb-revoked-for-now"}
    async with running(
        make_settings, slack, relay, env=revoked, jobs_extra="park_retry_seconds = 0.2"
    ) as harness:
        await customer_writes_three_mails(harness)

        async def parked() -> bool:
            return bool(await parked_posts())

        await eventually(parked)
        slack.bot_token = "xoxb-revoked-for-now"  # Slack accepts the token again
        await harness.settled()
        assert shown_texts(harness) == list(TEXTS)


async def test_a_slack_outage_longer_than_all_retries_loses_nothing(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    # Three tries, then the old queue gave up for good; now the post parks and goes on.
    async with running(
        make_settings,
        slack,
        relay,
        jobs_extra="max_attempts = 3\npark_retry_seconds = 0.2",
    ) as harness:
        slack.fail_next("chat.postMessage", status=503, count=12)
        await customer_writes_three_mails(harness)

        async def parked() -> bool:
            return bool(await parked_posts())

        await eventually(parked)
        await harness.settled(timeout=30)
        assert shown_texts(harness) == list(TEXTS)
        assert not await Job.filter(state=JobState.FAILED).exists()

"""The service killed with SIGKILL under load, with a flaky Slack: nothing lost, nothing twice.

The small form of ``python -m bench.chaos``: the real service as a subprocess on this test's
database (SQLite, or PostgreSQL when the suite runs on it), killed at random moments while
customers write by e-mail, Telegram and WhatsApp and agents answer. For a few seconds in the
middle Slack answers every call with ``invalid_auth``: the work parks, and all of it reaches
Slack in order once the token works again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import ChaosPlan, ChaosReport, run_chaos


async def test_kills_flaky_slack_and_a_refused_token_lose_nothing_and_show_nothing_twice(
    database_url: str, tmp_path: Path
) -> None:
    plan = ChaosPlan(
        mails=100,
        telegram=20,
        whatsapp=15,
        kills=3,
        telegram_users=5,
        whatsapp_users=5,
        settle_seconds=240,
        auth_outage_seconds=5,
        park_retry_seconds=1,
    )

    report = await run_chaos(plan, database_url, tmp_path)

    assert report.kills == 3
    assert_nothing_lost_or_twice(report, messages=135)


@pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_DB") != "postgres", reason="replicas share PostgreSQL"
)
async def test_two_replicas_share_the_work_and_handle_each_event_once(
    database_url: str, tmp_path: Path
) -> None:
    # Mail, Slack events and Telegram webhook updates go to either replica; a third of the
    # events and updates is sent again to the other one; kills hit either replica, and what a
    # killed replica held is taken over when its lease runs out.
    plan = ChaosPlan(
        mails=60,
        telegram=20,
        whatsapp=15,
        kills=2,
        telegram_users=5,
        whatsapp_users=5,
        replicas=2,
        redelivery_rate=0.3,
        settle_seconds=240,
        auth_outage_seconds=5,
        park_retry_seconds=1,
    )

    report = await run_chaos(plan, database_url, tmp_path)

    assert report.redeliveries > 0
    assert report.kills == 2
    assert_nothing_lost_or_twice(report, messages=95)


def assert_nothing_lost_or_twice(report: ChaosReport, *, messages: int) -> None:
    assert report.slack_failures_injected > 0
    assert report.replies_queued > 0
    # Slack refused the token while mail came in, and the service parked work meanwhile.
    assert report.auth_refusals > 0
    assert report.accepted_during_auth_outage > 0
    assert report.jobs_parked > 0
    assert report.auth_backlog_drain_seconds >= 0, "the backlog did not reach Slack"
    problems = {
        "accepted": report.accepted,
        "posted": report.posted,
        "lost": report.lost,
        "duplicates": report.duplicates,
        "misthreaded": report.misthreaded,
        "out_of_order": report.out_of_order,
        "extra_root_cards": report.extra_root_cards,
        "replies_not_delivered": report.replies_queued - report.replies_delivered,
        "reply_duplicates": report.reply_duplicates,
        "replies_to_wrong_customer": report.replies_to_wrong_customer,
    }
    assert problems == {
        "accepted": messages,
        "posted": messages,
        "lost": 0,
        "duplicates": 0,
        "misthreaded": 0,
        "out_of_order": 0,
        "extra_root_cards": 0,
        "replies_not_delivered": 0,
        "reply_duplicates": 0,
        "replies_to_wrong_customer": 0,
    }, f"missing {report.missing}; service log: {report.service_log}"

"""The service killed with SIGKILL under load, with a flaky Slack: nothing lost, nothing twice.

The small form of ``python -m bench.chaos``: the real service as a subprocess on this test's
database (SQLite, or PostgreSQL when the suite runs on it), killed at random moments while
customers write by e-mail and Telegram and agents answer.
"""

from __future__ import annotations

from pathlib import Path

from bench.chaos import ChaosPlan, run_chaos


async def test_kills_and_slack_failures_lose_nothing_and_show_nothing_twice(
    database_url: str, tmp_path: Path
) -> None:
    plan = ChaosPlan(mails=100, telegram=20, kills=3, telegram_users=5, settle_seconds=240)

    report = await run_chaos(plan, database_url, tmp_path)

    assert report.slack_failures_injected > 0
    assert report.replies_queued > 0
    problems = {
        "kills": report.kills,
        "accepted": report.accepted,
        "posted": report.posted,
        "lost": report.lost,
        "duplicates": report.duplicates,
        "misthreaded": report.misthreaded,
        "extra_root_cards": report.extra_root_cards,
        "replies_not_delivered": report.replies_queued - report.replies_delivered,
        "reply_duplicates": report.reply_duplicates,
        "replies_to_wrong_customer": report.replies_to_wrong_customer,
    }
    assert problems == {
        "kills": 3,
        "accepted": 120,
        "posted": 120,
        "lost": 0,
        "duplicates": 0,
        "misthreaded": 0,
        "extra_root_cards": 0,
        "replies_not_delivered": 0,
        "reply_duplicates": 0,
        "replies_to_wrong_customer": 0,
    }, f"service log: {report.service_log}"

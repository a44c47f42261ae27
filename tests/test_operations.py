"""Operations: /healthz, /metrics, migrations, and a clean stop."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from tortoise import Tortoise, connections
from tortoise.migrations.api import migrate

from bot.database import apply_migrations, open_database, tortoise_config
from bot.errors import ConfigError
from bot.jobkinds import (
    CHECK_WAITING,
    DELIVER_REPLY,
    POST_INBOUND,
    MessagePayload,
    WaitingPayload,
)
from models import Customer, Job
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import BOT_TOKEN, Harness, SettingsFactory, running
from tests.postgres_reachable import ADMIN_URL, reachable
from tests.test_flow_email_to_slack import mail


async def get(harness: Harness, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{harness.service.http_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_healthz_reports_database_and_slack(harness: Harness) -> None:
    status, body = await get(harness, "/healthz")
    assert status == 200
    assert '"database": "ok"' in body
    assert '"slack": "ok"' in body


async def test_healthz_is_503_when_slack_is_unreachable(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay) as harness:
        slack.fail_next("auth.test", status=500, count=5)
        status, body = await get(harness, "/healthz")
    assert status == 503
    assert "unreachable" in body


NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)


async def waiting_since(*, post_minutes: float, check_minutes: float) -> None:
    """A customer's message to post and an escalation check, both due and waiting that long."""
    post = await POST_INBOUND.enqueue(MessagePayload(message_id=1, conversation_id=1), now=NOW)
    again = await POST_INBOUND.enqueue(MessagePayload(message_id=2, conversation_id=1), now=NOW)
    check = await CHECK_WAITING.enqueue(WaitingPayload(conversation_id=1, message_id=1), now=NOW)
    for job, minutes in ((post, post_minutes), (again, 1), (check, check_minutes)):
        await Job.filter(id=job.id).update(created_at=NOW - timedelta(minutes=minutes))


@pytest.mark.parametrize(
    ("post_minutes", "status", "cause"),
    [
        (60, 503, "customer work has waited longer than 900 s: 2 post_inbound (oldest 3600 s)"),
        (10, 200, "ok"),
    ],
)
async def test_healthz_is_503_and_names_customer_work_that_waited_too_long(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    post_minutes: int,
    status: int,
    cause: str,
) -> None:
    # Jobs are not run, and the service's clock stands still: the ages are exact.
    async with running(make_settings, slack, relay, run_jobs=False, clock=lambda: NOW) as harness:
        await waiting_since(post_minutes=post_minutes, check_minutes=120)
        answered, body = await get(harness, "/healthz")
    assert answered == status
    report = json.loads(body)
    assert (report["database"], report["slack"]) == ("ok", "ok")
    # The escalation check is older, but it is not a customer's message: never a cause.
    assert report["jobs"] == cause
    assert report["waiting"] == {
        "post_inbound": {"count": 2, "oldest_seconds": post_minutes * 60},
        "check_waiting": {"count": 1, "oldest_seconds": 7200},
    }


async def test_metrics_show_the_oldest_waiting_job_per_kind(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, run_jobs=False, clock=lambda: NOW) as harness:
        await waiting_since(post_minutes=60, check_minutes=120)
        _, before = await get(harness, "/metrics")
        await Job.filter(kind="check_waiting").delete()
        _, after = await get(harness, "/metrics")
    gauge = "switchboard_job_oldest_waiting_seconds"
    assert f'{gauge}{{kind="post_inbound"}} 3600.0' in before.splitlines()
    assert f'{gauge}{{kind="check_waiting"}} 7200.0' in before.splitlines()
    assert f'{gauge}{{kind="deliver_reply"}} 0.0' in before.splitlines()
    # Refreshed at each scrape: a kind nothing waits for any more reads 0.
    assert f'{gauge}{{kind="check_waiting"}} 0.0' in after.splitlines()


async def test_metrics_count_messages_and_jobs(harness: Harness) -> None:
    await harness.send_mail(mail("Zähl mich", message_id="<metrics@kunde.example>"))
    await harness.send_mail(mail("Zähl mich", message_id="<metrics@kunde.example>"))
    await harness.settled()

    status, body = await get(harness, "/metrics")
    assert status == 200
    lines = body.splitlines()
    assert any(
        line.startswith('switchboard_messages_in_total{channel="email",outcome="accepted"}')
        for line in lines
    )
    assert any(
        line.startswith('switchboard_messages_in_total{channel="email",outcome="duplicate"}')
        for line in lines
    )
    assert "switchboard_job_queue_depth 0.0" in lines
    assert any(line.startswith("switchboard_job_outcomes_total{") for line in lines)


async def test_a_start_logs_no_warning_about_an_unused_token(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # bolt reads the token from the environment itself, as in production.
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    with caplog.at_level(logging.WARNING):
        async with running(make_settings, slack, relay, run_jobs=False):
            pass
    assert not [r for r in caplog.records if "token" in r.getMessage()]


async def test_a_database_that_does_not_exist_is_named_as_a_setting_to_fix() -> None:
    if not await reachable():
        pytest.skip("no PostgreSQL server to ask")
    missing = ADMIN_URL.rsplit("/", 1)[0] + "/switchboard_no_such_database"
    with pytest.raises(ConfigError) as refused:
        await apply_migrations(missing)
    assert refused.value.setting == "DATABASE_URL"
    assert "switchboard_no_such_database" in refused.value.problem
    assert "createdb" in refused.value.problem


async def test_migrations_apply_twice_and_keep_data(database_url: str) -> None:
    await apply_migrations(database_url)
    async with open_database(database_url, migrate_first=False):
        await Customer.create(name="Anna")
    await apply_migrations(database_url)
    async with open_database(database_url, migrate_first=False):
        assert await Customer.filter(name="Anna").count() == 1


async def test_a_job_that_failed_before_the_job_catalogue_can_be_retried_after_it(
    database_url: str,
) -> None:
    """0004 names each job's conversation in a column; a failed job an operator retries later
    needs it as much as a pending one (its payload held only the message's id)."""
    config = tortoise_config(database_url)
    await migrate(config=config, target="models.0003_inbound_before_threading")
    await connections.close_all(discard=True)
    await Tortoise.init(config=config)
    try:
        for state, key in (("failed", "replies:7"), ("pending", "replies:8")):
            await connections.get("default").execute_script(
                "INSERT INTO jobs (kind, payload, serial_key, state, run_at, attempts, "
                "locked_by, last_error, created_at, updated_at) VALUES ('deliver_reply', "
                f"'{{\"message_id\": 1}}', '{key}', '{state}', CURRENT_TIMESTAMP, 5, '', "
                "'SMTP down', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
    finally:
        await connections.close_all(discard=True)
    async with open_database(database_url):
        jobs = await Job.all().order_by("id")
        assert [DELIVER_REPLY.payload_of(job) for job in jobs] == [
            MessagePayload(1, 7),
            MessagePayload(1, 8),
        ]

"""Operations: /healthz, /metrics, migrations, and a clean stop."""

from __future__ import annotations

import aiohttp

from bot.database import apply_migrations, open_database
from models import Customer
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, running
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


async def test_migrations_apply_twice_and_keep_data(database_url: str) -> None:
    await apply_migrations(database_url)
    async with open_database(database_url, migrate_first=False):
        await Customer.create(name="Anna")
    await apply_migrations(database_url)
    async with open_database(database_url, migrate_first=False):
        assert await Customer.filter(name="Anna").count() == 1

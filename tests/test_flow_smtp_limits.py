"""The SMTP endpoint's limits, with real smtplib clients on loopback: relaying, recipients per
message, and open connections per client address and in all."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator

import pytest

from bot.errors import ConfigError
from models import Message
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, running

LIMITS = "max_connections_per_client = 3\nmax_connections = 5\nmax_recipients = 2"
MAIL = b"From: kim@customer.example.org\r\nSubject: Frage\r\n\r\nHallo\r\n"


@pytest.fixture
async def limited(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[Harness]:
    async with running(make_settings, slack, relay, run_jobs=False, email_extra=LIMITS) as h:
        yield h


async def connect(h: Harness, source: str = "127.0.0.1") -> smtplib.SMTP:
    """A client session from ``source`` (any 127.x.y.z address is loopback) that got its 220."""

    def open_session() -> smtplib.SMTP:
        return smtplib.SMTP(
            "127.0.0.1", h.service.smtp_port, timeout=10, source_address=(source, 0)
        )

    return await asyncio.to_thread(open_session)


async def refused(h: Harness, source: str = "127.0.0.1") -> tuple[int, str]:
    with pytest.raises(smtplib.SMTPConnectError) as refusal:
        await connect(h, source)
    reason = refusal.value.smtp_error
    return refusal.value.smtp_code, reason.decode() if isinstance(reason, bytes) else reason


async def close(*clients: smtplib.SMTP) -> None:
    for client in clients:
        await asyncio.to_thread(client.quit)


async def test_one_address_gets_421_past_its_connections_and_is_served_again_after(
    limited: Harness,
) -> None:
    first, second, third = [await connect(limited) for _ in range(3)]

    code, reason = await refused(limited)
    assert code == 421
    assert "Too many connections from your address" in reason
    # Another client address is still served meanwhile.
    other = await connect(limited, "127.0.0.2")

    await close(first)
    again = await connect(limited)
    await asyncio.to_thread(
        again.sendmail, "kim@customer.example.org", ["support@shop.example"], MAIL
    )
    await close(second, third, other, again)
    assert await Message.all().count() == 1


async def test_all_addresses_together_get_421_past_the_total(limited: Harness) -> None:
    clients = [await connect(limited, f"127.0.0.{n}") for n in (1, 1, 2, 2, 3)]

    code, reason = await refused(limited, "127.0.0.4")
    assert code == 421
    assert "Too many connections, try again later" in reason

    await close(*clients)
    await close(await connect(limited, "127.0.0.4"))


async def test_recipients_past_the_limit_get_452_and_relaying_550(limited: Harness) -> None:
    client = await connect(limited)
    try:
        await asyncio.to_thread(client.ehlo)
        await asyncio.to_thread(client.mail, "kim@customer.example.org")
        answers = [
            (await asyncio.to_thread(client.rcpt, to))[0]
            for to in (
                "victim@elsewhere.example",
                "support@shop.example",
                "anyone@help.shop.example",
                "support+x@shop.example",
            )
        ]
        code, _ = await asyncio.to_thread(client.data, MAIL)
    finally:
        await close(client)

    assert answers == [550, 250, 250, 452]
    assert code == 250
    message = await Message.get()
    assert message.subject == "Frage"


@pytest.mark.parametrize(
    ("lines", "setting"),
    [
        ("max_connections_per_client = 0", "email.max_connections_per_client"),
        ("max_connections_per_client = 30\nmax_connections = 20", "email.max_connections"),
    ],
)
def test_connection_limits_are_checked_at_start_up(
    make_settings: SettingsFactory, lines: str, setting: str
) -> None:
    with pytest.raises(ConfigError) as problem:
        make_settings(email_extra=lines)
    assert problem.value.setting == setting

"""Socket Mode: the service connects out to Slack, so it needs no public URL.

The real slack_sdk Socket Mode client opens the connection (``apps.connections.open`` with the
app-level token, then a WebSocket) and bolt acks each event once it has been processed.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import pytest

from adapters.service import Service
from bot.errors import ConfigError
from bot.routing import FixedSkillClassifier
from models import Message
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, running
from tests.test_flow_slack_reply_to_email import open_conversation


def in_socket_mode(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AbstractAsyncContextManager[Harness]:
    """The service with ``[slack] mode = "socket"`` and the sandbox's app-level token."""
    return running(
        make_settings,
        slack,
        relay,
        slack_extra='mode = "socket"',
        env={"SLACK_APP_TOKEN": slack.app_token},
    )


async def agent_writes_in_the_thread(harness: Harness, text: str) -> str:
    """A customer's mail opens a thread and an agent writes in it; returns the reply's ts."""
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    posted = harness.slack.post_as_user(
        "support", AGENT, text, thread_ts=conversation.chat_thread_ts
    )
    return str(posted["ts"])


async def test_a_reply_sent_over_the_socket_reaches_the_customer(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with in_socket_mode(make_settings, slack, relay) as harness:
        ts = await agent_writes_in_the_thread(harness, "Das Paket kommt morgen.")
        event = harness.events.message_event("support", ts)

        ack = await slack.send_socket_event(harness.events.event_callback(event))
        # Bolt acks after the listener ran: the reply is stored by the time Slack hears back.
        assert await Message.filter(chat_ts=ts, direction="out").exists()
        (received,) = await relay.wait_for(1)
        await harness.settled()

    assert "apps.connections.open" in [method for method, _ in slack.calls]
    assert ack["envelope_id"]
    assert "payload" not in ack
    assert received.rcpt_tos == ["anna@kunde.example"]
    assert received.message["Subject"] == "Re: Wo ist mein Paket?"
    assert received.message["In-Reply-To"] == "<order-1@kunde.example>"
    body = received.message.get_body(("plain",))
    assert body is not None
    assert "Das Paket kommt morgen." in body.get_content()


async def test_the_events_url_is_not_served_in_socket_mode(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with in_socket_mode(make_settings, slack, relay) as harness:
        ts = await agent_writes_in_the_thread(harness, "Per HTTP?")

        response = await harness.events.send_message_event("support", ts)
        await harness.settled()

        assert response.status == 404
        assert not await Message.filter(direction="out").exists()
    assert relay.received == []


async def test_a_refused_app_token_stops_start_up_with_the_fix(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    settings = make_settings(
        api_url=slack.api_url,
        relay_port=relay.port,
        slack_extra='mode = "socket"',
        env={"SLACK_APP_TOKEN": "xapp-1-A0001-revoked"},
    )
    with pytest.raises(ConfigError) as refused:
        async with Service(settings, classifier=FixedSkillClassifier("general")):
            pass
    assert refused.value.setting == "SLACK_APP_TOKEN"
    assert "connections:write" in refused.value.problem

"""Urgent conversations page the on-call user group of their skill; nothing else ever does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from bot.conversations import short_id
from bot.shapes import InboundMessage, Priority, Triage
from models import Conversation
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, running
from tests.test_flow_commands import LEAD, ask, settle
from tests.test_flow_email_to_slack import mail

#: The first user group the sandbox creates gets this id.
ONCALL = "S0001"
PAGE = f"<!subteam^{ONCALL}>"
ONCALL_SETTINGS = f"""
[roles]
leads = ["{LEAD}"]

[[skills]]
name = "outages"
channel = "support-outages"
oncall = "{ONCALL}"
"""


@dataclass(frozen=True)
class OutageTriage:
    """Every message is about outages; it is urgent when the customer says something is down."""

    async def triage(self, message: InboundMessage) -> Triage:
        urgent = "is down" in message.text.lower()
        return Triage("outages", 1.0, Priority.URGENT if urgent else Priority.NORMAL)


@asynccontextmanager
async def on_call(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[Harness]:
    """The service with an "outages" skill whose on-call group is ``ONCALL``, and a lead."""
    slack.add_channel("support-outages")
    assert slack.add_usergroup("outages-oncall", ["U0ONCALL"]) == ONCALL
    slack.add_user(LEAD, "lena", real_name="Lena Lead", display_name="Lena")
    async with running(
        make_settings, slack, relay, classifier=OutageTriage(), extra=ONCALL_SETTINGS
    ) as h:
        yield h


def rendered(message: dict[str, Any]) -> str:
    """The fallback text and every block: all that Slack could read a mention from."""
    return str(message.get("text", "")) + json.dumps(message.get("blocks", []))


async def only_root(h: Harness) -> dict[str, Any]:
    await settle(h)
    (root,) = h.slack.channel_messages("support-outages")
    return root


@pytest.mark.parametrize(
    ("text", "pages"),
    [("The shop is down since 8 am!", True), ("How do I change my password?", False)],
)
async def test_an_urgent_mail_pages_the_skills_on_call_group_and_a_normal_one_nobody(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, text: str, pages: bool
) -> None:
    async with on_call(make_settings, slack, relay) as h:
        await h.send_mail(mail(text, subject="Shop"))
        root = await only_root(h)

    assert (PAGE in root["text"], PAGE in json.dumps(root["blocks"])) == (pages, pages)
    assert ("subteam" in rendered(root)) == pages


async def test_mentions_a_customer_writes_never_page_anyone(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    hostile = f"{PAGE} <!subteam^S0999> @here <!here> please look"
    async with on_call(make_settings, slack, relay) as h:
        await h.send_mail(mail(hostile, subject=f"{PAGE} @here"))
        normal_root = await only_root(h)
        await h.send_mail(
            mail(
                f"The API is down. {hostile}", subject="<!subteam^S0999> down", sender="b@x.example"
            )
        )
        await settle(h)
        urgent_root = next(
            m for m in slack.channel_messages("support-outages") if m["ts"] != normal_root["ts"]
        )
        threads = [
            m
            for root in (normal_root, urgent_root)
            for m in slack.thread("support-outages", root["ts"])
        ]

    assert PAGE not in rendered(normal_root)
    # The urgent root pages the on-call group once, in our own words, and nobody else.
    assert rendered(urgent_root).count(PAGE) == 2  # the fallback text and the block
    for message in threads:
        text = rendered(message)
        assert "<!subteam^S0999>" not in text
        assert "<!here>" not in text
    customer_post = slack.thread("support-outages", normal_root["ts"])[1]
    assert "&lt;!subteam^S0001&gt;" in rendered(customer_post)
    assert PAGE not in rendered(customer_post)


async def test_a_lead_making_a_conversation_urgent_pages_in_the_thread(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with on_call(make_settings, slack, relay) as h:
        await h.send_mail(mail("The invoice PDF looks odd.", subject="Invoice"))
        root = await only_root(h)
        sid = short_id(await Conversation.get())
        answer = await ask(h, LEAD, f"priority {sid} urgent", channel="support-outages")
        await settle(h)
        thread = slack.thread("support-outages", root["ts"])
        await ask(h, LEAD, f"priority {sid} high", channel="support-outages")
        await settle(h)
        lowered = slack.thread("support-outages", root["ts"])

    assert answer == f"Conversation `{sid}` has priority urgent now."
    assert "subteam" not in rendered(root)
    notice = thread[-1]["text"]
    assert notice == f"Lena changed the priority from normal to urgent. Paging {PAGE}."
    # The redrawn root names the group too (an edit notifies nobody; the notice does).
    assert PAGE in rendered(thread[0])
    assert "Paging" not in lowered[-1]["text"]
    assert PAGE not in rendered(lowered[0])

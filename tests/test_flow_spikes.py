"""Spike alerts from e-mail to the leads' channel, and a lead linking them all to a problem.

The service runs against the loopback Slack and mail relay with a clock the test moves on;
triage is the word-hashing stand-in (tests/wordvectors.py), so messages sharing most of their
words are alike and messages of random words are not.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from adapters.service import Service
from models import Conversation, KnownProblem, ProblemLink, Spike
from standins.mail import SmtpSink
from standins.slack import SlackEvents, SlackSandbox
from tests.conftest import AGENT, SIGNING_SECRET, Harness, SettingsFactory
from tests.test_flow_commands import LEAD, FakeClock, settle
from tests.test_flow_email_to_slack import mail
from tests.wordvectors import WordVectorClassifier

LEADS = "support-leads"
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ri", "su", "ta") for b in range(40)]
COMPLAINT = "payment declined at checkout <!channel> card charged twice order failed"


@asynccontextmanager
async def team(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, clock: FakeClock
) -> AsyncIterator[Harness]:
    """The service with a lead, triage that embeds, and spike alerts to the leads' channel."""
    slack.add_user(AGENT, "anna", real_name="Anna Agent", display_name="Anna")
    slack.add_user(LEAD, "lena", real_name="Lena Lead", display_name="Lena")
    slack.add_channel(LEADS)
    extra = f'[roles]\nleads = ["{LEAD}"]\n\n[spikes]\nchannel = "{LEADS}"\n'
    settings = make_settings(api_url=slack.api_url, relay_port=relay.port, extra=extra)
    service = Service(
        settings,
        classifier=WordVectorClassifier(settings.triage.default_skill),
        clock=clock,
        vector_poll_seconds=0.1,
    )
    async with service:
        events = SlackEvents(
            slack,
            events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
            signing_secret=SIGNING_SECRET,
        )
        yield Harness(service, slack, relay, events)


class Customers:
    """Mail from a new customer each time: varied words, or the complaint in other words."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.rng = random.Random(3)
        self.sent = 0

    async def write(self, text: str, subject: str) -> None:
        self.sent += 1
        sender = f"Kunde {self.sent} <kunde{self.sent}@kunde.example>"
        message_id = f"<m{self.sent}@kunde.example>"
        await self.h.send_mail(mail(text, subject=subject, sender=sender, message_id=message_id))
        await settle(self.h)

    async def varied(self) -> None:
        await self.write(" ".join(self.rng.sample(WORDS, 10)), " ".join(self.rng.sample(WORDS, 2)))

    async def complain(self) -> None:
        await self.write(f"{COMPLAINT} {self.rng.choice(WORDS)}", "Payment declined")


def alerts(h: Harness) -> list[dict[str, Any]]:
    return h.slack.channel_messages(LEADS)


async def test_a_burst_of_alike_complaints_alerts_the_leads_once_and_a_lead_links_them_all(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with team(make_settings, slack, relay, clock) as h:
        customers = Customers(h)
        # Five hours of varied mail, one every six minutes: nothing fires.
        for _ in range(50):
            await customers.varied()
            clock.advance(timedelta(minutes=6))
        assert alerts(h) == []
        assert not await Spike.exists()

        # The burst: a complaint a minute, with varied mail still coming in between.
        fired_at: list[int] = []
        for n in range(1, 14):
            await customers.complain()
            if alerts(h) and not fired_at:
                fired_at.append(n)
            if n % 3 == 0:
                await customers.varied()
            clock.advance(timedelta(minutes=1))

        assert fired_at == [10]  # at the tenth complaint, nine minutes after the first
        (alert,) = alerts(h)  # and once: the later complaints joined the spike
        shown = json.dumps(alert["blocks"])
        assert "10 conversations about the same thing" in shown
        assert shown.count("payment declined at checkout") == 3
        assert shown.count("/archives/") == 3  # each example links to its post
        assert "<!channel>" not in shown  # what customers wrote pings nobody
        assert shown.count("&lt;!channel&gt;") == 3
        assert "general (10)" in shown  # the skills and channels of its conversations
        assert "E-mail (10)" in shown

        # The button is for leads: an agent is told so and no modal opens.
        await h.events.click_button(LEADS, alert["ts"], AGENT, "switchboard_spike_problem")
        await slack.wait_until(lambda: bool(slack.ephemeral_messages(AGENT)))
        assert slack.ephemeral_messages(AGENT)[-1]["text"].startswith("Not allowed: linking")
        assert slack.views == []

        await h.events.click_button(LEADS, alert["ts"], LEAD, "switchboard_spike_problem")
        await slack.wait_until(lambda: bool(slack.views))
        ((method, view),) = slack.views
        assert method == "views.open"
        refused = await h.events.submit_view(view["id"], LEAD, {"title": "  "})
        assert refused.json()["response_action"] == "errors"
        submitted = await h.events.submit_view(
            view["id"], LEAD, {"title": "Payment provider outage"}
        )
        assert submitted.status == 200
        await slack.wait_until(lambda: bool(slack.ephemeral_messages(LEAD)))
        await settle(h)

        assert "Linked 13 conversations" in slack.ephemeral_messages(LEAD)[-1]["text"]
        problem = await KnownProblem.get(title="Payment provider outage")
        linked = await ProblemLink.filter(problem=problem).values_list("conversation_id", flat=True)
        complaints = Conversation.filter(subject="Payment declined")
        assert sorted(linked) == sorted(await complaints.values_list("id", flat=True))
        assert (await Spike.get()).problem_id == problem.id

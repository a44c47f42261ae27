"""Leads and admins work from Slack: the slash command, the card's buttons, the shortcut, Home.

Every request goes signed through slack-bolt to the running service; Slack's Web API is the
loopback sandbox.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.expressions import Q

from adapters.service import Service
from bot.conversations import short_id
from bot.routing import FixedSkillClassifier
from bot.shapes import Priority
from models import (
    AgentName,
    AuditEntry,
    Conversation,
    ConversationStatus,
    Job,
    JobState,
    Skill,
    SkillExample,
)
from standins.mail import SmtpSink
from standins.slack import SlackEvents, SlackSandbox
from tests.conftest import AGENT, SIGNING_SECRET, Harness, SettingsFactory, steadily
from tests.test_flow_email_to_slack import mail

LEAD = "U0LEAD01"
ADMIN = "U0ADMIN1"
GROUP_LEAD = "U0GROUP1"
#: The first user group the sandbox creates gets this id.
LEADS_GROUP = "S0001"


class FakeClock:
    """The service's clock, moved on by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@asynccontextmanager
async def team(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    clock: FakeClock | None = None,
) -> AsyncIterator[Harness]:
    """The service with a lead, an admin and a lead by user group."""
    slack.add_user(AGENT, "anna", real_name="Anna Agent", display_name="Anna")
    slack.add_user(LEAD, "lena", real_name="Lena Lead", display_name="Lena")
    slack.add_user(ADMIN, "adam", real_name="Adam Admin", display_name="Adam")
    slack.add_user(GROUP_LEAD, "gus", real_name="Gus Group", display_name="Gus")
    assert slack.add_usergroup("support-leads", [GROUP_LEAD]) == LEADS_GROUP
    roles = f'[roles]\nleads = ["{LEAD}", "{LEADS_GROUP}"]\nadmins = ["{ADMIN}"]\n'
    settings = make_settings(api_url=slack.api_url, relay_port=relay.port, extra=roles)
    service = Service(
        settings,
        classifier=FixedSkillClassifier(settings.triage.default_skill),
        clock=clock or FakeClock(),
    )
    async with service:
        events = SlackEvents(
            slack,
            events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
            signing_secret=SIGNING_SECRET,
        )
        yield Harness(service, slack, relay, events)


async def settle(h: Harness) -> None:
    """Wait until clicks and commands are worked off and no job is due (snoozes may wait)."""

    async def nothing_due() -> bool:
        await h.service.background.idle()
        busy = Job.filter(state__in=(JobState.PENDING, JobState.RUNNING))
        # A job being retried counts even while it waits for its backoff.
        due = Q(run_at__lte=h.service.clock()) | Q(attempts__gt=0)
        return not await busy.filter(due).exists()

    await steadily(nothing_due)


async def ask(h: Harness, user: str, text: str, channel: str = "support") -> str:
    """Type ``/switchboard text``; returns the ephemeral answer."""
    shown = len(h.slack.ephemeral_messages(user))
    response = await h.events.send_slash_command("/switchboard", text, user=user, channel=channel)
    assert response.status == 200
    assert response.body == ""  # acknowledged at once; the answer comes by response URL
    await h.slack.wait_until(lambda: len(h.slack.ephemeral_messages(user)) > shown)
    return str(h.slack.ephemeral_messages(user)[-1]["text"])


async def new_conversation(h: Harness, text: str = "Wo ist meine Rechnung?") -> Conversation:
    await h.send_mail(mail(text, message_id="<first@kunde.example>"))
    await settle(h)
    return await Conversation.get()


def thread_texts(h: Harness, conversation: Conversation) -> list[str]:
    assert conversation.chat_channel is not None
    assert conversation.chat_thread_ts is not None
    thread = h.slack.thread(conversation.chat_channel, conversation.chat_thread_ts)
    return [str(m.get("text", "")) for m in thread[1:]]


def root_of(h: Harness, conversation: Conversation) -> dict[str, Any]:
    assert conversation.chat_channel is not None
    assert conversation.chat_thread_ts is not None
    return h.slack.thread(conversation.chat_channel, conversation.chat_thread_ts)[0]


def card_text(root: dict[str, Any]) -> str:
    return json.dumps(root["blocks"])


def element_ids(root: dict[str, Any]) -> list[str]:
    actions = [b for b in root["blocks"] if b["type"] == "actions"]
    return [e["action_id"] for b in actions for e in b["elements"]]


async def test_help_lists_the_subcommands_for_everyone(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        answer = await ask(h, AGENT, "help")
    for usage in ("reassign <conversation> <skill>", "skills map <skill> #channel", "queue"):
        assert usage in answer


async def test_an_agent_may_not_reassign_and_is_told_whom_to_ask(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        answer = await ask(h, AGENT, f"reassign {short_id(conversation)} billing")
        await settle(h)
        await conversation.refresh_from_db()
        assert conversation.skill == "general"
        assert not await AuditEntry.exists()
    assert answer.startswith("Not allowed")
    assert f"<@{LEAD}>" in answer
    assert f"<!subteam^{LEADS_GROUP}>" in answer


async def test_reassigning_moves_the_conversation_and_follow_ups_land_in_the_new_thread(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h, "Die Rechnung 4711 ist doppelt.")
        old_channel, old_ts = conversation.chat_channel, conversation.chat_thread_ts
        assert old_channel is not None
        assert old_ts is not None
        await h.agent_replies("support", old_ts, "Wir schauen nach.")
        await relay.wait_for(1)
        await settle(h)
        answer = await ask(h, LEAD, f"reassign {short_id(conversation)} billing")
        await settle(h)
        await conversation.refresh_from_db()
        billing = slack.channel_id("support-billing")
        assert answer.startswith(f"Moving `{short_id(conversation)}` to #support-billing")
        assert conversation.chat_channel == billing
        assert conversation.skill == "billing"
        moved = thread_texts(h, conversation)
        assert "Lena moved this to #support-billing (billing)." in moved[0]
        assert any("Die Rechnung 4711 ist doppelt." in t for t in moved)
        assert any("Anna (agent reply)" in t and "Wir schauen nach." in t for t in moved)
        old_thread = [m["text"] for m in slack.thread(old_channel, old_ts)]
        assert any("Continue there: https://sandbox.slack.com/archives/" in t for t in old_thread)
        assert "moved to" in card_text(slack.thread(old_channel, old_ts)[0])
        example = await SkillExample.get(source="reassignment")
        assert (example.skill, "4711" in example.text) == ("billing", True)
        follow_up = mail("Und noch eine Frage.", in_reply_to="<first@kunde.example>")
        await h.send_mail(follow_up)
        await settle(h)
        assert any("Und noch eine Frage." in t for t in thread_texts(h, conversation))
        assert not any(
            "Und noch eine Frage." in m["text"] for m in slack.thread(old_channel, old_ts)
        )
        await h.agent_replies("support-billing", conversation.chat_thread_ts or "", "Erledigt.")
        received = await relay.wait_for(2)
        await settle(h)
        assert await Conversation.all().count() == 1

    assert "Erledigt." in str(received[1].message)


async def test_a_link_to_a_thread_message_names_the_conversation(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        message_ts = slack.thread("support", conversation.chat_thread_ts or "")[1]["ts"]
        link = (
            await h.service.client.chat_getPermalink(
                channel=slack.channel_id("support"), message_ts=message_ts
            )
        )["permalink"]
        answer = await ask(h, LEAD, f"priority <{link}> urgent")
        await settle(h)
        await conversation.refresh_from_db()
        assert answer == f"Conversation `{short_id(conversation)}` has priority urgent now."
        assert conversation.priority is Priority.URGENT


async def test_lead_commands_change_the_card_and_say_so_in_the_thread(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        sid = short_id(conversation)
        assert (
            await ask(h, LEAD, f"assign {sid} <@{AGENT}|anna>")
            == f"Conversation `{sid}` is <@{AGENT}>'s now."
        )
        assert (
            await ask(h, GROUP_LEAD, f"priority {sid} high")
            == f"Conversation `{sid}` has priority high now."
        )
        assert (await ask(h, LEAD, f"close {sid}")).startswith(f"Closed `{sid}`")
        assert await ask(h, LEAD, f"close {sid}") == f"Conversation `{sid}` is already closed."
        await settle(h)
        closed_card = root_of(h, conversation)
        assert "switchboard_reopen" in element_ids(closed_card)
        assert await ask(h, LEAD, f"reopen {sid}") == f"Reopened `{sid}`."
        await settle(h)
        log = await ask(h, AGENT, f"log {sid}")
        texts = thread_texts(h, conversation)
        card = card_text(root_of(h, conversation))
        assert [e.action for e in await AuditEntry.all().order_by("id")] == [
            "assign",
            "priority",
            "close",
            "reopen",
        ]
    assert f"Lena assigned this to <@{AGENT}>." in texts
    assert "Gus changed the priority from normal to high." in texts
    assert "Lena closed this conversation." in texts
    assert "Lena reopened this conversation." in texts
    assert f"owner <@{AGENT}>" in card
    assert "high" in card
    assert "Lena closed this conversation." in log


async def test_typing_mistakes_get_clear_answers(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        sid = short_id(conversation)
        unknown = await ask(h, LEAD, "frobnicate")
        duration = await ask(h, LEAD, f"snooze {sid} soon")
        missing = await ask(h, LEAD, "close zzzzzz")
        no_skill = await ask(h, LEAD, f"reassign {sid} astrology")
        usage = await ask(h, LEAD, "reassign")
    assert unknown == "There is no `frobnicate` command. Try `help`."
    assert "is not a duration" in duration
    assert missing == "No conversation `zzzzzz`."
    assert no_skill == "There is no skill `astrology`. Skills: billing, general, technical."
    assert usage == "Usage: `reassign <conversation> <skill>`"


async def test_card_buttons_assign_prioritise_close_and_move(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        root_ts = conversation.chat_thread_ts or ""
        assert element_ids(root_of(h, conversation)) == [
            "switchboard_assign_me",
            "switchboard_skill",
            "switchboard_priority",
            "switchboard_snooze",
            "switchboard_close",
            "switchboard_customer",
            "switchboard_suggest",
        ]
        assert (
            await h.events.click_button("support", root_ts, AGENT, "switchboard_assign_me")
        ).status == 200
        await settle(h)
        await h.events.choose_option("support", root_ts, LEAD, "switchboard_priority", "urgent")
        await settle(h)
        await h.events.click_button("support", root_ts, LEAD, "switchboard_close")
        await settle(h)
        await conversation.refresh_from_db()
        assert (conversation.owner, conversation.priority) == (AGENT, Priority.URGENT)
        assert conversation.status is ConversationStatus.CLOSED
        assert "switchboard_reopen" in element_ids(root_of(h, conversation))
        await h.events.click_button("support", root_ts, LEAD, "switchboard_reopen")
        await settle(h)
        await h.events.choose_option("support", root_ts, LEAD, "switchboard_skill", "technical")
        await settle(h)
        await conversation.refresh_from_db()

    assert conversation.chat_channel == slack.channel_id("support-tech")
    assert "Anna took this conversation." in [m["text"] for m in slack.thread("support", root_ts)]


async def test_a_refused_click_is_answered_only_to_the_clicker_and_changes_nothing(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        root_ts = conversation.chat_thread_ts or ""
        await h.events.choose_option("support", root_ts, AGENT, "switchboard_priority", "low")
        await slack.wait_until(lambda: bool(slack.ephemeral_messages(AGENT)))
        await h.events.click_button("support", root_ts, AGENT, "switchboard_close")
        await slack.wait_until(lambda: len(slack.ephemeral_messages(AGENT)) == 2)
        await settle(h)
        await conversation.refresh_from_db()
        assert (conversation.priority, conversation.status) == (
            Priority.NORMAL,
            ConversationStatus.OPEN,
        )
        for shown in slack.ephemeral_messages(AGENT):
            assert shown["text"].startswith("Not allowed")
            assert f"<@{LEAD}>" in shown["text"]
        assert not await AuditEntry.exists()


async def test_the_shortcut_opens_a_modal_whose_submission_moves_the_conversation(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        message_ts = slack.thread("support", conversation.chat_thread_ts or "")[1]["ts"]
        response = await h.events.use_message_shortcut(
            "support", message_ts, LEAD, "switchboard_reassign"
        )
        assert response.status == 200
        ((method, view),) = slack.views
        assert (method, view["callback_id"]) == ("views.open", "switchboard_reassign_modal")
        refused = await h.events.submit_view(view["id"], LEAD, {"skill": "general"})
        assert refused.json()["response_action"] == "errors"
        assert "in general already" in refused.json()["errors"]["skill"]
        submitted = await h.events.submit_view(view["id"], LEAD, {"skill": "billing"})
        assert submitted.status == 200
        await settle(h)
        await conversation.refresh_from_db()

    assert conversation.chat_channel == slack.channel_id("support-billing")


async def test_the_shortcut_is_refused_to_agents(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        await h.events.use_message_shortcut(
            "support", conversation.chat_thread_ts or "", AGENT, "switchboard_reassign"
        )
        await slack.wait_until(lambda: bool(slack.ephemeral_messages(AGENT)))
    assert slack.views == []
    assert slack.ephemeral_messages(AGENT)[0]["text"].startswith("Not allowed: reassigning")


async def test_snooze_wakes_when_due(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with team(make_settings, slack, relay, clock) as h:
        conversation = await new_conversation(h)
        sid = short_id(conversation)
        await ask(h, AGENT, f"assign {sid} me")
        assert (await ask(h, LEAD, f"snooze {sid} 2h")).startswith(f"Snoozed `{sid}` until")
        await settle(h)
        assert "snoozed until" in card_text(root_of(h, conversation))
        assert await ask(h, AGENT, "queue") == "Nothing waiting. :tada:"
        clock.advance(timedelta(hours=1))
        h.service.runner.notify()
        await settle(h)
        assert not any("snooze is over" in t for t in thread_texts(h, conversation))
        clock.advance(timedelta(hours=1, minutes=1))
        h.service.runner.notify()
        await settle(h)
        texts = thread_texts(h, conversation)
        queue = await ask(h, AGENT, "queue")
    wake = f":alarm_clock: <@{AGENT}> The snooze is over: this conversation needs an answer."
    assert wake in texts
    assert "snoozed" not in card_text(root_of(h, conversation))
    assert f"`{sid}`" in queue


async def test_the_customer_writing_ends_a_snooze(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with team(make_settings, slack, relay, clock) as h:
        conversation = await new_conversation(h)
        await ask(h, LEAD, f"snooze {short_id(conversation)} 1d")
        await settle(h)
        await h.send_mail(mail("Hallo?", in_reply_to="<first@kunde.example>"))
        await settle(h)
        clock.advance(timedelta(days=2))
        h.service.runner.notify()
        await settle(h)
        texts = thread_texts(h, conversation)
        await conversation.refresh_from_db()
        assert conversation.snoozed_until is None
    assert ":alarm_clock: The customer wrote, so the snooze is over." in texts
    assert not any("The snooze is over" in t for t in texts)


async def test_skill_administration(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    slack.add_channel("support-shipping")
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        refused = await ask(h, LEAD, "skills map billing #support-billing")
        added = await ask(h, ADMIN, 'skills add shipping "Parcels, delivery times & returns"')
        mapped = await ask(
            h,
            ADMIN,
            f"skills map shipping <#{slack.channel_id('support-shipping')}|support-shipping>",
        )
        taught = await ask(h, ADMIN, "skills example shipping “Wo bleibt mein Paket?”")
        listed = await ask(h, AGENT, "skills")
        kept = await ask(h, ADMIN, "skills remove general")
        busy = await ask(h, ADMIN, "skills remove billing")
        await ask(h, LEAD, f"reassign {short_id(conversation)} technical")
        await settle(h)
        blocked = await ask(h, ADMIN, "skills remove technical")
        removed = await ask(h, ADMIN, "skills remove shipping")
        assert not await Skill.exists(name="shipping")
    assert refused.startswith("Not allowed: that is for admins")
    assert f"<@{ADMIN}>" in refused
    assert added.startswith("Added `shipping`")
    assert mapped == "New shipping conversations go to #support-shipping."
    assert taught == "Triage learned the example; shipping has 2 stored examples."
    assert "*shipping* → #support-shipping · 2 examples · 0 open: Parcels" in listed
    assert "delivery times &amp; returns" in listed
    assert "*general* (default) → #support" in listed
    assert "is the default skill" in kept
    assert busy.startswith("Removed `billing`.")
    assert blocked.startswith("`technical` has 1 open conversations")
    assert removed == "Removed `shipping`."


async def test_queue_and_customer_history(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        await h.send_mail(
            mail("Erste <b>Frage</b>", subject="Frage <1>", message_id="<a@kunde.example>")
        )
        await h.send_mail(mail("Zweite", subject="Frage 2", message_id="<b@kunde.example>"))
        await settle(h)
        first, second = await Conversation.all().order_by("id")
        await ask(h, LEAD, f"priority {short_id(second)} urgent")
        queue = await ask(h, AGENT, "queue")
        general = await ask(h, AGENT, "queue general")
        nothing = await ask(h, AGENT, "queue billing")
        customer = await ask(h, AGENT, "customer <mailto:anna@kunde.example|anna@kunde.example>")
        unknown = await ask(h, AGENT, "customer nobody@nowhere.example")
    lines = queue.splitlines()
    assert lines[0] == "*2 open conversations*, most urgent and oldest first:"
    assert short_id(second) in lines[1]
    assert short_id(first) in lines[2]
    assert "Frage &lt;1&gt;" in queue
    assert general.startswith("*2 open conversations in general*")
    assert nothing == "Nothing waiting in billing. :tada:"
    assert customer.startswith("*Anna Kunde*: :email: E-mail anna@kunde.example")
    assert "2 conversations, 2 messages" in customer
    assert unknown.startswith("No customer `nobody@nowhere.example`")


async def test_app_home_shows_mine_the_queue_and_snoozed(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with team(make_settings, slack, relay, clock) as h:
        await h.send_mail(mail("Eins", subject="Mine", message_id="<1@kunde.example>"))
        await h.send_mail(mail("Zwei", subject="Later", message_id="<2@kunde.example>"))
        await settle(h)
        clock.advance(timedelta(minutes=1))  # the week's figures run up to the service's now
        mine, later = await Conversation.all().order_by("id")
        await ask(h, AGENT, f"assign {short_id(mine)} me")
        await ask(h, LEAD, f"snooze {short_id(later)} 3h")
        response = await h.events.open_app_home(AGENT)
        assert response.status == 200
        await slack.wait_until(lambda: bool(slack.views))
    ((method, view),) = slack.views
    assert (method, view["type"], view["user_id"]) == ("views.publish", "home", AGENT)
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    assert short_id(mine) in sections[0]
    assert "*general*: 1 open" in sections[1]
    assert short_id(later) in sections[2]
    assert ":zzz:" in sections[2]
    assert "Conversations opened: 2 (email 2)" in sections[3]  # this week


async def test_an_admin_sets_the_name_replies_go_out_under(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        conversation = await new_conversation(h)
        refused = await ask(h, LEAD, f'agent <@{AGENT}> "Anna from Billing"')
        named = await ask(h, ADMIN, f'agent <@{AGENT}> "Anna from Billing"')
        await h.agent_replies("support", conversation.chat_thread_ts or "", "Hallo!")
        (sent,) = await relay.wait_for(1)
        reset = await ask(h, ADMIN, f"agent <@{AGENT}> reset")
        await settle(h)
        assert not await AgentName.exists()
    assert refused.startswith("Not allowed")
    assert named == f"Replies of <@{AGENT}> go out as “Anna from Billing” now."
    assert sent.message["From"].addresses[0].display_name == "Anna from Billing (Shop Support)"
    assert reset == f"Replies of <@{AGENT}> go out under their Slack name again."

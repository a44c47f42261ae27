"""A customer left waiting gets louder: follow-ups and waiting time raise the priority live."""

from __future__ import annotations

from datetime import timedelta

from bot.roles import Actor
from bot.shapes import Priority
from models import AuditEntry, Conversation, ConversationStatus
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, running
from tests.test_flow_commands import FakeClock, card_text, root_of, settle, thread_texts
from tests.test_flow_email_to_slack import mail
from tests.test_flow_oncall import ONCALL, ONCALL_SETTINGS, PAGE, OutageTriage, rendered

FIRST = "<first@kunde.example>"


async def write(h: Harness, text: str, *, first: bool = False, auto: bool = False) -> Conversation:
    """The customer writes (the first mail, or a follow-up to it; ``auto``: an auto-reply);
    the conversation after."""
    message = mail(text, message_id=FIRST) if first else mail(text, in_reply_to=FIRST)
    if auto:
        message["Auto-Submitted"] = "auto-replied"
    await h.send_mail(message)
    await settle(h)
    return await Conversation.get()


async def wait(h: Harness, clock: FakeClock, hours: float) -> Conversation:
    """Time passes without a word; the jobs due by then run."""
    clock.advance(timedelta(hours=hours))
    h.service.runner.notify()
    await settle(h)
    return await Conversation.get()


async def test_two_unanswered_follow_ups_raise_normal_to_high_on_the_card(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, clock=FakeClock()) as h:
        await write(h, "My invoice is charged twice.", first=True)
        once = await write(h, "Any news?")
        twice = await write(h, "Hello? Still charged twice.")
        card = card_text(root_of(h, twice))
        texts = thread_texts(h, twice)

    assert once.priority is Priority.NORMAL
    assert (twice.priority, twice.priority_reason) == (Priority.HIGH, "high: 2 follow-ups")
    assert "high: 2 follow-ups" in card
    assert texts[-1] == "The priority rose from normal to high (2 follow-ups)."


async def test_an_agent_reply_starts_the_count_again(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, clock=FakeClock()) as h:
        await write(h, "My invoice is charged twice.", first=True)
        await write(h, "Any news?")
        await h.reply_in_only_conversation("We are on it.")
        await settle(h)
        await write(h, "Thanks, and when is it refunded?")
        after_one = await write(h, "The refund is not there yet.")
        after_two = await write(h, "Hello?")

    assert after_one.priority is Priority.NORMAL
    assert after_two.priority is Priority.HIGH


async def test_waiting_past_the_hours_raises_high_then_urgent_without_new_messages(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with running(make_settings, slack, relay, clock=clock) as h:
        await write(h, "My invoice is charged twice.", first=True)
        before = await wait(h, clock, 23)
        high = await wait(h, clock, 2)
        urgent = await wait(h, clock, 48)
        card = card_text(root_of(h, urgent))

    assert before.priority is Priority.NORMAL
    assert (high.priority, high.priority_reason) == (Priority.HIGH, "high: waiting 25 h")
    assert (urgent.priority, urgent.priority_reason) == (Priority.URGENT, "urgent: waiting 73 h")
    assert "urgent: waiting 73 h" in card


async def test_an_answered_conversation_is_not_raised_for_waiting(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with running(make_settings, slack, relay, clock=clock) as h:
        await write(h, "My invoice is charged twice.", first=True)
        await h.reply_in_only_conversation("Refunded, sorry about that.")
        await relay.wait_for(1)
        answered = await wait(h, clock, 100)
        raises = await AuditEntry.filter(action="priority").count()

    assert answered.priority is Priority.NORMAL
    assert raises == 0


async def test_a_closed_conversation_is_not_raised_for_waiting(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with running(make_settings, slack, relay, clock=clock) as h:
        conversation = await write(h, "Never mind, found it.", first=True)
        await h.service.workflow.close(Actor(AGENT, "Anna"), conversation)
        closed = await wait(h, clock, 100)

    assert closed.status is ConversationStatus.CLOSED
    assert closed.priority is Priority.NORMAL


async def test_a_conversation_raised_to_urgent_pages_the_skills_on_call_group(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    slack.add_channel("support-outages")
    assert slack.add_usergroup("outages-oncall", ["U0ONCALL"]) == ONCALL
    clock = FakeClock()
    async with running(
        make_settings, slack, relay, classifier=OutageTriage(), extra=ONCALL_SETTINGS, clock=clock
    ) as h:
        await write(h, "The checkout looks slow.", first=True)
        high = await wait(h, clock, 25)
        high_texts = thread_texts(h, high)
        urgent = await wait(h, clock, 48)
        urgent_texts = thread_texts(h, urgent)
        root = root_of(h, urgent)

    assert high.priority is Priority.HIGH
    assert not any(PAGE in text for text in high_texts)
    assert urgent.priority is Priority.URGENT
    assert urgent_texts[-1] == (
        f"The priority rose from high to urgent (waiting 73 h). Paging {PAGE}."
    )
    assert PAGE in rendered(root)

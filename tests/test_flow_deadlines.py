"""Deadlines in business time: on the card, paused while pending, alerts exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from adapters.slack.chat import SlackChat
from adapters.slack.views import answer_text
from bot.conversations import short_id
from bot.deadlines import FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION, Deadlines
from bot.roles import Actor
from bot.shapes import Priority
from models import AuditEntry, Conversation, Job, JobState, SlaClock
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, running
from tests.test_flow_commands import FakeClock, card_text, root_of, settle, thread_texts
from tests.test_flow_email_to_slack import mail
from tests.test_flow_oncall import ONCALL, ONCALL_SETTINGS, PAGE, OutageTriage

BERLIN = ZoneInfo("Europe/Berlin")
LEADS = "support-leads"
SLA = f"""
[sla]
timezone = "Europe/Berlin"
week = "mon-fri 09:00-18:00"
holidays = "DE/BY"
leads_channel = "{LEADS}"

[[sla.policies]]
first_response = "4h"
next_response = "2h"
resolution = "16h"
"""
FIRST = "<first@kunde.example>"


def at(*args: int) -> FakeClock:
    clock = FakeClock()
    # In UTC, as the service's clock is: SQLite compares stored times as text.
    clock.now = berlin(*args).astimezone(UTC)
    return clock


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc,arg-type]


async def clocks() -> dict[str, SlaClock]:
    return {c.target: c for c in await SlaClock.all()}


async def write(h: Harness, text: str, *, first: bool = False) -> Conversation:
    await h.send_mail(mail(text, message_id=FIRST) if first else mail(text, in_reply_to=FIRST))
    await settle(h)
    return await Conversation.get()


async def wait(h: Harness, clock: FakeClock, **delta: float) -> Conversation:
    clock.advance(timedelta(**delta))
    h.service.runner.notify()
    await settle(h)
    return await Conversation.all().order_by("id").first()  # type: ignore[return-value]


async def test_friday_evening_is_due_monday_and_the_card_says_so(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = at(2026, 12, 4, 17, 55)  # a Friday
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        conversation = await write(h, "Meine Rechnung ist doppelt.", first=True)
        card = card_text(root_of(h, conversation))
        running_clocks = await clocks()

    assert running_clocks[FIRST_RESPONSE].due_at == berlin(2026, 12, 7, 12, 55)
    # 16 h of working time: 5 min on Friday, Monday 9 h, then 6 h 55 min on Tuesday.
    assert running_clocks[RESOLUTION].due_at == berlin(2026, 12, 8, 15, 55)
    assert ":large_green_square: first reply due in 4 h" in card
    assert ":large_green_square: resolution due in 16 h" in card
    assert f"<!date^{int(berlin(2026, 12, 7, 12, 55).timestamp())}^" in card


async def test_a_holiday_on_monday_moves_the_deadline_to_tuesday(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = at(2027, 5, 14, 17, 55)  # the Friday before Whit Monday, a holiday in Bavaria
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        await write(h, "Meine Rechnung ist doppelt.", first=True)
        first = (await clocks())[FIRST_RESPONSE]

    assert first.due_at == berlin(2027, 5, 18, 12, 55)


async def test_pending_pauses_the_clock_and_the_customer_writing_resumes_it(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = at(2026, 12, 7, 9, 0)  # Monday
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        conversation = await write(h, "Meine Rechnung ist doppelt.", first=True)
        await wait(h, clock, hours=1)
        await h.service.workflow.snooze(Actor(AGENT, "Anna"), conversation, timedelta(days=2))
        paused = await wait(h, clock, hours=5)
        paused_clocks = await clocks()
        paused_card = card_text(root_of(h, paused))
        resumed = await write(h, "Hallo? Noch jemand da?")
        resumed_clocks = await clocks()
        resumed_card = card_text(root_of(h, resumed))

    first = paused_clocks[FIRST_RESPONSE]
    assert (first.running_since, first.due_at, first.remaining_seconds) == (None, None, 3 * 3600)
    assert ":double_vertical_bar: first reply paused, 3 h left" in paused_card
    # Five hours later, with five hours of the working day used by the snooze, 3 h are left.
    assert resumed.snoozed_until is None
    assert resumed_clocks[FIRST_RESPONSE].due_at == berlin(2026, 12, 7, 18, 0)
    assert ":large_green_square: first reply due in 3 h" in resumed_card


async def test_an_answer_meets_the_first_reply_and_the_customer_starts_the_next(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        await write(h, "Meine Rechnung ist doppelt.", first=True)
        await wait(h, clock, hours=1)
        await h.reply_in_only_conversation("Wir schauen nach.")
        await relay.wait_for(1)
        answered = await wait(h, clock)
        after_answer = await clocks()
        answered_card = card_text(root_of(h, answered))
        await wait(h, clock, hours=2)
        await write(h, "Und, was gefunden?")
        after_follow_up = await clocks()

    assert set(after_answer) == {RESOLUTION}
    assert after_answer[RESOLUTION].running_since is None  # waiting on the customer
    assert after_answer[RESOLUTION].remaining_seconds == 15 * 3600
    assert "first reply" not in answered_card
    assert "resolution paused, 15 h left" in answered_card
    assert set(after_follow_up) == {NEXT_RESPONSE, RESOLUTION}
    assert after_follow_up[NEXT_RESPONSE].due_at == berlin(2026, 12, 7, 14, 0)
    assert after_follow_up[RESOLUTION].due_at == berlin(2026, 12, 8, 18, 0)


async def test_warning_and_breach_go_out_once_each_to_the_owner_and_the_leads(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        conversation = await write(h, "Meine Rechnung ist doppelt.", first=True)
        await h.service.workflow.assign(Actor(AGENT, "Anna"), conversation, AGENT)
        before = await wait(h, clock, hours=2, minutes=59)
        before_texts = thread_texts(h, before)
        warned = await wait(h, clock, minutes=1)
        warned_card = card_text(root_of(h, warned))
        warned_texts = thread_texts(h, warned)
        for _ in range(3):
            breached = await wait(h, clock, hours=1)
        breached_card = card_text(root_of(h, breached))
        texts = thread_texts(h, breached)
        direct = slack.direct_messages(AGENT)
        leads = slack.channel_messages(LEADS)
        breaches = [e.detail for e in await AuditEntry.filter(action="sla breach")]
        await h.reply_in_only_conversation("Entschuldigung, erledigt.")
        await relay.wait_for(1)
        await wait(h, clock)
        recorded = await AuditEntry.get(action="sla breach")

    assert not any("due in" in t for t in before_texts)
    assert warned_texts[-1] == (
        ":large_yellow_square: First reply due in 1 h (75% of the 4 h target used)."
    )
    assert ":large_yellow_square: first reply due in 1 h" in warned_card
    assert [t for t in texts if "First reply" in t] == [
        warned_texts[-1],
        ":large_red_square: First reply overdue: the 4 h target ran out.",
    ]
    # Redrawn at the breach: red from then on.
    assert ":large_red_square: first reply overdue (<!date^" in breached_card
    assert len(direct) == 1
    assert "first reply due in 1 h" in direct[0]["text"]
    assert len(leads) == 1  # the owner had the warning; the leads hear of the breach
    assert "first reply overdue (4 h target)" in leads[0]["text"]
    assert [d["target"] for d in breaches] == [FIRST_RESPONSE]
    # Answered 2 h after the deadline: the breach records the overrun.
    assert recorded.detail["overrun_seconds"] == 2 * 3600


async def test_without_an_owner_the_warning_goes_to_the_leads(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        await write(h, "Meine Rechnung ist doppelt.", first=True)
        await wait(h, clock, hours=3)
        leads = slack.channel_messages(LEADS)

    assert len(leads) == 1
    assert "first reply due in 1 h" in leads[0]["text"]
    assert "|Open the conversation>" in leads[0]["text"]


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no handler catches it."""


async def test_alerts_go_out_once_when_the_process_dies_mid_way(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, monkeypatch: Any
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        await write(h, "Meine Rechnung ist doppelt.", first=True)

    # The warning is due; the process dies in the middle of recording it, then (after a
    # restart) right after the alert reached Slack, before its job was marked done.
    clock.advance(timedelta(hours=3))
    original_warn = Deadlines._warn

    async def warn_then_die(self: Deadlines, *args: Any) -> None:
        await original_warn(self, *args)
        raise Crash

    monkeypatch.setattr(Deadlines, "_warn", warn_then_die)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA, run_jobs=False) as h:
        await run_until_crash(h)
        assert not await AuditEntry.filter(action="sla warning").exists()
    monkeypatch.setattr(Deadlines, "_warn", original_warn)

    original_post = SlackChat.post_message

    async def post_then_die(self: SlackChat, chat_channel: str, text: str, *, marker: str) -> str:
        await original_post(self, chat_channel, text, marker=marker)
        raise Crash

    monkeypatch.setattr(SlackChat, "post_message", post_then_die)
    clock.advance(timedelta(minutes=2))  # the dead worker's lease runs out
    async with running(make_settings, slack, relay, clock=clock, extra=SLA, run_jobs=False) as h:
        await run_until_crash(h)
    monkeypatch.setattr(SlackChat, "post_message", original_post)
    assert len(slack.channel_messages(LEADS)) == 1

    clock.advance(timedelta(minutes=2))
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        await wait(h, clock, minutes=1)
        conversation = await wait(h, clock, hours=1)
        texts = thread_texts(h, conversation)
        alerts = [e.action for e in await AuditEntry.filter(action__startswith="sla")]

    assert sorted(alerts) == ["sla breach", "sla warning"]
    assert len([t for t in texts if "First reply due in" in t]) == 1
    assert len([t for t in texts if "First reply overdue" in t]) == 1
    # The warning and the breach, once each, though the warning's post was made after a death.
    leads = [m["text"] for m in slack.channel_messages(LEADS)]
    assert len(leads) == 2
    assert "due in" in leads[0]
    assert "overdue" in leads[1]


async def run_until_crash(h: Harness) -> None:
    """Run due jobs one by one until one of them dies."""
    for _ in range(20):
        jobs = await h.service.runner.claim(1)
        assert jobs, "no job left before the crash"
        try:
            await h.service.runner._run(jobs[0])
        except Crash:
            return
    raise AssertionError("the crash never came")


async def test_closing_ends_the_clocks_and_their_checks(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        conversation = await write(h, "Hat sich erledigt.", first=True)
        assert await SlaClock.all().count() == 2
        await h.service.workflow.close(Actor(AGENT, "Anna"), conversation)
        assert not await Job.filter(kind="sla_check", state=JobState.PENDING).exists()
        await wait(h, clock, hours=30)
        left = await SlaClock.all().count()
        checks = await Job.filter(kind="sla_check", state=JobState.PENDING).count()
        alerts = await AuditEntry.filter(action__startswith="sla").count()

    assert (left, checks, alerts) == (0, 0, 0)


async def test_the_queue_puts_the_least_time_left_first(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, extra=SLA) as h:
        await h.send_mail(mail("Kein Eile.", subject="Older, low", message_id="<a@kunde.example>"))
        await settle(h)
        older = await Conversation.get(subject="Older, low")
        await h.service.workflow.set_priority(Actor(AGENT, "Anna"), older, Priority.LOW)
        await wait(h, clock, hours=1)
        await h.send_mail(mail("Wichtig.", subject="Newer, high", message_id="<b@kunde.example>"))
        await settle(h)
        newer = await Conversation.get(subject="Newer, high")
        await h.service.workflow.set_priority(Actor(AGENT, "Anna"), newer, Priority.HIGH)
        await wait(h, clock, hours=1)
        queue = await h.service.lookups.queue()
        shown = answer_text(queue, clock())

    assert [e.short_id for e in queue.entries] == [short_id(older), short_id(newer)]
    assert [e.deadline.left if e.deadline else None for e in queue.entries] == [
        timedelta(hours=2),
        timedelta(hours=3),
    ]
    assert "least time left first" in shown
    assert ":large_green_square: first reply due in 2 h" in shown


async def test_a_breach_pages_the_on_call_group_when_the_policy_says_so(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    slack.add_channel(LEADS)
    slack.add_channel("support-outages")
    assert slack.add_usergroup("outages-oncall", ["U0ONCALL"]) == ONCALL
    paging = SLA + '[[sla.policies]]\nskill = "outages"\npage_oncall_on_breach = true\n'
    clock = at(2026, 12, 7, 9, 0)
    async with running(
        make_settings,
        slack,
        relay,
        clock=clock,
        classifier=OutageTriage(),
        extra=ONCALL_SETTINGS + paging,
    ) as h:
        conversation = await write(h, "The checkout looks slow.", first=True)
        await wait(h, clock, hours=4)
        texts = thread_texts(h, conversation)
        leads = slack.channel_messages(LEADS)

    assert texts[-1] == (
        f":large_red_square: First reply overdue: the 4 h target ran out. Paging {PAGE}."
    )
    assert [m["text"].split(" <")[0] for m in leads][-1] == (
        ":large_red_square: Conversation "
        f"`{short_id(conversation)}`: first reply overdue (4 h target). On-call is paged in "
        "the thread."
    )

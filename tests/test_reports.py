"""Reports: periods, figures from stored facts, the Slack report with its chart, CSV and JSON."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.cli import main
from bot.conversations import customer_waiting_since, short_id
from bot.database import open_database
from bot.errors import ActionRefused
from bot.reports import Reports, Spread, parse_period, percentile, time_buckets
from bot.settings import Settings
from bot.shapes import ChannelKind, DeliveryState
from models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Customer,
    Direction,
    Identity,
    Message,
)
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import AGENT, BOT_TOKEN, SIGNING_SECRET, SettingsFactory, toml_for
from tests.test_flow_commands import LEAD, FakeClock, ask, new_conversation, settle, team

#: Wednesday 2 December 2026, 15:00 in Berlin.
NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
SLA = """
[sla]
timezone = "Europe/Berlin"
week = "mon-fri 09:00-17:00"
"""


def test_periods_are_read_in_the_teams_time_zone() -> None:
    week = parse_period("week", NOW, "Europe/Berlin")
    assert week.start == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)  # Monday 00:00 in Berlin
    assert week.end == NOW
    assert not week.hourly
    today = parse_period("today", NOW, "Europe/Berlin")
    assert today.start == datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
    assert today.hourly
    month = parse_period("month", NOW, "Europe/Berlin")
    assert month.start == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    november = parse_period("2026-11-01..2026-11-30", NOW, "Europe/Berlin")
    assert november.start == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    assert november.end == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    half_year = parse_period("2026-01-01..2026-06-30", NOW, "Europe/Berlin")
    assert half_year.weekly
    weeks = time_buckets(half_year)
    assert weeks[0] == datetime(2025, 12, 28, 23, 0, tzinfo=UTC)  # the Monday before
    assert len(weeks) == 27
    assert len(time_buckets(november)) == 30
    for wrong, says in (
        ("yesterday", "is not a period"),
        ("2026-11-30..2026-11-01", "ends before it starts"),
        ("2026-02-30..2026-03-01", "day is out of range"),
        ("2020-01-01..2026-01-01", "longer than 400 days"),
    ):
        with pytest.raises(ActionRefused, match=says):
            parse_period(wrong, NOW, "Europe/Berlin")


def test_percentiles_interpolate_between_the_nearest_values() -> None:
    assert percentile([10.0], 90) == 10.0
    assert percentile([0.0, 10.0], 50) == 5.0
    assert percentile([float(v) for v in range(1, 11)], 90) == pytest.approx(9.1)
    spread = Spread.of([600, None, 60, 3600])
    assert (spread.count, spread.p50) == (3, 600.0)
    assert spread.p90 == pytest.approx(3000.0)
    assert Spread.of([]) == Spread()


async def _conversation(
    customer: Customer,
    channel: ChannelKind,
    skill: str,
    created: datetime,
    *,
    sentiment: str = "neutral",
    first_reply: timedelta | None = None,
    closed: timedelta | None = None,
) -> Conversation:
    identity = await Identity.create(
        customer=customer, channel=channel, address=f"{skill}-{created.timestamp()}@x.example"
    )
    conversation = await Conversation.create(
        token=f"t{int(created.timestamp())}{skill}"[:16],
        customer=customer,
        identity=identity,
        channel=channel,
        skill=skill,
        sentiment=sentiment,
        status=ConversationStatus.OPEN if closed is None else ConversationStatus.CLOSED,
    )
    await Conversation.filter(id=conversation.id).update(
        created_at=created,
        first_reply_at=created + first_reply if first_reply else None,
        first_reply_seconds=int(first_reply.total_seconds()) if first_reply else None,
        closed_at=created + closed if closed else None,
        resolution_seconds=int(closed.total_seconds()) if closed else None,
    )
    inbound = await Message.create(
        conversation=conversation, direction=Direction.INBOUND, channel=channel, text="Hilfe"
    )
    await Message.filter(id=inbound.id).update(created_at=created)
    if first_reply is not None:
        reply = await Message.create(
            conversation=conversation,
            direction=Direction.OUTBOUND,
            channel=channel,
            text="Gern",
            author_id=AGENT if skill == "billing" else LEAD,
            delivery_state=DeliveryState.SENT,
            response_seconds=int(first_reply.total_seconds()),
        )
        await Message.filter(id=reply.id).update(created_at=created + first_reply)
    return conversation


async def test_a_report_reads_the_stored_facts_of_its_period(
    database_url: str, make_settings: SettingsFactory
) -> None:
    settings: Settings = make_settings(extra=SLA)
    reports = Reports(settings, clock=lambda: NOW)
    async with open_database(database_url):
        customer = await Customer.create(name="Kim")
        monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        await _conversation(
            customer, ChannelKind.EMAIL, "billing", monday, first_reply=timedelta(minutes=30),
            closed=timedelta(hours=5),
        )  # fmt: skip
        late = await _conversation(
            customer, ChannelKind.EMAIL, "billing", monday + timedelta(hours=1),
            sentiment="negative", first_reply=timedelta(hours=6),
        )  # fmt: skip
        await _conversation(
            customer, ChannelKind.TELEGRAM, "technical", monday + timedelta(days=1),
            sentiment="", first_reply=timedelta(hours=2),
        )  # fmt: skip
        await _conversation(
            customer, ChannelKind.TELEGRAM, "technical", NOW - timedelta(days=2)
        )  # fmt: skip
        # Last week: outside the period, but still open, so it is in the backlog.
        await _conversation(
            customer, ChannelKind.EMAIL, "billing", monday - timedelta(days=3), sentiment="positive"
        )  # fmt: skip
        breach = await AuditEntry.create(
            conversation=late,
            actor_id="",
            action="sla breach",
            detail={"target": "first_response"},
        )
        # Stored at the breach, by the report's clock (not whenever the test runs).
        await AuditEntry.filter(id=breach.id).update(created_at=monday + timedelta(hours=5))
        report = await reports.report(reports.period("week"))
        billing = await reports.report(reports.period("week"), "billing")

    assert report.opened == 4
    assert report.customer_messages == 4
    assert {k: sum(v) for k, v in report.by_channel.items()} == {"email": 2, "telegram": 2}
    assert {k: sum(v) for k, v in report.by_skill.items()} == {"billing": 2, "technical": 2}
    assert len(report.buckets) == 3  # Monday to Wednesday, by day
    assert report.by_channel["email"] == (2, 0, 0)
    assert (report.first_response.count, report.first_response.p50) == (3, 7200.0)
    assert report.first_response.p90 == pytest.approx(18720.0)
    assert report.first_response_by_bucket == (11700.0, 7200.0, None)
    assert report.resolution == Spread(1, 18000.0, 18000.0)
    assert report.deadlines is not None
    assert (report.deadlines.first_replies, report.deadlines.first_replies_late) == (3, 1)
    assert report.deadlines.breaches == {"first_response": 1}
    backlog = {row.skill: row.ages for row in report.backlog}
    # Open: billing from Monday (52 h) and last week's; technical from Tuesday and two days.
    assert backlog == {"billing": (0, 0, 1, 1), "technical": (0, 0, 2, 0)}
    agents = {a.user_id: (a.conversations, a.replies, a.median_response) for a in report.agents}
    assert agents == {AGENT: (2, 2, pytest.approx(11700.0)), LEAD: (1, 1, 7200.0)}
    assert report.sentiment == {"neutral": 2, "negative": 1, "": 1}
    assert billing.opened == 2
    assert set(billing.by_skill) == {"billing"}
    assert [row.skill for row in billing.backlog] == ["billing"]

    rows = {(figure, group, when): value for figure, group, when, value in report.rows()}
    assert rows[("first_response_p50_seconds", "", "")] == "7200"
    assert rows[("backlog", "technical", "1-3 days")] == "2"
    assert rows[("agent_replies", AGENT, "")] == "2"
    data = report.as_json()
    assert data["conversations_opened"] == 4
    assert data["deadlines"] == {
        "first_replies": 3,
        "first_replies_late": 1,
        "resolutions": 1,
        "resolutions_late": 0,
        "breaches": {"first_response": 1},
    }


async def test_replies_and_closing_store_the_facts_and_a_lead_gets_the_report_with_a_chart(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    if clock.now.isocalendar()[:2] != (clock.now + timedelta(hours=4)).isocalendar()[:2]:
        # The service stamps rows with the real time and the report (UTC here) ends at its
        # clock's, so "week" and App Home would read the new week's empty start.
        pytest.skip("the test's three hours would cross into a new week (Sunday night, UTC)")
    async with team(make_settings, slack, relay, clock) as h:
        conversation = await new_conversation(h)
        assert conversation.chat_channel is not None
        assert conversation.chat_thread_ts is not None
        clock.advance(timedelta(hours=2))
        await h.events.post_agent_reply(
            conversation.chat_channel, conversation.chat_thread_ts, AGENT, "Ist unterwegs."
        )
        await settle(h)
        await h.events.post_agent_reply(
            conversation.chat_channel, conversation.chat_thread_ts, AGENT, "Und noch etwas."
        )
        await settle(h)
        clock.advance(timedelta(hours=1))
        await ask(h, LEAD, f"close {short_id(conversation)}")
        await settle(h)
        await conversation.refresh_from_db()
        first, second = await Message.filter(direction=Direction.OUTBOUND).order_by("id")

        assert first.response_seconds == pytest.approx(7200, abs=60)
        assert second.response_seconds is None  # nobody was waiting for the second one
        assert conversation.first_reply_seconds == pytest.approx(7200, abs=60)
        assert conversation.resolution_seconds == pytest.approx(10800, abs=60)
        assert conversation.closed_at == clock.now

        clock.advance(timedelta(minutes=1))
        assert "Not allowed" in await ask(h, AGENT, "report")
        assert "`yesterday` is neither a period nor a skill" in await ask(
            h, LEAD, "report yesterday"
        )
        assert "`nosuch` is neither" in await ask(h, LEAD, "report week nosuch")
        assert "ends before it starts" in await ask(h, LEAD, "report 2026-12-02..2026-12-01")
        answer = await ask(h, LEAD, "report week")
        assert answer == "Posted the report with its charts here."
        posted = slack.channel_messages("support")[-1]
        text = str(posted["text"])
        assert "Conversations opened: 1 (email 1)" in text
        assert "First reply (wall time): median 2 h" in text
        assert "Resolution (wall time): median 3 h" in text
        assert f"<@{AGENT}>: 1 conversations, 2 replies, median wait ended 2 h" in text
        (chart,) = posted["files"]
        png = slack.file_content(chart["id"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 20_000  # six panels drawn, not an empty picture

        # Typed in a channel Switchboard is not in: the report comes as a direct message.
        slack.require_membership = True
        slack.add_channel("random", members=[LEAD])
        answer = await ask(h, LEAD, "report today", channel="random")
        assert "in your direct messages" in answer
        (direct,) = slack.direct_messages(LEAD)
        assert "Report for today" in str(direct["text"])
        assert direct["files"][0]["name"] == "switchboard-report.png"

        await h.events.open_app_home(LEAD)
        await slack.wait_until(lambda: bool(slack.views))
    home = json.dumps(slack.views[-1][1]["blocks"])
    assert "This week" in home
    assert "First reply (wall time): median 2 h" in home


async def test_the_cli_exports_the_figures_as_csv_and_json(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async with open_database(database_url):
        customer = await Customer.create(name="Kim")
        await _conversation(
            customer, ChannelKind.EMAIL, "general", datetime(2026, 11, 10, 9, 0, tzinfo=UTC),
            first_reply=timedelta(minutes=20),
        )  # fmt: skip
    # A fixed day in the past: "today" would depend on the hour the test runs at.
    day = "2026-11-10..2026-11-10"
    config = tmp_path / "switchboard.toml"
    config.write_text(toml_for())
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("DATABASE_URL", database_url)

    async def report(*args: str) -> int:
        return await asyncio.to_thread(main, ["--config", str(config), "report", *args])

    assert await report(day, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["conversations_opened"] == 1
    assert data["first_response_seconds"] == {"count": 1, "p50": 1200.0, "p90": 1200.0}
    assert data["deadlines"] is None  # no [sla]: no deadlines to meet

    assert await report(day, "--csv") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["figure", "group", "when", "value"]
    assert ["conversations_opened", "", "", "1"] in rows
    assert ["agent_conversations", LEAD, "", "1"] in rows

    chart = tmp_path / "report.png"
    assert await report(day, "--png", str(chart)) == 0
    assert "Conversations opened: 1" in capsys.readouterr().out
    assert chart.read_bytes().startswith(b"\x89PNG")

    assert await report("last-week") == 2
    assert "is not a period" in capsys.readouterr().err


@pytest.mark.parametrize("state", [DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.READ])
async def test_a_reply_that_reached_the_customer_ends_their_wait_whatever_its_channel_reported(
    db: str, state: DeliveryState
) -> None:
    # WhatsApp moves a sent reply on to delivered and read: it still answered the customer.
    customer = await Customer.create(name="Anna")
    conversation = await _conversation(customer, ChannelKind.WHATSAPP, "billing", NOW)
    (asked,) = await Message.filter(conversation_id=conversation.id)
    reply = await Message.create(
        conversation=conversation,
        direction=Direction.OUTBOUND,
        channel=ChannelKind.WHATSAPP,
        text="Gern",
        delivery_state=state,
    )
    assert await customer_waiting_since(conversation.id) is None
    # Just before that reply was recorded, the customer waited since their message.
    assert await customer_waiting_since(conversation.id, before=reply.id) == NOW
    again = await Message.create(
        conversation=conversation, direction=Direction.INBOUND, channel=ChannelKind.WHATSAPP
    )
    await Message.filter(id=again.id).update(created_at=NOW + timedelta(hours=1))
    assert await customer_waiting_since(conversation.id) == NOW + timedelta(hours=1)
    assert asked.id < reply.id < again.id

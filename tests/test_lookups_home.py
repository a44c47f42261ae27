"""The App Home's lists: mine, each skill's most urgent and oldest few with the queue's size,
and snoozed conversations due within a day (closed and snoozed ones are not in the queues)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.conversations import short_id
from bot.lookups import Lookups
from bot.settings import settings_from_toml
from bot.shapes import Priority
from models import Conversation, ConversationStatus
from tests.conftest import stored_conversation

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
SETTINGS = settings_from_toml(
    '[[skills]]\nname = "general"\nchannel = "support"\n',
    {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "x"},
)


async def _conversation(
    number: int,
    skill: str,
    priority: Priority,
    *,
    owner: str = "",
    status: ConversationStatus = ConversationStatus.OPEN,
    snoozed_until: datetime | None = None,
) -> Conversation:
    conversation = await stored_conversation(
        number,
        skill=skill,
        priority=priority,
        owner=owner,
        status=status,
        snoozed_until=snoozed_until,
    )
    # Oldest first among equals: created one minute apart, in order.
    conversation.created_at = NOW - timedelta(hours=1) + timedelta(minutes=number)
    await conversation.save(update_fields=["created_at"])
    return conversation


@pytest.mark.usefixtures("db")
async def test_home_lists_each_skills_most_urgent_and_oldest_and_counts_the_rest() -> None:
    normal_old = await _conversation(1, "billing", Priority.NORMAL)
    urgent = await _conversation(2, "billing", Priority.URGENT)
    normal_new = await _conversation(3, "billing", Priority.NORMAL, owner="U1")
    await _conversation(4, "billing", Priority.LOW)
    high = await _conversation(5, "technical", Priority.HIGH, owner="U1")
    await _conversation(6, "billing", Priority.URGENT, status=ConversationStatus.CLOSED)
    snoozed = await _conversation(
        7, "billing", Priority.URGENT, snoozed_until=NOW + timedelta(hours=3)
    )
    await _conversation(8, "technical", Priority.LOW, snoozed_until=NOW + timedelta(days=3))

    home = await Lookups(SETTINGS, clock=lambda: NOW).home("U1", per_skill=3)

    assert [e.short_id for e in home.mine] == [short_id(high), short_id(normal_new)]
    assert [(q.skill, q.total) for q in home.queues] == [("billing", 4), ("technical", 1)]
    billing, technical = home.queues
    assert [e.short_id for e in billing.entries] == [
        short_id(urgent),
        short_id(normal_old),
        short_id(normal_new),
    ]
    assert [e.short_id for e in technical.entries] == [short_id(high)]
    assert [e.short_id for e in home.snoozed] == [short_id(snoozed)]
    assert home.mine[0].customer.startswith("C 5")

"""``Prepared`` (bot/database.py) answers exactly as the plain tortoise query does, on both
databases, for each shape of query the hot paths prepare; and it refuses what it cannot vary."""

from __future__ import annotations

from typing import Any

import pytest
from tortoise.transactions import in_transaction

from bot.database import Prepared
from bot.shapes import ChannelKind, DeliveryState
from models import Conversation, Direction, Identity, Message
from tests.conftest import stored_conversation

pytestmark = pytest.mark.usefixtures("db")


async def _two_conversations() -> tuple[Conversation, Conversation]:
    """Two customers' conversations, each with messages in and out (one reply cancelled)."""
    made = []
    for number in (1, 2):
        conversation = await stored_conversation(number, thread_key=f"chat-{number}")
        identity = await conversation.identity
        for index, direction in enumerate(
            (Direction.INBOUND, Direction.OUTBOUND, Direction.INBOUND, Direction.OUTBOUND)
        ):
            await Message.create(
                conversation=conversation,
                direction=direction,
                channel=ChannelKind.EMAIL,
                dedup_key=f"{number}-{index}",
                sender_address=identity.address,
                text=f"message {number}.{index}",
                is_automated=index == 2,
                delivery_state=(
                    None
                    if direction is Direction.INBOUND
                    else DeliveryState.CANCELLED
                    if index == 3
                    else DeliveryState.SENT
                ),
            )
        made.append(conversation)
    return made[0], made[1]


def _fields(model: Any) -> dict[str, Any]:
    return {name: getattr(model, name) for name in model._meta.db_fields}


async def test_prepared_queries_answer_as_the_plain_queries() -> None:
    first, second = await _two_conversations()
    with_joins = Prepared(
        lambda message_id: (
            Message.filter(id=message_id).select_related("conversation__identity").first()
        ),
        1,
    )
    by_channel = Prepared(
        lambda channel, address: Identity.filter(channel=channel, address=address).first(),
        ChannelKind.TELEGRAM,
        "x",
    )
    ids_of = Prepared(
        lambda conversation_id: (
            Message.filter(conversation_id=conversation_id, direction=Direction.OUTBOUND)
            .exclude(delivery_state=DeliveryState.CANCELLED)
            .order_by("-id")
            .values_list("id", flat=True)
        ),
        1,
    )
    rows_of = Prepared(
        lambda conversation_id: (
            Message.filter(conversation_id=conversation_id)
            .order_by("id")
            .values("id", "text", "is_automated")
        ),
        1,
    )
    any_person = Prepared(
        lambda conversation_id: Message.filter(
            conversation_id=conversation_id, is_automated=True
        ).exists(),
        1,
    )
    for conversation in (first, second):
        messages = await Message.filter(conversation_id=conversation.id).order_by("id")
        for message in messages:
            plain = await (
                Message.filter(id=message.id).select_related("conversation__identity").first()
            )
            prepared = await with_joins(message.id)
            assert plain is not None
            assert prepared is not None
            assert _fields(prepared) == _fields(plain)
            assert prepared.conversation is not None
            assert plain.conversation is not None
            assert _fields(prepared.conversation) == _fields(plain.conversation)
            assert _fields(prepared.conversation.identity) == _fields(plain.conversation.identity)
        identity = await conversation.identity
        found = await by_channel(ChannelKind.EMAIL, identity.address)
        assert found is not None
        assert found.id == identity.id
        assert await by_channel(ChannelKind.TELEGRAM, identity.address) is None
        assert await ids_of(conversation.id) == await Message.filter(
            conversation_id=conversation.id, direction=Direction.OUTBOUND
        ).exclude(delivery_state=DeliveryState.CANCELLED).order_by("-id").values_list(
            "id", flat=True
        )
        assert len(await ids_of(conversation.id)) == 1
        assert await rows_of(conversation.id) == await Message.filter(
            conversation_id=conversation.id
        ).order_by("id").values("id", "text", "is_automated")
        assert await any_person(conversation.id) is True
    assert await with_joins(10**9) is None
    assert await rows_of(10**9) == []
    assert await any_person(10**9) is False


async def test_prepared_queries_run_in_the_callers_transaction() -> None:
    first, _ = await _two_conversations()
    by_token = Prepared(lambda token: Conversation.filter(token=token).first(), "t")
    async with in_transaction() as conn:
        await Conversation.filter(id=first.id).using_db(conn).update(token="moved-away")
        inside = await by_token("moved-away", conn=conn)
        assert inside is not None
        assert inside.id == first.id
    # Committed: seen outside as well; the old token is gone.
    assert await by_token(first.token) is None
    outside = await by_token("moved-away")
    assert outside is not None
    assert outside.id == first.id


async def test_what_cannot_be_prepared_is_refused() -> None:
    await _two_conversations()
    # A list changes the SQL with its length.
    with pytest.raises(TypeError, match="stand-in"):
        Prepared(lambda ids: Message.filter(id__in=ids), [1, 2])
    # An argument that changes the SQL itself (here the length of an IN list).
    below = Prepared(lambda count: Message.filter(id__in=list(range(1, count))), 3)
    with pytest.raises(ValueError, match="SQL"):
        await below(5)
    # A limit is a parameter: that may vary.
    first_few = Prepared(lambda count: Message.all().order_by("id").limit(count), 3)
    assert len(await first_few(5)) == 5
    assert len(await first_few(2)) == 2
    # A stand-in equal to a constant of the query is still told apart from it.
    inbound = Prepared(
        lambda conversation_id: Message.filter(
            conversation_id=conversation_id, direction=Direction.INBOUND, id__gt=0
        ).count(),
        0,
    )
    first = await Conversation.all().order_by("id").first()
    assert first is not None
    assert await inbound(first.id) == 2
    with pytest.raises(TypeError, match="arguments"):
        await inbound()

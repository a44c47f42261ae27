"""Which conversation an inbound message belongs to.

In order: the Message-IDs it answers (In-Reply-To, References), the token in our own reply
address or Message-ID, the channel's thread key (Telegram chat, webhook conversation), and
for e-mail the same sender writing about the same subject within the configured window.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import cast

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySetSingle

from bot.database import Prepared
from bot.settings import ThreadingSettings
from bot.shapes import SENT_STATES, ChannelKind, InboundMessage
from bot.subjects import normalise_subject
from models import Conversation, ConversationStatus, Direction, Identity, Message

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def new_token() -> str:
    """A conversation token: unguessable, short enough for a reply address."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(10))


def short_id(conversation: Conversation) -> str:
    """The id people use in Slack to name a conversation."""
    return conversation.token[:6]


# Run for every message: their SQL built once.
_BY_TOKEN = Prepared(lambda token: Conversation.filter(token=token).first(), "token")


def _same_chat(open_only: bool) -> Prepared[Conversation | None]:
    """The latest conversation of a sender's chat (``open_only``: if it is open)."""

    def build(identity_id: int, thread_key: str) -> QuerySetSingle[Conversation | None]:
        query = Conversation.filter(identity_id=identity_id, thread_key=thread_key)
        if open_only:
            query = query.filter(status=ConversationStatus.OPEN)
        return query.order_by("-id").first()

    return Prepared(build, 1, "chat")


_SAME_CHAT, _SAME_CHAT_OPEN = _same_chat(False), _same_chat(True)


async def find_conversation(
    message: InboundMessage,
    identity: Identity,
    threading: ThreadingSettings,
    now: datetime,
    conn: BaseDBAsyncClient,
    *,
    reopen_closed: Collection[ChannelKind] = (),
    new_sender: bool = False,
) -> Conversation | None:
    """The conversation ``message`` continues, or None if it starts a new one.

    A chat (``thread_key``) continues its open conversation; once that is closed, the next
    message starts a new one, unless its channel is in ``reopen_closed``.
    """
    if message.replies_to:
        earlier = (
            await Message.filter(external_id__in=message.replies_to, channel=message.channel)
            .using_db(conn)
            .order_by("-id")
            .first()
            .prefetch_related("conversation")
        )
        if earlier is not None:
            return earlier.conversation
    if message.conversation_token:
        found = await _BY_TOKEN(message.conversation_token, conn=conn)
        if found is not None:
            return found
    if new_sender:
        # A sender seen for the first time has no conversations of their own to continue.
        return None
    if message.thread_key:
        same_chat = _SAME_CHAT if message.channel in reopen_closed else _SAME_CHAT_OPEN
        return await same_chat(identity.id, message.thread_key, conn=conn)
    if message.channel is ChannelKind.EMAIL and threading.subject_window_hours > 0:
        subject = normalise_subject(message.subject)
        if subject:
            since = now - timedelta(hours=threading.subject_window_hours)
            return (
                await Conversation.filter(
                    identity_id=identity.id,
                    normalised_subject=subject,
                    status=ConversationStatus.OPEN,
                    last_inbound_at__gte=since,
                )
                .using_db(conn)
                .order_by("-id")
                .first()
            )
    return None


async def customer_waiting_since(
    conversation_id: int, *, before: int | None = None, conn: BaseDBAsyncClient | None = None
) -> datetime | None:
    """When the customer's oldest message that no reply reaching them has answered came in.

    ``before``: as it stood just before the message with that id (a reply being recorded).
    Automatic mail (auto-replies, bounces) waits for nothing.
    """
    below = {"id__lt": before} if before is not None else {}
    reply = (
        await Message.filter(
            conversation_id=conversation_id,
            direction=Direction.OUTBOUND,
            delivery_state__in=SENT_STATES,
            **below,
        )
        .using_db(conn)
        .order_by("-id")
        .limit(1)
        .values_list("id", flat=True)
    )
    first = (
        await Message.filter(
            conversation_id=conversation_id,
            direction=Direction.INBOUND,
            is_automated=False,
            id__gt=reply[0] if reply else 0,
            **below,
        )
        .using_db(conn)
        .order_by("id")
        .limit(1)
        .values_list("created_at", flat=True)
    )
    return cast(datetime, first[0]) if first else None

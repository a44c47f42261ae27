"""Intake: store an inbound message and the job that posts it, in one transaction.

Adapters call ``Intake.accept`` and give the sender its success answer (SMTP 250, HTTP 200)
only after it returns: from then on the message is durable and everything else is a job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from bot.conversations import find_conversation, new_token
from bot.jobs import Clock, enqueue, utcnow
from bot.metrics import MESSAGES_IN
from bot.settings import ThreadingSettings
from bot.shapes import InboundMessage
from bot.subjects import normalise_subject
from models import (
    Conversation,
    ConversationStatus,
    Customer,
    Direction,
    Identity,
    Message,
    StoredAttachment,
)

POST_INBOUND = "post_inbound"


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: int
    conversation_id: int
    duplicate: bool = False


def dedup_key(message: InboundMessage) -> str:
    return f"{message.channel.value}:{message.external_id}"


class Intake:
    """Accepts inbound messages durably; ``on_stored`` wakes the job runner."""

    def __init__(
        self,
        threading: ThreadingSettings,
        *,
        clock: Clock = utcnow,
        on_stored: Callable[[InboundMessage], None] | None = None,
    ) -> None:
        self.threading = threading
        self.clock = clock
        self.on_stored = on_stored

    async def accept(self, message: InboundMessage) -> Accepted:
        """Store ``message`` with its job; a message seen before is not stored again."""
        key = dedup_key(message)
        # Two tries: a concurrent delivery of the same message (or a new customer's first two
        # messages at once) loses the race on a unique key and is then found on the second.
        for attempt in range(2):
            existing = await Message.filter(dedup_key=key).first()
            if existing is not None:
                MESSAGES_IN.labels(message.channel.value, "duplicate").inc()
                return Accepted(existing.id, existing.conversation_id, duplicate=True)  # type: ignore[attr-defined]
            try:
                async with in_transaction() as conn:
                    accepted = await self._store(message, key, conn)
            except IntegrityError:
                if attempt == 1:
                    raise
                continue
            MESSAGES_IN.labels(message.channel.value, "accepted").inc()
            if self.on_stored is not None:
                self.on_stored(message)
            return accepted
        raise AssertionError("unreachable")

    async def _store(self, message: InboundMessage, key: str, conn: BaseDBAsyncClient) -> Accepted:
        now = self.clock()
        identity = await self._identity(message, conn)
        conversation = await find_conversation(message, identity, self.threading, now, conn)
        if conversation is None:
            conversation = await Conversation.create(
                token=new_token(),
                customer_id=identity.customer_id,  # type: ignore[attr-defined]
                identity=identity,
                channel=message.channel,
                thread_key=message.thread_key,
                subject=message.subject[:998],
                normalised_subject=normalise_subject(message.subject)[:998],
                last_inbound_at=now,
                using_db=conn,
            )
        else:
            conversation.last_inbound_at = now
            conversation.status = ConversationStatus.OPEN
            await conversation.save(
                using_db=conn, update_fields=["last_inbound_at", "status", "updated_at"]
            )
        stored = await Message.create(
            conversation=conversation,
            direction=Direction.INBOUND,
            channel=message.channel,
            dedup_key=key,
            external_id=message.external_id[:998],
            sender_name=message.sender_name[:255],
            sender_address=message.sender_address[:320],
            subject=message.subject[:998],
            text=message.text,
            full_text=message.full_text,
            replies_to=list(message.replies_to),
            raw_source=message.raw or None,
            is_automated=message.is_automated,
            automated_reason=message.automated_reason[:255],
            using_db=conn,
        )
        for attachment in message.attachments:
            await StoredAttachment.create(
                message=stored,
                filename=attachment.filename[:255],
                content_type=attachment.content_type[:255],
                size=len(attachment.data),
                data=attachment.data,
                using_db=conn,
            )
        await enqueue(
            POST_INBOUND,
            {"message_id": stored.id},
            serial_key=f"conversation:{conversation.id}",
            now=now,
            conn=conn,
        )
        return Accepted(stored.id, conversation.id)

    async def _identity(self, message: InboundMessage, conn: BaseDBAsyncClient) -> Identity:
        identity = (
            await Identity.filter(channel=message.channel, address=message.sender_address)
            .using_db(conn)
            .first()
        )
        if identity is not None:
            if message.sender_name and identity.display_name != message.sender_name:
                identity.display_name = message.sender_name[:255]
                await identity.save(using_db=conn, update_fields=["display_name"])
            return identity
        customer = await Customer.create(name=message.sender_name[:255], using_db=conn)
        return await Identity.create(
            customer=customer,
            channel=message.channel,
            address=message.sender_address[:320],
            display_name=message.sender_name[:255],
            using_db=conn,
        )

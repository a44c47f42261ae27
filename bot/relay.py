"""From a Slack thread to the customer: which messages are replies, and the undo window.

An agent's message in a conversation thread becomes a reply unless it is a note (a configured
prefix such as ``note:`` or ``//``) or comes from a bot (Switchboard's own posts included).
The reply is stored with a delivery job due after the undo window; Undo cancels that job.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from bot.errors import DeliveryError
from bot.jobkinds import DELIVER_REPLY, MessagePayload
from bot.jobs import Clock, cancel_pending, utcnow
from bot.pipeline import threaded
from bot.ports import ChatPort
from bot.settings import ReplySettings
from bot.shapes import AgentMessage, DeliveryState
from models import Conversation, Direction, Message, StoredAttachment

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    QUEUED = "queued"
    NOTE = "note"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class RelayResult:
    outcome: Outcome
    message_id: int | None = None
    job_id: int | None = None


def is_note(text: str, prefixes: tuple[str, ...]) -> bool:
    """Whether an agent's message is an internal note (never sent to the customer)."""
    stripped = text.lstrip().lower()
    return any(stripped.startswith(prefix.lower()) for prefix in prefixes)


class Relay:
    """Turns agents' thread messages into queued replies."""

    def __init__(
        self,
        chat: ChatPort,
        settings: ReplySettings,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.chat = chat
        self.settings = settings
        self.clock = clock
        self.on_queued = on_queued

    async def on_agent_message(self, message: AgentMessage) -> RelayResult:
        """Queue ``message`` for the customer if it is a reply in a conversation thread."""
        if message.is_bot or not message.thread_ts or message.thread_ts == message.ts:
            return RelayResult(Outcome.IGNORED)
        conversation = await Conversation.get_or_none(
            chat_channel=message.chat_channel, chat_thread_ts=message.thread_ts
        )
        if conversation is None:
            return RelayResult(Outcome.IGNORED)
        if is_note(message.text, self.settings.note_prefixes):
            return RelayResult(Outcome.NOTE)
        if not message.text.strip() and not message.attachments:
            return RelayResult(Outcome.IGNORED)
        return await self._queue(conversation, message)

    async def _queue(
        self,
        conversation: Conversation,
        message: AgentMessage,
        *,
        after_store: Callable[[Message, BaseDBAsyncClient], Awaitable[None]] | None = None,
    ) -> RelayResult:
        """Store ``message`` as a reply with its delivery job, due after the undo window."""
        try:
            async with in_transaction() as conn:
                stored = await Message.create(
                    conversation=conversation,
                    direction=Direction.OUTBOUND,
                    channel=conversation.channel,
                    dedup_key=f"slack:{message.chat_channel}:{message.ts}",
                    sender_name=message.user_name[:255],
                    author_id=message.user_id,
                    text=message.text,
                    full_text=message.text,
                    chat_ts=message.ts,
                    delivery_state=DeliveryState.PENDING,
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
                now = self.clock()
                if after_store is not None:
                    await after_store(stored, conn)
                job = await DELIVER_REPLY.enqueue(
                    MessagePayload(stored.id, conversation.id),
                    run_at=now + timedelta(seconds=self.settings.undo_seconds),
                    conn=conn,
                )
        except IntegrityError:
            # Slack delivers an event again when our answer was slow; the first one counts.
            return RelayResult(Outcome.DUPLICATE)
        if self.on_queued is not None:
            self.on_queued()
        return RelayResult(Outcome.QUEUED, stored.id, job.id)

    async def send_draft(
        self,
        conversation: Conversation,
        user_id: str,
        user_name: str,
        text: str,
        *,
        after_store: Callable[[Message, BaseDBAsyncClient], Awaitable[None]] | None = None,
    ) -> RelayResult:
        """Send what an agent wrote in a modal (a suggestion they edited) like a typed reply.

        Their text is posted in the thread under their name (a bot cannot post as them), and
        that post gets the delivery reactions, the undo window and the stored reply.
        """
        if not text.strip():
            return RelayResult(Outcome.IGNORED)
        if not (conversation.chat_channel and conversation.chat_thread_ts):
            raise DeliveryError("the conversation is not shown in Slack yet")
        ts = await self.chat.post_agent_copy(
            conversation.chat_channel, conversation.chat_thread_ts, user_name, text
        )
        posted = AgentMessage(
            chat_channel=conversation.chat_channel,
            thread_ts=conversation.chat_thread_ts,
            ts=ts,
            user_id=user_id,
            text=text,
            user_name=user_name,
        )
        result = await self._queue(conversation, posted, after_store=after_store)
        await self.show_queued(posted, result)
        return result

    async def show_queued(self, message: AgentMessage, result: RelayResult) -> None:
        """Show the agent their reply is queued, with Undo while the window is open."""
        # Best effort: the reply is queued either way, and its delivery shows the outcome.
        stored = await Message.get_or_none(id=result.message_id)
        if stored is None or stored.delivery_state is not DeliveryState.PENDING:
            return
        try:
            await self.chat.show_delivery(message.chat_channel, message.ts, DeliveryState.PENDING)
            if self.settings.undo_seconds > 0:
                await self.chat.offer_undo(
                    message.chat_channel,
                    message.thread_ts,
                    message.user_id,
                    f"{result.job_id}:{result.message_id}",
                    self.settings.undo_seconds,
                )
        except DeliveryError as exc:
            log.warning("could not show a queued reply", extra={"reason": exc.reason})

    async def undo(self, undo_token: str, user_id: str) -> str:
        """Cancel a queued reply; returns the answer to show the agent who asked."""
        job_text, _, message_text = undo_token.partition(":")
        if not (job_text.isdigit() and message_text.isdigit()):
            return "That Undo button is not one of Switchboard's."
        message = await Message.get_or_none(
            id=int(message_text), direction=Direction.OUTBOUND
        ).prefetch_related("conversation")
        if message is None:
            return "That reply no longer exists."
        if message.author_id != user_id:
            return "Only the agent who wrote a reply can undo it."
        if not await cancel_pending(int(job_text)):
            return "Too late: the reply is already on its way to the customer."
        message.delivery_state = DeliveryState.CANCELLED
        await message.save(update_fields=["delivery_state"])
        conversation = threaded(message)
        if message.chat_ts and conversation.chat_channel:
            try:
                await self.chat.show_delivery(
                    conversation.chat_channel, message.chat_ts, DeliveryState.CANCELLED
                )
            except DeliveryError as exc:
                log.warning("could not show an undone reply", extra={"reason": exc.reason})
        return "Undone: this reply will not be sent to the customer."

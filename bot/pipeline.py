"""The jobs after intake: post a customer's message to Slack, deliver an agent's reply.

Both are safe to repeat. Every Slack post carries a marker (our id for it) and its ts is stored
right after the post, so a retry after a crash first looks for the earlier post; a sent reply
is recorded before its delivery state is shown, so a retry never sends it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.database import Prepared
from bot.errors import DeliveryError, DeliveryRefused, PermanentDeliveryError, WindowClosed
from bot.jobkinds import DELIVER_REPLY, POST_INBOUND, REDRAW_CARD, CardPayload, MessagePayload
from bot.jobs import JobKind
from bot.metrics import MESSAGES_OUT
from bot.people import point_to_others
from bot.ports import ChatPort, Classifier, ReplySender
from bot.routing import oncall_for, route, stored_skills
from bot.settings import Settings
from bot.shapes import (
    Attachment,
    ChannelKind,
    ConversationCard,
    CustomerPost,
    DeadlineView,
    DeliveryState,
    InboundMessage,
    OutboundReply,
    Triage,
)
from bot.similar import Similar, SimilarSummary
from bot.vectors import MessageVectors
from bot.whatsapp import record_parts, template_of
from models import Conversation, Direction, Job, Message, StoredAttachment

log = logging.getLogger(__name__)


# One query with joins, its SQL built once: this runs for every message in and out.
_MESSAGE_IN_CONVERSATION = Prepared(
    lambda message_id: (
        Message.filter(id=message_id).select_related("conversation__identity").first()
    ),
    1,
)


async def _message_of(job: Job, kind: JobKind[MessagePayload]) -> Message | None:
    """The message a job is about; None once it was removed (forgotten or purged)."""
    return await _MESSAGE_IN_CONVERSATION(kind.payload_of(job).message_id)


async def _attachments(message: Message) -> tuple[Attachment, ...]:
    stored = await StoredAttachment.filter(message_id=message.id).order_by("id")
    return tuple(Attachment(a.filename, a.content_type, bytes(a.data)) for a in stored)


def threaded(message: Message) -> Conversation:
    """The (prefetched) conversation of a message that has been threaded."""
    if message.conversation is None:
        raise RuntimeError(f"message {message.id} is not in a conversation yet")
    return message.conversation


async def _has_files(message: Message) -> bool:
    return await StoredAttachment.filter(message_id=message.id).exists()


def card_for(
    conversation: Conversation,
    skills: tuple[str, ...] = (),
    *,
    oncall: str = "",
    deadlines: tuple[DeadlineView, ...] = (),
    similar: SimilarSummary | None = None,
) -> ConversationCard:
    """What the root message of ``conversation`` shows; ``skills`` are offered to pick from.

    ``oncall`` is the user group the card alerts (``routing.oncall_for``); ``deadlines`` what
    is due (bot/deadlines.py); ``similar`` what the similar conversations are.
    """
    similar = similar or SimilarSummary()
    identity = conversation.identity
    return ConversationCard(
        short_id=short_id(conversation),
        channel=conversation.channel,
        customer_name=identity.display_name,
        customer_address=identity.address,
        subject=conversation.subject,
        triage=Triage(
            skill=conversation.skill,
            confidence=conversation.confidence,
            priority=conversation.priority,
            priority_reason=conversation.priority_reason,
            language=conversation.language,
            sentiment=conversation.sentiment,
            sentiment_message=conversation.sentiment_message,
        ),
        status=conversation.status.value,
        owner=conversation.owner,
        snoozed_until=conversation.snoozed_until,
        skills=skills,
        oncall=oncall,
        deadlines=deadlines,
        tags=tuple(t for t in conversation.tags.split(",") if t),
        similar_open=similar.open,
        similar_closed=similar.closed_recently,
        known_problem=similar.problem,
    )


def inbound_of(message: Message, attachments: tuple[Attachment, ...]) -> InboundMessage:
    """A stored inbound message, in the shape triage reads."""
    return InboundMessage(
        channel=message.channel,
        external_id=message.external_id or "",
        sender_address=message.sender_address,
        sender_name=message.sender_name,
        subject=message.subject,
        text=message.text,
        full_text=message.full_text,
        received_at=message.created_at,
        attachments=attachments,
        replies_to=tuple(message.replies_to),
        thread_key=message.thread_key,
        conversation_token=message.conversation_token,
        is_automated=message.is_automated,
        automated_reason=message.automated_reason,
    )


async def customer_message_number(conversation_id: int, message_id: int) -> int:
    """Which of the customer's messages in the conversation this is (1 for the first);
    automatic mail does not count."""
    return await Message.filter(
        conversation_id=conversation_id,
        direction=Direction.INBOUND,
        is_automated=False,
        id__lte=message_id,
    ).count()


class PostInbound:
    """Shows a customer's message in Slack: triage and a root post first, then the thread."""

    def __init__(
        self,
        chat: ChatPort,
        classifier: Classifier,
        settings: Settings,
        *,
        after_post: Callable[[Conversation, Message, bool, Triage | None], Awaitable[None]]
        | None = None,
        vectors: MessageVectors | None = None,
        similar: Similar | None = None,
    ) -> None:
        self.chat = chat
        self.classifier = classifier
        self.settings = settings
        # Where each customer message's vector is kept (similar conversations, suggestions).
        self.vectors = vectors
        self.similar = similar
        # Told when a customer's message is in its thread (a snoozed conversation wakes up),
        # whether that message has just opened the thread, and a follow-up's triage.
        self.after_post = after_post

    async def run(self, job: Job) -> None:
        message = await _message_of(job, POST_INBOUND)
        if message is None:
            return
        retrying = job.attempts > 1
        if message.chat_ts and (message.chat_files_posted or not await _has_files(message)):
            return
        conversation = threaded(message)
        files = POST_INBOUND.payload_of(job).files
        attachments = await _attachments(message) if files else ()
        new_thread = conversation.chat_thread_ts is None
        # Whether this message opened the thread: also on a retry after an earlier try opened
        # it and failed before the message was recorded as posted, so the hooks below never
        # ran for it (they start what a new thread starts: waiting checks, timers, a turn).
        opened = new_thread or (retrying and await _opened_by(message))
        reading: Triage | None = None
        if new_thread:
            await self._open_thread(
                conversation, message, inbound_of(message, attachments), retrying
            )
        elif not message.is_automated:
            if not opened:
                reading = await self._read_follow_up(conversation, message, attachments)
            if self.vectors is not None:
                vector = reading.vector if reading else b""
                await self.vectors.remember(message, conversation, vector, retrying=retrying)
        assert conversation.chat_channel is not None
        assert conversation.chat_thread_ts is not None
        marker = f"message-{message.id}"
        ts = message.chat_ts
        if ts is None and retrying:
            ts = await self.chat.find_post(
                conversation.chat_channel, conversation.chat_thread_ts, marker
            )
        if ts is None:
            post = CustomerPost(
                message_id=message.id,
                sender_name=message.sender_name or message.sender_address,
                text=message.text,
                attachments=attachments,
                is_automated=message.is_automated,
                notice=message.automated_reason,
            )
            ts = await self.chat.post_in_thread(
                conversation.chat_channel, conversation.chat_thread_ts, post, marker=marker
            )
        message.chat_ts = ts
        await message.save(update_fields=["chat_ts"])
        if attachments and not message.chat_files_posted:
            # Files have no marker to look them up by; the flag is saved right after the upload,
            # so only a crash in that instant could upload them twice.
            await self.chat.upload_files(
                conversation.chat_channel, conversation.chat_thread_ts, attachments
            )
            message.chat_files_posted = True
            await message.save(update_fields=["chat_files_posted"])
        if self.after_post is not None:
            await self.after_post(conversation, message, opened, reading)

    async def _read_follow_up(
        self, conversation: Conversation, message: Message, attachments: tuple[Attachment, ...]
    ) -> Triage:
        """Triage a follow-up as a new message is; its vector serves the similar conversations.

        A mood read with confidence replaces the card's, with the number of the message it was
        read from ("anger, 3rd message"). What the reading means for the priority is the
        ``after_post`` hook's to decide (bot/escalation.py).
        """
        reading = await self.classifier.triage(inbound_of(message, attachments))
        if not reading.sentiment:
            return reading
        number = await customer_message_number(conversation.id, message.id)
        if (conversation.sentiment, conversation.sentiment_message) == (reading.sentiment, number):
            return reading  # a retry, or the same mood as the card shows
        conversation.sentiment = reading.sentiment[:16]
        conversation.sentiment_message = number
        async with in_transaction() as conn:
            await conversation.save(
                using_db=conn, update_fields=["sentiment", "sentiment_message", "updated_at"]
            )
            await REDRAW_CARD.enqueue(CardPayload(conversation.id), conn=conn)
        return reading

    async def _open_thread(
        self, conversation: Conversation, message: Message, first: InboundMessage, retrying: bool
    ) -> None:
        triage = await self.classifier.triage(first)
        skills = await stored_skills()
        skill, channel_name = route(triage.skill, self.settings, skills)
        chat_channel = await self.chat.channel_id(channel_name)
        conversation.skill = skill
        conversation.confidence = triage.confidence
        conversation.priority = triage.priority
        conversation.priority_reason = triage.priority_reason[:255]
        conversation.language = triage.language
        conversation.sentiment = triage.sentiment
        stored = b""  # the opening message's vector, once kept (automatic mail keeps none)
        if self.vectors is not None and not message.is_automated:
            await self.vectors.remember(message, conversation, triage.vector, retrying=retrying)
            stored = triage.vector
        marker = f"conversation-{conversation.id}"
        ts = await self.chat.find_post(chat_channel, None, marker) if retrying else None
        if ts is None:
            oncall = oncall_for(skill, triage.priority, self.settings)
            similar = await self.similar.summary(conversation, stored) if self.similar else None
            card = card_for(conversation, tuple(skills), oncall=oncall, similar=similar)
            ts = await self.chat.post_root(chat_channel, card, marker=marker)
        conversation.chat_channel = chat_channel
        conversation.chat_thread_ts = ts
        await conversation.save()
        await point_to_others(
            self.chat,
            conversation,
            marker=f"earlier-{conversation.id}",
            lead_in="This customer wrote before",
            retrying=retrying,
            earlier_only=True,
        )

    async def give_up(self, job: Job, reason: str) -> None:
        # Only what can never succeed ends here (Slack rejects the message itself); outages and
        # token or channel trouble park the job instead. The message stays stored.
        log.error("could not post message to Slack", extra={"job": job.id, "reason": reason})
        message = await _message_of(job, POST_INBOUND)
        if message is None or message.conversation is None:
            return
        conversation = message.conversation
        if not (conversation.chat_channel and conversation.chat_thread_ts):
            return
        try:
            await self.chat.post_notice(
                conversation.chat_channel,
                conversation.chat_thread_ts,
                f"A message from the customer could not be shown here ({reason}). It is "
                f"stored: `switchboard jobs list --state failed` shows it.",
            )
        except DeliveryError as exc:
            log.error("could not show a failed post in Slack", extra={"reason": exc.reason})


class ReplyGate(Protocol):
    """A channel's rule a reply must pass before it is sent (WhatsApp's 24-hour window)."""

    async def check(self, conversation: Conversation, message: Message) -> None:
        """Raise ``PermanentDeliveryError`` (with what to do instead) to stop the reply."""
        ...

    def closed_note(self, conversation: Conversation) -> str:
        """What to tell the thread when the channel itself refused the reply by this rule."""
        ...


class DeliverReply:
    """Sends an agent's reply through the channel the customer used, then shows the outcome.

    ``gates`` hold a channel's rules a reply must pass first; channels in ``reporting`` send
    delivery statuses later, so the id of each message a reply became is recorded.
    """

    def __init__(
        self,
        chat: ChatPort,
        senders: Mapping[ChannelKind, ReplySender],
        *,
        gates: Mapping[ChannelKind, ReplyGate] | None = None,
        reporting: frozenset[ChannelKind] = frozenset(),
        after_send: Callable[[Conversation, Message], Awaitable[None]] | None = None,
    ) -> None:
        self.chat = chat
        self.senders = senders
        self.gates = gates or {}
        self.reporting = reporting
        # Told once a reply is sent (again on a retry): it meets the conversation's deadline,
        # and its waiting time is stored for the reports.
        self.after_send = after_send

    async def run(self, job: Job) -> None:
        message = await _message_of(job, DELIVER_REPLY)
        if message is None or message.delivery_state is DeliveryState.CANCELLED:
            return
        conversation = threaded(message)
        if message.template is not None and message.chat_ts is None:
            await self._show_template(message, conversation, job.attempts > 1)
        if message.delivery_state is not DeliveryState.SENT:
            gate = self.gates.get(conversation.channel)
            if gate is not None:
                await gate.check(conversation, message)
            reply = await outbound_reply(message, conversation)
            sender = self.senders.get(conversation.channel)
            if sender is None:
                raise PermanentDeliveryError(
                    f"replies over {conversation.channel.value} are not set up on this service"
                )
            try:
                message.external_id = await sender.send(reply)
            except WindowClosed as exc:
                # The channel's clock said so before ours did: say what to do instead.
                raise WindowClosed(gate.closed_note(conversation) if gate else exc.reason) from exc
            message.delivery_state = DeliveryState.SENT
            message.delivery_error = ""
            await message.save(update_fields=["external_id", "delivery_state", "delivery_error"])
            if conversation.channel in self.reporting:
                await record_parts(message, conversation.channel, message.external_id)
            MESSAGES_OUT.labels(conversation.channel.value, "sent").inc()
        if self.after_send is not None:
            await self.after_send(conversation, message)
        if conversation.chat_channel and message.chat_ts:
            await self.chat.show_delivery(
                conversation.chat_channel, message.chat_ts, DeliveryState.SENT
            )

    async def _show_template(
        self, message: Message, conversation: Conversation, retrying: bool
    ) -> None:
        """Show a template sent by command in the thread: its statuses go on this post."""
        if not (conversation.chat_channel and conversation.chat_thread_ts):
            return
        marker = f"message-{message.id}"
        ts = None
        if retrying:
            ts = await self.chat.find_post(
                conversation.chat_channel, conversation.chat_thread_ts, marker
            )
        if ts is None:
            ts = await self.chat.post_notice(
                conversation.chat_channel,
                conversation.chat_thread_ts,
                f"{message.sender_name} sends a WhatsApp template: “{message.text}”",
                marker=marker,
            )
        message.chat_ts = ts
        await message.save(update_fields=["chat_ts"])

    async def give_up(self, job: Job, reason: str) -> None:
        message = await _message_of(job, DELIVER_REPLY)
        if message is None:
            return
        message.delivery_state = DeliveryState.FAILED
        message.delivery_error = reason
        await message.save(update_fields=["delivery_state", "delivery_error"])
        conversation = threaded(message)
        MESSAGES_OUT.labels(conversation.channel.value, "failed").inc()
        if not (conversation.chat_channel and conversation.chat_thread_ts and message.chat_ts):
            return
        try:
            await self.chat.show_delivery(
                conversation.chat_channel, message.chat_ts, DeliveryState.FAILED
            )
            await self.chat.post_notice(
                conversation.chat_channel,
                conversation.chat_thread_ts,
                f"The reply above was not delivered: {reason}",
            )
        except DeliveryError as exc:
            log.error("could not show a failed delivery in Slack", extra={"reason": exc.reason})


async def _opened_by(message: Message) -> bool:
    """Whether ``message`` is the first of its conversation, the one its thread opened with."""
    return not await Message.filter(
        conversation_id=message.conversation_id,  # type: ignore[attr-defined]
        direction=Direction.INBOUND,
        id__lt=message.id,
    ).exists()


_LATEST_RECEIVED = Prepared(
    lambda conversation_id: (
        Message.filter(conversation_id=conversation_id, direction=Direction.INBOUND)
        .order_by("-id")
        .first()
    ),
    1,
)
_ANY_FROM_A_PERSON = Prepared(
    lambda conversation_id: Message.filter(
        conversation_id=conversation_id, direction=Direction.INBOUND, is_automated=False
    ).exists(),
    1,
)


async def outbound_reply(message: Message, conversation: Conversation) -> OutboundReply:
    """``message`` (a stored reply) as its channel's adapter sends it, threaded."""
    latest = await _LATEST_RECEIVED(conversation.id)
    if latest is not None and not await _ANY_FROM_A_PERSON(conversation.id):
        raise DeliveryRefused(
            "this conversation holds only automatic mail (auto-replies or bounces), and "
            "answering those can start a mail loop"
        )
    replies_to: tuple[str, ...] = ()
    if latest is not None and latest.external_id:
        replies_to = (latest.external_id, *latest.replies_to)
    identity = conversation.identity
    return OutboundReply(
        reply_id=message.id,
        conversation_token=conversation.token,
        channel=conversation.channel,
        to_address=identity.address,
        to_name=identity.display_name,
        agent_name=message.sender_name,
        text=message.text,
        subject=conversation.subject,
        replies_to=tuple(dict.fromkeys(replies_to)),
        thread_key=conversation.thread_key,
        attachments=await _attachments(message),
        template=template_of(message),
    )

"""WhatsApp's rules, in the core: the 24-hour customer-service window, templates, statuses.

WhatsApp lets a business answer freely for 24 hours after the customer's last message; after
that only a template approved in WhatsApp Manager may go out. A reply written after the window
closed is not sent and not dropped: it stays in the thread, marked failed, with a note naming
the templates and how to send one (``/switchboard template <conversation> <name>``).

Delivery statuses (sent, delivered, read, failed) arrive by webhook and are stored as jobs; each
moves its reply's state forward only, so a repeated or late status changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.errors import ActionRefused, TransientDeliveryError, WindowClosed
from bot.jobkinds import DELIVER_REPLY, SHOW_STATUS, MessagePayload, StatusPayload
from bot.jobs import Clock, enqueue_jobs, utcnow
from bot.ports import ChatPort
from bot.roles import Actor
from bot.settings import TemplateSettings, WhatsAppSettings
from bot.shapes import ChannelKind, DeliveryReport, DeliveryState, TemplateMessage
from models import AuditEntry, Conversation, Direction, Job, Message, SentPart

log = logging.getLogger(__name__)

#: How long after the customer's last message a free-form reply may go out.
WINDOW = timedelta(hours=24)
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
# How far a status moves a reply on; failed is final.
_RANK = {
    DeliveryState.PENDING: 0,
    DeliveryState.SENT: 1,
    DeliveryState.DELIVERED: 2,
    DeliveryState.READ: 3,
    DeliveryState.FAILED: 4,
}
# A status can come before the send that caused it is recorded: it waits this many tries.
_UNKNOWN_TRIES = 5


def window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    """Whether a free-form message may still go to the customer."""
    return last_inbound_at is not None and now - last_inbound_at < WINDOW


def template_values(conversation: Conversation, agent_name: str) -> dict[str, str]:
    """What a template parameter can be filled from (``settings.TEMPLATE_SOURCES``)."""
    identity = conversation.identity
    return {
        "customer_name": identity.display_name or identity.address,
        "conversation": short_id(conversation),
        "subject": conversation.subject or "your request",
        "agent_name": agent_name or "Support",
    }


def fill(template: TemplateSettings, values: dict[str, str]) -> TemplateMessage:
    """``template`` with each parameter taken from ``values``."""
    return TemplateMessage(
        template.name, template.language, tuple(values[source] for source in template.parameters)
    )


def preview(template: TemplateSettings, message: TemplateMessage) -> str:
    """The template's text as the customer will read it (its name if no text is configured)."""
    if not template.text:
        shown = ", ".join(message.parameters)
        return f"[template {template.name}{': ' + shown if shown else ''}]"

    def parameter(match: re.Match[str]) -> str:
        index = int(match.group(1)) - 1
        return message.parameters[index] if 0 <= index < len(message.parameters) else ""

    return _PLACEHOLDER.sub(parameter, template.text)


def template_list(templates: Sequence[TemplateSettings]) -> str:
    """The configured templates, one line each, as agents see them."""
    if not templates:
        return (
            "No WhatsApp templates are configured: an admin adds the approved ones as "
            "[[whatsapp.templates]] in the settings."
        )
    lines = ["*WhatsApp templates* (approved in WhatsApp Manager):"]
    for template in templates:
        sources = ", ".join(template.parameters) or "no parameters"
        text = f": “{template.text}”" if template.text else ""
        lines.append(f"• `{template.name}` ({template.language}; {sources}){text}")
    return "\n".join(lines)


def window_closed_note(
    conversation: Conversation, templates: Sequence[TemplateSettings], command: str
) -> str:
    """What the thread says when a reply cannot go out because the window closed."""
    sid = short_id(conversation)
    names = ", ".join(f"`{t.name}`" for t in templates)
    if names:
        offer = (
            f"Send an approved template instead: `{command} template {sid} <name>` "
            f"({names}; `{command} templates` shows them)."
        )
    else:
        offer = (
            "No templates are configured to reach them now: an admin adds the approved ones as "
            "[[whatsapp.templates]]; otherwise wait until the customer writes again."
        )
    return (
        "WhatsApp's 24-hour window closed: the customer last wrote more than 24 hours ago, "
        "and WhatsApp now accepts only approved templates. This reply was not sent (it stays "
        f"here). {offer}"
    )


class ReplyWindow:
    """Checks a WhatsApp reply against the window before ``DeliverReply`` sends it."""

    def __init__(self, settings: WhatsAppSettings, command: str, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.command = command
        self.clock = clock

    async def check(self, conversation: Conversation, message: Message) -> None:
        """Raise ``WindowClosed`` for a free-form reply outside the window."""
        if message.template is not None:
            return
        if window_open(conversation.last_inbound_at, self.clock()):
            return
        raise WindowClosed(window_closed_note(conversation, self.settings.templates, self.command))

    def closed_note(self, conversation: Conversation) -> str:
        """The note for a reply WhatsApp itself refused as outside the window (131047)."""
        return window_closed_note(conversation, self.settings.templates, self.command)


class Templates:
    """Lists the configured templates and queues one for a conversation."""

    def __init__(
        self,
        settings: WhatsAppSettings,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_queued = on_queued

    def listing(self) -> str:
        return template_list(self.settings.templates)

    async def send(self, actor: Actor, conversation: Conversation, name: str) -> str:
        """Queue template ``name`` to the customer of ``conversation``; returns the answer."""
        sid = short_id(conversation)
        if conversation.channel is not ChannelKind.WHATSAPP:
            raise ActionRefused(
                f"Conversation `{sid}` is on {conversation.channel.value}, not WhatsApp: "
                "templates are for WhatsApp; answer in its thread instead."
            )
        template = self.settings.template(name)
        if template is None:
            known = ", ".join(f"`{t.name}`" for t in self.settings.templates) or "none"
            raise ActionRefused(
                f"There is no template `{name}` (configured: {known}). Nothing was sent."
            )
        await conversation.fetch_related("identity")
        message = fill(template, template_values(conversation, actor.label))
        text = preview(template, message)
        async with in_transaction() as conn:
            stored = await Message.create(
                conversation=conversation,
                direction=Direction.OUTBOUND,
                channel=conversation.channel,
                sender_name=actor.label[:255],
                author_id=actor.user_id,
                text=text,
                full_text=text,
                template=asdict(message),
                delivery_state=DeliveryState.PENDING,
                using_db=conn,
            )
            await AuditEntry.create(
                conversation=conversation,
                actor_id=actor.user_id,
                actor_name=actor.label[:255],
                action="template",
                detail={"template": name, "message_id": stored.id},
                summary=f"{actor.label} sent the WhatsApp template `{name}`.",
                using_db=conn,
            )
            await DELIVER_REPLY.enqueue(
                MessagePayload(stored.id, conversation.id), now=self.clock(), conn=conn
            )
        if self.on_queued is not None:
            self.on_queued()
        return f"Sending the template `{name}` in conversation `{sid}`: “{text}”"


def template_of(message: Message) -> TemplateMessage | None:
    """The template a stored outbound message carries, if it is one."""
    data = message.template
    if not data:
        return None
    parameters = data.get("parameters") or []
    return TemplateMessage(
        str(data.get("name", "")),
        str(data.get("language", "")),
        tuple(str(p) for p in parameters) if isinstance(parameters, list | tuple) else (),
    )


async def record_parts(message: Message, channel: ChannelKind, external_ids: str) -> None:
    """Remember each message id a send produced, so its statuses find the reply."""
    ids = [part for part in external_ids.split(",") if part]
    rows = await SentPart.filter(channel=channel, external_id__in=ids).values("external_id")
    existing = {str(row["external_id"]) for row in rows}
    await SentPart.bulk_create(
        [
            SentPart(message_id=message.id, channel=channel, external_id=part[:255])
            for part in ids
            if part not in existing
        ]
    )


async def accept_reports(reports: Sequence[DeliveryReport], clock: Clock = utcnow) -> None:
    """Store delivery statuses as jobs (the webhook answers 200 after this)."""
    if not reports:
        return
    now = clock()
    async with in_transaction() as conn:
        await enqueue_jobs(
            [
                SHOW_STATUS.new(
                    StatusPayload(
                        r.channel.value, r.external_id, r.state.value, r.reason, r.window_closed
                    ),
                    run_at=now,
                )
                for r in reports
            ],
            conn,
        )


async def quoted_text(channel: ChannelKind, external_id: str) -> str | None:
    """The text of the message ``external_id`` names (either way), for a reply's context."""
    part = await SentPart.get_or_none(channel=channel, external_id=external_id).prefetch_related(
        "message"
    )
    if part is not None:
        return part.message.text
    found = await Message.filter(dedup_key=f"{channel.value}:{external_id}").first()
    return None if found is None else found.text


class ShowStatus:
    """Shows a delivery status on the agent's message: a reaction, and the reason if it failed."""

    def __init__(self, chat: ChatPort, window: ReplyWindow | None = None) -> None:
        self.chat = chat
        self.window = window

    async def run(self, job: Job) -> None:
        payload = SHOW_STATUS.payload_of(job)
        state = DeliveryState(payload.state)
        part = await SentPart.get_or_none(
            channel=ChannelKind(payload.channel), external_id=payload.external_id
        ).prefetch_related("message__conversation__identity")
        if part is None:
            if job.attempts < _UNKNOWN_TRIES:
                # The send that caused it may not be recorded yet.
                raise TransientDeliveryError("the status names a message not recorded yet")
            log.info("a status for a message we did not send", extra={"id": payload.external_id})
            return
        if _RANK[state] <= _RANK[part.state]:
            return
        part.state = state
        part.error = payload.reason
        await part.save(update_fields=["state", "error"])
        message = part.message
        rows = await SentPart.filter(message_id=message.id).values("state")
        # The reply as a whole: failed if a part failed, else as far as its slowest part.
        parts = [DeliveryState(str(row["state"])) for row in rows]
        shown = (
            DeliveryState.FAILED
            if DeliveryState.FAILED in parts
            else min(parts, key=lambda s: _RANK[s])
        )
        if message.delivery_state is shown:
            return
        message.delivery_state = shown
        if shown is DeliveryState.FAILED:
            message.delivery_error = payload.reason
        await message.save(update_fields=["delivery_state", "delivery_error"])
        conversation = message.conversation
        if conversation is None or not (conversation.chat_channel and message.chat_ts):
            return
        await self.chat.show_delivery(conversation.chat_channel, message.chat_ts, shown)
        if shown is DeliveryState.FAILED and conversation.chat_thread_ts:
            reason = payload.reason
            if payload.window_closed and self.window is not None:
                reason = self.window.closed_note(conversation)
            marker = f"status-{part.id}"
            if await self.chat.find_post(
                conversation.chat_channel, conversation.chat_thread_ts, marker
            ):
                return
            await self.chat.post_notice(
                conversation.chat_channel,
                conversation.chat_thread_ts,
                f"The reply above was not delivered: {reason}",
                marker=marker,
            )

    async def give_up(self, job: Job, reason: str) -> None:
        try:
            payload = SHOW_STATUS.payload_of(job)
        except TypeError:
            return
        log.warning(
            "could not show a delivery status",
            extra={"id": payload.external_id, "state": payload.state, "reason": reason},
        )

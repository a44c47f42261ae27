"""Value objects that cross between the adapters and the core.

Adapters translate foreign objects (an e-mail message, a Telegram update, a Slack payload) into
these shapes at their edge; nothing foreign is passed into ``bot/``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class ChannelKind(enum.StrEnum):
    """The way a customer reaches us; replies go back the same way."""

    EMAIL = "email"
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"
    WHATSAPP = "whatsapp"


class Priority(enum.StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class DeliveryState(enum.StrEnum):
    """What the agent sees on a reply they wrote in Slack."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Channels that report back (WhatsApp): the customer's phone has it, or they read it.
    DELIVERED = "delivered"
    READ = "read"


#: Delivery states of a reply that reached the customer (a channel that reports back moves a
#: sent reply on to delivered and read).
SENT_STATES = (DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.READ)


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message from a customer, as an adapter understood it.

    ``external_id`` is the dedup key (e-mail Message-ID, Telegram update id, webhook event id).
    ``thread_key`` names the conversation where the channel has one (Telegram chat id, webhook
    conversation id). ``replies_to`` lists the e-mail Message-IDs this message answers
    (In-Reply-To first, then References, newest first). ``conversation_token`` is the token
    found in our own reply address or Message-ID, if the customer answered one of our mails.
    """

    channel: ChannelKind
    external_id: str
    sender_address: str
    sender_name: str
    subject: str
    text: str
    full_text: str
    received_at: datetime
    attachments: tuple[Attachment, ...] = ()
    thread_key: str | None = None
    replies_to: tuple[str, ...] = ()
    conversation_token: str | None = None
    is_automated: bool = False
    automated_reason: str = ""
    raw: bytes = b""
    #: Addresses the sender gives as their own: ``(("phone", "+49..."), ("email", "a@b"))``.
    claims: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    """A pre-approved message (a WhatsApp template) with its parameters filled in."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SurveyInvite:
    """The satisfaction question: ``intro`` and one link per rating (1 to 5).

    The reply's ``text`` holds the whole question with the links, for channels of plain text
    (e-mail); a channel with buttons shows ``intro`` and a button per link.
    """

    intro: str
    links: tuple[tuple[int, str], ...]


@dataclass(frozen=True, slots=True)
class OutboundReply:
    """An agent's reply, ready for the adapter of the conversation's channel."""

    reply_id: int
    conversation_token: str
    channel: ChannelKind
    to_address: str
    to_name: str
    agent_name: str
    text: str
    subject: str
    replies_to: tuple[str, ...] = ()
    thread_key: str | None = None
    attachments: tuple[Attachment, ...] = ()
    #: Sent instead of ``text`` where the channel allows only templates (WhatsApp's window).
    template: TemplateMessage | None = None
    #: A satisfaction survey rather than an agent's answer (bot/survey.py).
    survey: SurveyInvite | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What a channel reported about a message we sent (a WhatsApp status webhook).

    ``reason`` says why it failed, in words for agents; ``window_closed`` marks a failure
    because the customer-service window had closed.
    """

    channel: ChannelKind
    external_id: str
    state: DeliveryState
    reason: str = ""
    window_closed: bool = False


#: The skill of a message triage is not sure about: it goes to the triage channel.
TRIAGE_SKILL = "triage"


@dataclass(frozen=True, slots=True)
class Triage:
    """The tags triage gives a message."""

    skill: str
    confidence: float
    priority: Priority = Priority.NORMAL
    priority_reason: str = ""
    language: str = ""
    sentiment: str = ""
    #: Which of the customer's messages the sentiment was read from, when a follow-up's (2 for
    #: the first follow-up); 0 for the message triaged.
    sentiment_message: int = 0
    #: The message's embedding (float32 bytes) when the classifier computed one: stored once
    #: for similar conversations and suggestions, so nothing encodes the message again.
    vector: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ConversationCard:
    """What the root message of a conversation shows in Slack."""

    short_id: str
    channel: ChannelKind
    customer_name: str
    customer_address: str
    subject: str
    triage: Triage
    status: str = "open"
    owner: str = ""
    snoozed_until: datetime | None = None
    #: The skills a lead can pick on the card.
    skills: tuple[str, ...] = ()
    #: Set on the old root of a moved conversation: where it went (a link).
    moved_to: str = ""
    #: The user group to alert (``S…`` id): the skill's on-call group while it is urgent.
    oncall: str = ""
    #: What is due and when (bot/deadlines.py), most pressing first.
    deadlines: tuple[DeadlineView, ...] = ()
    #: Tags rules added (bot/rules.py).
    tags: tuple[str, ...] = ()
    #: Similar conversations: open now, and closed within a week (bot/similar.py).
    similar_open: int = 0
    similar_closed: int = 0
    #: The known problem this conversation (or the most similar linked one) is about.
    known_problem: str = ""


@dataclass(frozen=True, slots=True)
class CustomerPost:
    """A customer's message as it is shown in a conversation thread."""

    message_id: int
    sender_name: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    is_automated: bool = False
    notice: str = ""


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """A message someone wrote in a conversation thread in Slack."""

    chat_channel: str
    thread_ts: str
    ts: str
    user_id: str
    text: str
    user_name: str = ""
    is_bot: bool = False
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class ThreadErasure:
    """What erasing a Slack thread changed, and what it had to leave.

    ``replaced``: our posts now showing the note; ``files_deleted``: files we had uploaded;
    ``left``: messages people wrote, which a bot token cannot change.
    """

    replaced: int = 0
    files_deleted: int = 0
    left: int = 0

    def __add__(self, other: ThreadErasure) -> ThreadErasure:
        return ThreadErasure(
            self.replaced + other.replaced,
            self.files_deleted + other.files_deleted,
            self.left + other.left,
        )


class DeadlineState(enum.StrEnum):
    """How close a deadline is: the card's colour."""

    RUNNING = "running"
    WARNING = "warning"
    OVERDUE = "overdue"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class DeadlineView:
    """One deadline as the card shows it: "first reply due in 3 h 20 min", "overdue by 40 min".

    ``left`` is working time (negative: overdue by that much); ``due_at`` is None while the
    clock is paused.
    """

    label: str
    state: DeadlineState
    left: timedelta
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SpikeExample:
    """One message of a spike as its alert shows it: a link to it and its first words."""

    short_id: str
    excerpt: str
    link: str


@dataclass(frozen=True, slots=True)
class SpikeAlert:
    """The leads' alert of a spike (bot/spikes.py): how many, examples, where they came in."""

    spike_id: int
    count: int
    window_minutes: int
    #: How many the window would hold at the topic's usual share of all messages.
    usual: float
    examples: tuple[SpikeExample, ...]
    #: (skill, messages) and (channel, messages), most first.
    skills: tuple[tuple[str, int], ...]
    channels: tuple[tuple[ChannelKind, int], ...]
    #: The Slack channels (ids) the spike's conversations are in.
    chat_channels: tuple[str, ...] = ()

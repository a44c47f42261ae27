"""The catalogue of job kinds: each defined once, with its payload and serial key.

Handlers live beside the work they do (bot/intake.py, bot/pipeline.py, ...); the composition
root (adapters/service.py) gives each kind its handler. Serial keys decide what runs in order:
one sender's messages are threaded in order, one conversation's posts and changes are shown in
order, its replies are sent in order. ``conversation_id`` in a payload is stored on the job's
row too, so forgetting a conversation deletes its jobs by that column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.jobs import JobKind
from bot.shapes import ChannelKind


@dataclass(frozen=True, slots=True)
class ThreadPayload:
    """A stored inbound message to put in its conversation; ``sender`` is ``sender_of``'s."""

    message_id: int
    sender: str = ""
    #: False when the message came without attachments: posting it need not look for any.
    files: bool = True


def sender_of(channel: ChannelKind, address: str) -> str:
    """How a threading job names its sender: one sender's messages are threaded in order."""
    return f"{channel.value}:{address}"


def sender_key(channel: ChannelKind, address: str) -> str:
    """The stored serial key of a sender's threading jobs (their message ids aside)."""
    return THREAD_INBOUND.stored_key(ThreadPayload(0, sender_of(channel, address)))


@dataclass(frozen=True, slots=True)
class MessagePayload:
    """A message of a conversation: a customer's to post, or an agent's reply to deliver."""

    message_id: int
    conversation_id: int
    #: False when a customer's message came without attachments (``ThreadPayload.files``).
    files: bool = True


@dataclass(frozen=True, slots=True)
class ChangePayload:
    """A change a person made (an audit entry) to show in the conversation's thread."""

    audit_id: int
    conversation_id: int


@dataclass(frozen=True, slots=True)
class MovePayload:
    """A lead's reassignment: move the conversation's thread to ``skill``'s channel."""

    audit_id: int
    conversation_id: int
    skill: str


@dataclass(frozen=True, slots=True)
class WakePayload:
    """The end of a snooze (``until``, ISO 8601)."""

    conversation_id: int
    until: str


@dataclass(frozen=True, slots=True)
class WaitingPayload:
    """A check whether the customer still waits since ``message_id``."""

    conversation_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class ErasePayload:
    """A Slack thread of a forgotten customer, to replace with ``note``."""

    chat_channel: str
    thread_ts: str
    note: str


@dataclass(frozen=True, slots=True)
class CardPayload:
    """A conversation whose root card shows something new (a deadline started or was met)."""

    conversation_id: int


@dataclass(frozen=True, slots=True)
class SurveyPayload:
    """A closed conversation whose customer may be asked for a rating."""

    conversation_id: int


@dataclass(frozen=True, slots=True)
class RatingPayload:
    """A customer's rating (its audit entry) to show in the conversation's thread."""

    audit_id: int
    conversation_id: int


@dataclass(frozen=True, slots=True)
class SlaCheckPayload:
    """A look at a conversation's deadlines when the next of them reaches a threshold."""

    conversation_id: int


@dataclass(frozen=True, slots=True)
class AlertPayload:
    """Our own text for a person (``to`` is a user id: a direct message) or a channel."""

    conversation_id: int
    to: str
    text: str
    marker: str


@dataclass(frozen=True, slots=True)
class RulesPayload:
    """An event of a conversation for the rules; ``key`` names it (a message, an audit entry).

    ``rule`` narrows it to one rule (a rule's own timer, like "unassigned for 30 minutes").
    """

    conversation_id: int
    event: str
    key: str
    rule: str = ""


@dataclass(frozen=True, slots=True)
class WebhookCallPayload:
    """A signed POST of ``body`` to an outgoing webhook; ``body`` carries its event id."""

    conversation_id: int
    webhook: str
    body: dict[str, object]


@dataclass(frozen=True, slots=True)
class NoPayload:
    """A job that needs nothing but its kind."""


def conversation_key(
    payload: MessagePayload | ChangePayload | MovePayload | CardPayload | RatingPayload,
) -> str:
    """The key of what is shown in a conversation's thread: its posts, changes and moves."""
    return f"conversation:{payload.conversation_id}"


THREAD_INBOUND = JobKind(
    "thread_inbound", ThreadPayload, lambda p: f"sender:{p.sender}", may_park=True
)
POST_INBOUND = JobKind("post_inbound", MessagePayload, conversation_key, may_park=True)
DELIVER_REPLY = JobKind(
    "deliver_reply", MessagePayload, lambda p: f"replies:{p.conversation_id}", may_park=True
)
SHOW_CHANGE = JobKind("show_change", ChangePayload, conversation_key)
MOVE_CONVERSATION = JobKind("move_conversation", MovePayload, conversation_key, may_park=True)
# Not the conversation's key: a wake-up or a check due in hours must not hold up its messages.
WAKE_SNOOZED = JobKind("wake_snoozed", WakePayload, lambda p: f"snooze:{p.conversation_id}")
CHECK_WAITING = JobKind("check_waiting", WaitingPayload, lambda p: f"waiting:{p.conversation_id}")
# A forgotten customer's erasure must not fail for a wrong token either: it parks.
ERASE_THREAD = JobKind(
    "erase_thread", ErasePayload, lambda p: f"erase:{p.chat_channel}:{p.thread_ts}", may_park=True
)
PURGE_CLOSED = JobKind("purge_closed", NoPayload, lambda p: "retention")
REDRAW_CARD = JobKind("redraw_card", CardPayload, conversation_key)
# Its own key, like the waiting checks: due in hours, it must not hold up the messages.
SLA_CHECK = JobKind("sla_check", SlaCheckPayload, lambda p: f"sla:{p.conversation_id}")
POST_ALERT = JobKind("post_alert", AlertPayload, lambda p: f"alert:{p.marker}")
ASSIGN_FAIRLY = JobKind("assign_fairly", CardPayload, lambda p: f"assign:{p.conversation_id}")
# A rule's own timer ("unassigned for 30 minutes") has a key of its own: due later, it must
# not hold up the conversation's other events.
RUN_RULES = JobKind(
    "run_rules",
    RulesPayload,
    lambda p: f"rules:{p.conversation_id}" + (f":{p.rule}" if p.rule else ""),
)
# Its own key: due minutes after the close, it must not hold up the conversation's messages.
ASK_SURVEY = JobKind("ask_survey", SurveyPayload, lambda p: f"survey:{p.conversation_id}")
SHOW_RATING = JobKind("show_rating", RatingPayload, conversation_key)
CALL_WEBHOOK = JobKind("call_webhook", WebhookCallPayload, lambda p: f"webhook:{p.webhook}")


@dataclass(frozen=True, slots=True)
class StatusPayload:
    """A status a channel reported for a message we sent (``bot.shapes.DeliveryReport``)."""

    channel: str
    external_id: str
    state: str
    reason: str = ""
    window_closed: bool = False


@dataclass(frozen=True, slots=True)
class OthersPayload:
    """A thread to point to its customer's other threads, after link ``link_id``."""

    conversation_id: int
    link_id: int


@dataclass(frozen=True, slots=True)
class SpikeCheckPayload:
    """A customer's message just shown: is its topic far above its usual rate?"""

    conversation_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class SpikePayload:
    """A spike found: post its one alert to the leads."""

    spike_id: int


# One key for every check: checks run one at a time across replicas, so two messages of one
# burst cannot both open a spike.
CHECK_SPIKE = JobKind("check_spike", SpikeCheckPayload, lambda p: "spikes")
POST_SPIKE = JobKind("post_spike", SpikePayload, lambda p: f"spike:{p.spike_id}")

SHOW_OTHERS = JobKind("show_others", OthersPayload, lambda p: f"conversation:{p.conversation_id}")

# A status only moves its reply's state forward, so repeats and any order are harmless.
SHOW_STATUS = JobKind("show_status", StatusPayload, lambda p: f"status:{p.external_id}")

#: Every kind of job, by name.
CATALOGUE: dict[str, JobKind[Any]] = {
    kind.name: kind
    for kind in (
        THREAD_INBOUND,
        POST_INBOUND,
        DELIVER_REPLY,
        SHOW_CHANGE,
        MOVE_CONVERSATION,
        WAKE_SNOOZED,
        CHECK_WAITING,
        ERASE_THREAD,
        PURGE_CLOSED,
        SHOW_STATUS,
        SHOW_OTHERS,
        REDRAW_CARD,
        SLA_CHECK,
        POST_ALERT,
        RUN_RULES,
        CALL_WEBHOOK,
        ASSIGN_FAIRLY,
        ASK_SURVEY,
        SHOW_RATING,
        CHECK_SPIKE,
        POST_SPIKE,
    )
}

"""A customer left waiting gets louder: the follow-up and waiting-time rules, applied live.

The customer's messages since the last agent reply are their unanswered streak. Each message
of a streak is checked against the rules (``[triage.priority]`` follow_ups_to_raise,
waiting_hours_*): the first one schedules two checks, due when the waiting rules would apply,
so a customer who writes nothing more is raised too. A check finding the customer answered, the
conversation closed, or a newer streak, does nothing.

The rules only ever raise, and they raise from the conversation's own level: its triage, or a
lead's choice. A lead's choice counts as a look at the conversation: it may still be raised,
but only for follow-ups and waiting after it, so lowering a conversation is not undone by what
the lead had already seen. A raise is shown as a lead's change is (``Workflow.raise_priority``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from bot.database import Prepared
from bot.jobkinds import CHECK_WAITING, WaitingPayload
from bot.jobs import Clock, NewJob, cancel_about, enqueue_jobs, start_queue, utcnow
from bot.settings import PriorityRules
from bot.shapes import DeliveryState, Priority, Triage
from bot.triage.priority import escalate, outranks
from bot.workflow import Workflow
from models import AuditEntry, Conversation, ConversationStatus, Direction, Job, Message

log = logging.getLogger(__name__)


class Escalation:
    """Raises the priority of conversations whose customer is still waiting for an answer."""

    def __init__(
        self,
        workflow: Workflow,
        rules: PriorityRules,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.workflow = workflow
        self.rules = rules
        self.clock = clock

    async def thread_opened(self, conversation_id: int, message_id: int) -> None:
        """A customer's message has opened its conversation's thread: it begins the streak.

        No check of the conversation can exist yet (checks follow posts), so the two are the
        first jobs of their key: one statement, no cancelling, no lock.
        """
        await start_queue(self._checks(conversation_id, message_id))

    async def customer_wrote(
        self, conversation: Conversation, message: Message, reading: Triage | None = None
    ) -> None:
        """A customer's follow-up is in its thread: schedule the waiting checks, or apply rules.

        ``conversation`` is read fresh by the caller. ``reading`` is triage's reading of the
        message: when it is pressing (high or urgent: an outage, blocked work, an angry
        customer...) and above the conversation's priority, it raises the conversation too.
        """
        if message.is_automated:
            return
        read = _pressing(reading)
        streak = await _unanswered(conversation.id)
        if streak is not None and streak.length > 1:
            await self._apply(conversation, streak, read)
            return
        if streak is not None:
            await self._schedule(conversation.id, streak.first_id)
        if read and outranks(read[0], conversation.priority):
            await self.workflow.raise_priority(conversation, *read)

    async def check(self, conversation_id: int, first_message_id: int) -> None:
        """Apply the rules if the streak that began with ``first_message_id`` is unanswered."""
        conversation = await Conversation.get_or_none(id=conversation_id)
        if conversation is None or conversation.status is ConversationStatus.CLOSED:
            return
        streak = await _unanswered(conversation.id)
        if streak is None or streak.first_id != first_message_id:
            return  # answered, or a newer streak has checks of its own
        await self._apply(conversation, streak)

    async def _apply(
        self,
        conversation: Conversation,
        streak: _Streak,
        read: tuple[Priority, str] | None = None,
    ) -> None:
        waited = self.clock() - streak.first_at
        priority, reason = escalate(
            _base_priority(conversation, streak.changes),
            follow_ups=streak.length - 1,
            waiting_hours=max(waited.total_seconds() / 3600, 0.0),
            rules=self.rules,
        )
        if read and outranks(read[0], priority):
            priority, reason = read
        if outranks(priority, conversation.priority):
            await self.workflow.raise_priority(conversation, priority, reason)

    async def _schedule(self, conversation_id: int, first_message_id: int) -> None:
        async with in_transaction() as conn:
            # The checks of an earlier streak are moot (it was answered) and would hold these up.
            await cancel_about(CHECK_WAITING, conversation_id, conn)
            await enqueue_jobs(self._checks(conversation_id, first_message_id), conn)

    def _checks(self, conversation_id: int, first_message_id: int) -> list[NewJob]:
        """The two checks of a streak, due when the waiting rules would raise it."""
        now = self.clock()
        payload = WaitingPayload(conversation_id, first_message_id)
        hours = (self.rules.waiting_hours_high, self.rules.waiting_hours_urgent)
        return [CHECK_WAITING.new(payload, run_at=now + timedelta(hours=h)) for h in hours]


def _pressing(reading: Triage | None) -> tuple[Priority, str] | None:
    """A follow-up's reading as a raise (its priority and reason), when it is high or urgent.

    A plainer reading raises nothing: a lead who lowered the conversation has seen it.
    """
    if reading is None or not outranks(reading.priority, Priority.NORMAL):
        return None
    why = reading.priority_reason.partition(": ")[2] or reading.priority_reason
    return reading.priority, f"{reading.priority.value}: {why or 'pressing'} in a follow-up"


@dataclass(frozen=True, slots=True)
class _Streak:
    """The customer's unanswered messages: the first one's id and time, and how many; and the
    conversation's priority changes, which the rules raise from."""

    first_id: int
    first_at: datetime
    length: int
    changes: _PriorityChanges


@dataclass(frozen=True, slots=True)
class _PriorityChanges:
    """The last lead's priority choice, and the rules' first raise after it (audit entries)."""

    lead_choice_at: datetime | None
    #: The level the first raise since the lead's choice started from; None: no raise since.
    raised_from: str | None


# Both run after every customer message: their SQL built once.
_PRIORITY_CHANGES = Prepared(
    lambda conversation_id: (
        AuditEntry.filter(conversation_id=conversation_id, action="priority")
        .order_by("id")
        .values_list("actor_id", "created_at", "detail")
    ),
    1,
)
_LAST_REPLY = Prepared(
    lambda conversation_id: (
        Message.filter(conversation_id=conversation_id, direction=Direction.OUTBOUND)
        .exclude(delivery_state=DeliveryState.CANCELLED)
        .order_by("-id")
        .limit(1)
        .values_list("id", flat=True)
    ),
    1,
)


async def _priority_changes(conversation_id: int) -> _PriorityChanges:
    """One read of the conversation's priority changes (a handful at most) serves both."""
    rows = await _PRIORITY_CHANGES(conversation_id)
    choice_at: datetime | None = None
    raised_from: str | None = None
    for actor_id, created_at, detail in rows:
        if actor_id:  # a lead's choice: raises before it no longer count
            choice_at, raised_from = created_at, None
        elif raised_from is None and isinstance(detail, dict):
            raised_from = str(detail["from"])
    return _PriorityChanges(choice_at, raised_from)


async def _unanswered(conversation_id: int) -> _Streak | None:
    """The customer's messages since the last agent reply and the last lead's priority choice."""
    since: dict[str, object] = {}
    reply = await _LAST_REPLY(conversation_id)
    if reply:
        since["id__gt"] = reply[0]
    changes = await _priority_changes(conversation_id)
    if changes.lead_choice_at is not None:
        since["created_at__gt"] = changes.lead_choice_at
    streak = (
        await Message.filter(
            conversation_id=conversation_id,
            direction=Direction.INBOUND,
            is_automated=False,
            chat_ts__isnull=False,
            **since,
        )
        .order_by("id")
        .values_list("id", "created_at")
    )
    if not streak:
        return None
    first_id, first_at = streak[0]
    return _Streak(int(first_id), first_at, len(streak), changes)


def _base_priority(conversation: Conversation, changes: _PriorityChanges) -> Priority:
    """The level the rules raise from: before their own raises since the last lead's choice."""
    if changes.raised_from is None:
        return conversation.priority
    return Priority(changes.raised_from)


class CheckWaiting:
    """Job: raise a conversation whose customer has waited since the streak began."""

    def __init__(self, escalation: Escalation) -> None:
        self.escalation = escalation

    async def run(self, job: Job) -> None:
        payload = CHECK_WAITING.payload_of(job)
        await self.escalation.check(payload.conversation_id, payload.message_id)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not check a waiting customer", extra={"job": job.id, "reason": reason})

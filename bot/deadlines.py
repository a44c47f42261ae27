"""Deadlines in business time: first reply, next reply and resolution, with alerts that act.

A conversation has up to three clocks (``models.SlaClock``), each counting working time of its
team (``[sla]`` and ``[[sla.teams]]``: bot/businesstime.py) against the target of its skill and
priority (``[[sla.policies]]``, else ``DEFAULT_SLA_TARGETS``):

- **first reply** runs from the customer's first message until an agent's reply is sent;
- **next reply** runs from the customer's first unanswered message after that, until the next
  reply is sent; a customer who writes again after an answer starts it again;
- **resolution** runs while the conversation is open and the customer waits on the team.

**Waiting on the customer** pauses the clocks: a snoozed conversation (a lead's "pending: wake
me then, or when the customer writes") pauses all of them; a sent reply (the team's question or
answer: the customer has the next word) pauses resolution. The customer writing again resumes
them. Closing a conversation ends its clocks; a reopened one starts new ones when the customer
waits again.

``reconcile`` is the one place that makes the clocks match the conversation: it runs inside the
transaction of every change a person makes (bot/workflow.py), after a customer's message is in
its thread, and after a reply is sent. It keeps one ``sla_check`` job per conversation, due at
the next threshold: the warning (``warning_percent`` of the target used) or the breach. That job
records the alert (an audit entry, shown in the thread with the redrawn card) and queues the
messages to the owner, the leads' channel and the on-call group, in one transaction that holds
the job's claim, so each alert goes out once across replicas and restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot.businesstime import BusinessHours, format_working
from bot.conversations import customer_waiting_since, short_id
from bot.jobkinds import (
    POST_ALERT,
    REDRAW_CARD,
    RUN_RULES,
    SHOW_CHANGE,
    SLA_CHECK,
    AlertPayload,
    CardPayload,
    ChangePayload,
    RulesPayload,
    SlaCheckPayload,
)
from bot.jobs import Clock, cancel_about, hold_claim, utcnow
from bot.ports import ChatPort
from bot.settings import Settings, SlaTargets
from bot.shapes import SENT_STATES, ConversationCard, DeadlineState, DeadlineView
from models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Direction,
    Job,
    Message,
    SlaClock,
)

log = logging.getLogger(__name__)

FIRST_RESPONSE = "first_response"
NEXT_RESPONSE = "next_response"
RESOLUTION = "resolution"
#: The clocks in the order the card shows them.
TARGETS = (FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION)
LABELS = {FIRST_RESPONSE: "first reply", NEXT_RESPONSE: "next reply", RESOLUTION: "resolution"}

WARNED = "warned"
BREACHED = "breached"


def _target_of(targets: SlaTargets, target: str) -> int:
    duration: timedelta = getattr(targets, target)
    return int(duration.total_seconds())


class Deadlines:
    """Starts, pauses, retargets and ends the clocks of conversations, and raises the alerts."""

    def __init__(
        self,
        chat: ChatPort,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.chat = chat
        self.settings = settings
        self.sla = settings.sla
        self.clock = clock
        self.on_queued = on_queued

    def left(self, clock: SlaClock, hours: BusinessHours, now: datetime) -> timedelta:
        """Working time left on ``clock`` at ``now`` (negative: overdue by that much)."""
        left = timedelta(seconds=clock.remaining_seconds)
        if clock.running_since is not None:
            left -= hours.working_time_between(clock.running_since, now)
        return left

    def _warning_left(self, clock: SlaClock) -> timedelta:
        """The time left when the warning is due."""
        return timedelta(seconds=clock.target_seconds * (100 - self.sla.warning_percent) / 100)

    async def views(self, conversation: Conversation) -> tuple[DeadlineView, ...]:
        """What the card shows: each clock, how much is left, and how close it is."""
        if not self.sla.enabled or conversation.status is ConversationStatus.CLOSED:
            return ()
        clocks = await SlaClock.filter(conversation_id=conversation.id)
        hours = self.sla.hours_for(conversation.skill)
        now = self.clock().astimezone(UTC)
        shown = []
        for clock in sorted(clocks, key=lambda c: TARGETS.index(c.target)):
            left = self.left(clock, hours, now)
            if clock.running_since is None:
                state = DeadlineState.PAUSED
            elif left <= timedelta():
                state = DeadlineState.OVERDUE
            elif left <= self._warning_left(clock):
                state = DeadlineState.WARNING
            else:
                state = DeadlineState.RUNNING
            shown.append(DeadlineView(LABELS[clock.target], state, left, clock.due_at))
        return tuple(shown)

    async def customer_wrote(self, conversation: Conversation, message: Message) -> None:
        """A customer's message is in its thread: start or resume the clocks."""
        if message.is_automated:
            return
        await self._reconcile_and_redraw(conversation)

    async def reply_sent(self, conversation: Conversation) -> None:
        """An agent's reply reached the customer: it meets the reply clock, pauses resolution."""
        await self._reconcile_and_redraw(conversation)

    async def _reconcile_and_redraw(self, conversation: Conversation) -> None:
        if not self.sla.enabled:
            return
        async with in_transaction() as conn:
            if not await self.reconcile(conversation, conn):
                return
            await REDRAW_CARD.enqueue(CardPayload(conversation.id), now=self.clock(), conn=conn)
        if self.on_queued is not None:
            self.on_queued()

    async def reconcile(self, conversation: Conversation, conn: BaseDBAsyncClient) -> bool:
        """Make the clocks of ``conversation`` match it now; whether the card shows a change.

        Runs in the caller's transaction; safe to repeat.
        """
        if not self.sla.enabled:
            return False
        row = (
            await Conversation.filter(id=conversation.id).select_for_update().using_db(conn).first()
        )
        if row is None or row.chat_thread_ts is None:
            return False  # not shown yet: its clocks start once it is (from the arrival)
        now = self.clock().astimezone(UTC)
        hours = self.sla.hours_for(row.skill)
        clocks = {c.target: c for c in await SlaClock.filter(conversation_id=row.id).using_db(conn)}
        wanted: dict[str, datetime | None] = {}
        waiting_since: datetime | None = None
        if row.status is ConversationStatus.OPEN:
            waiting_since = await customer_waiting_since(row.id, conn=conn)
            if waiting_since is not None:
                answered = await _reply_sent(row.id, conn)
                wanted[NEXT_RESPONSE if answered else FIRST_RESPONSE] = waiting_since
                wanted[RESOLUTION] = waiting_since
            elif RESOLUTION in clocks:
                wanted[RESOLUTION] = None
        snoozed = row.snoozed_until is not None
        targets = self.sla.targets_for(row.skill, row.priority)
        changed = False
        for target in TARGETS:
            clock = clocks.get(target)
            if target not in wanted:
                if clock is not None:
                    await self._end(clock, hours, now, conn)
                    del clocks[target]
                    changed = True
                continue
            running = not snoozed and (target != RESOLUTION or waiting_since is not None)
            seconds = _target_of(targets, target)
            if clock is None:
                start = wanted[target] or now
                elapsed = hours.working_time_between(min(start, now), now)
                clock = SlaClock(
                    conversation_id=row.id,
                    target=target,
                    target_seconds=seconds,
                    remaining_seconds=seconds - int(elapsed.total_seconds()),
                    running_since=now if running else None,
                )
                clock.due_at = self._due(clock, hours)
                await clock.save(using_db=conn)
                changed = True
                clocks[target] = clock
                continue
            before = (clock.target_seconds, clock.running_since is None)
            if clock.target_seconds != seconds:  # another priority or skill: another target
                clock.remaining_seconds += seconds - clock.target_seconds
                clock.target_seconds = seconds
            if running and clock.running_since is None:
                clock.running_since = now
            elif not running and clock.running_since is not None:
                clock.remaining_seconds = int(self.left(clock, hours, now).total_seconds())
                clock.running_since = None
            if (clock.target_seconds, clock.running_since is None) != before:
                clock.due_at = self._due(clock, hours)
                await clock.save(using_db=conn)
                changed = True
        await self._schedule(row.id, list(clocks.values()), hours, now, conn)
        return changed

    def _due(self, clock: SlaClock, hours: BusinessHours) -> datetime | None:
        if clock.running_since is None:
            return None
        if clock.remaining_seconds <= 0:
            return clock.running_since
        return hours.add_working_time(
            clock.running_since, timedelta(seconds=clock.remaining_seconds)
        )

    def _next_threshold(self, clock: SlaClock, hours: BusinessHours) -> datetime | None:
        """When the next alert of a running clock is due (None: paused, or all sent)."""
        if clock.running_since is None or clock.stage == BREACHED:
            return None
        if clock.stage == WARNED:
            return clock.due_at
        before_warning = timedelta(seconds=clock.remaining_seconds) - self._warning_left(clock)
        if before_warning <= timedelta():
            return clock.running_since
        return hours.add_working_time(clock.running_since, before_warning)

    async def _schedule(
        self,
        conversation_id: int,
        clocks: list[SlaClock],
        hours: BusinessHours,
        now: datetime,
        conn: BaseDBAsyncClient,
    ) -> None:
        """Keep one check, due at the earliest threshold of the clocks still running."""
        await cancel_about(SLA_CHECK, conversation_id, conn)
        moments = [m for c in clocks if (m := self._next_threshold(c, hours)) is not None]
        if moments:
            await SLA_CHECK.enqueue(
                SlaCheckPayload(conversation_id), run_at=max(min(moments), now), conn=conn
            )

    async def _end(
        self, clock: SlaClock, hours: BusinessHours, now: datetime, conn: BaseDBAsyncClient
    ) -> None:
        """The clock is met (or its conversation closed): note a breach's overrun, drop it."""
        if clock.breach_audit_id is not None:
            entry = await AuditEntry.filter(id=clock.breach_audit_id).using_db(conn).first()
            if entry is not None:
                overrun = max(-self.left(clock, hours, now), timedelta())
                entry.detail = {**entry.detail, "overrun_seconds": int(overrun.total_seconds())}
                await entry.save(using_db=conn, update_fields=["detail"])
        await SlaClock.filter(id=clock.id).using_db(conn).delete()

    async def check(self, job: Job) -> None:
        """Send the alerts whose threshold has come, once, and schedule the next check."""
        conversation_id = SLA_CHECK.payload_of(job).conversation_id
        async with in_transaction() as conn:
            await hold_claim(job, conn)
            conversation = (
                await Conversation.filter(id=conversation_id)
                .select_for_update()
                .using_db(conn)
                .first()
            )
            if conversation is None or conversation.status is ConversationStatus.CLOSED:
                return
            now = self.clock().astimezone(UTC)
            hours = self.sla.hours_for(conversation.skill)
            clocks = await SlaClock.filter(conversation_id=conversation_id).using_db(conn)
            for clock in clocks:
                if clock.running_since is None:
                    continue
                left = self.left(clock, hours, now)
                if left <= timedelta() and clock.stage != BREACHED:
                    await self._breach(conversation, clock, now, conn)
                elif left <= self._warning_left(clock) and clock.stage == "":
                    await self._warn(conversation, clock, left, now, conn)
                else:
                    continue
                await clock.save(using_db=conn, update_fields=["stage", "breach_audit_id"])
            await self._schedule(conversation_id, clocks, hours, now, conn)
        if self.on_queued is not None:
            self.on_queued()

    async def _warn(
        self,
        conversation: Conversation,
        clock: SlaClock,
        left: timedelta,
        now: datetime,
        conn: BaseDBAsyncClient,
    ) -> None:
        label = LABELS[clock.target]
        target = format_working(timedelta(seconds=clock.target_seconds))
        summary = (
            f":large_yellow_square: {label.capitalize()} due in {format_working(left)} "
            f"({self.sla.warning_percent}% of the {target} target used)."
        )
        entry = await self._note(conversation, "sla warning", summary, clock, now, conn)
        sid = short_id(conversation)
        text = f":large_yellow_square: Conversation `{sid}`: {label} due in {format_working(left)}."
        to = conversation.owner or self.sla.leads_channel_for(conversation.skill)
        if to:
            await self._alert(conversation, to, text, f"sla-{entry.id}", now, conn)
        clock.stage = WARNED

    async def _breach(
        self, conversation: Conversation, clock: SlaClock, now: datetime, conn: BaseDBAsyncClient
    ) -> None:
        label = LABELS[clock.target]
        target = format_working(timedelta(seconds=clock.target_seconds))
        summary = f":large_red_square: {label.capitalize()} overdue: the {target} target ran out."
        targets = self.sla.targets_for(conversation.skill, conversation.priority)
        skill = self.settings.skill(conversation.skill)
        oncall = skill.oncall if skill is not None and targets.page_oncall_on_breach else ""
        if oncall:
            summary += f" Paging {self.chat.mention(oncall)}."
        entry = await self._note(conversation, "sla breach", summary, clock, now, conn)
        leads = self.sla.leads_channel_for(conversation.skill)
        if leads:
            text = (
                f":large_red_square: Conversation `{short_id(conversation)}`: {label} overdue "
                f"({target} target)."
            )
            if oncall:
                text += " On-call is paged in the thread."
            await self._alert(conversation, leads, text, f"sla-{entry.id}", now, conn)
        clock.stage = BREACHED
        clock.breach_audit_id = entry.id

    async def _note(
        self,
        conversation: Conversation,
        action: str,
        summary: str,
        clock: SlaClock,
        now: datetime,
        conn: BaseDBAsyncClient,
    ) -> AuditEntry:
        """Record the alert (the breach record: conversation, target, due, overrun later)."""
        entry = await AuditEntry.create(
            conversation=conversation,
            actor_id="",
            actor_name="Switchboard",
            action=action,
            detail={
                "target": clock.target,
                "target_seconds": clock.target_seconds,
                "due_at": clock.due_at.isoformat() if clock.due_at else None,
                "at": now.isoformat(),
            },
            summary=summary,
            using_db=conn,
        )
        await SHOW_CHANGE.enqueue(ChangePayload(entry.id, conversation.id), now=now, conn=conn)
        if self.settings.rules:
            event = "sla_warning" if action == "sla warning" else "sla_breach"
            await RUN_RULES.enqueue(
                RulesPayload(conversation.id, event, f"audit-{entry.id}"), now=now, conn=conn
            )
        return entry

    async def _alert(
        self,
        conversation: Conversation,
        to: str,
        text: str,
        marker: str,
        now: datetime,
        conn: BaseDBAsyncClient,
    ) -> None:
        await POST_ALERT.enqueue(
            AlertPayload(conversation.id, to, text, marker), now=now, conn=conn
        )


async def _reply_sent(conversation_id: int, conn: BaseDBAsyncClient) -> bool:
    return (
        await Message.filter(
            conversation_id=conversation_id,
            direction=Direction.OUTBOUND,
            delivery_state__in=SENT_STATES,
        )
        .using_db(conn)
        .exists()
    )


class SlaCheck:
    """Job: the alerts of a conversation whose next deadline threshold has come."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines

    async def run(self, job: Job) -> None:
        await self.deadlines.check(job)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not check a conversation's deadlines", extra={"job": job.id})


class PostAlert:
    """Job: an alert for a person (a direct message) or a channel, with a link to the thread."""

    def __init__(self, chat: ChatPort) -> None:
        self.chat = chat

    async def run(self, job: Job) -> None:
        payload = POST_ALERT.payload_of(job)
        conversation = await Conversation.get_or_none(id=payload.conversation_id)
        if conversation is None:
            return  # forgotten or purged meanwhile
        text = payload.text
        if conversation.chat_channel and conversation.chat_thread_ts:
            link = await self.chat.permalink(conversation.chat_channel, conversation.chat_thread_ts)
            text += f" <{link}|Open the conversation>"
        if payload.to[:1] in ("U", "W"):
            channel = await self.chat.direct_channel(payload.to)
        else:
            channel = await self.chat.channel_id(payload.to)
        if job.attempts > 1 and await self.chat.find_post(channel, None, payload.marker):
            return
        await self.chat.post_message(channel, text, marker=payload.marker)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not post an alert", extra={"job": job.id, "reason": reason})


class RedrawCard:
    """Job: redraw a conversation's root card (a deadline started, paused or was met)."""

    def __init__(
        self, chat: ChatPort, card: Callable[[Conversation], Awaitable[ConversationCard]]
    ) -> None:
        self.chat = chat
        self.card = card

    async def run(self, job: Job) -> None:
        payload = REDRAW_CARD.payload_of(job)
        conversation = await Conversation.get_or_none(id=payload.conversation_id)
        if conversation is None or not (conversation.chat_channel and conversation.chat_thread_ts):
            return
        await self.chat.update_root(
            conversation.chat_channel, conversation.chat_thread_ts, await self.card(conversation)
        )

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not redraw a card", extra={"job": job.id, "reason": reason})

"""What leads and admins change, and how each change is shown in Slack.

A change is committed together with its audit entry (who, what, when) and a job that shows it:
the root card is redrawn and the entry's sentence is posted in the thread ("Anna moved this to
#billing"). Reassigning a conversation to a skill that lives in another channel is a job of its
own: it posts a new root there with the history so far, points the conversation at the new
thread (later follow-ups and replies go there) and leaves a pointer in the old thread. Snoozing
enqueues a wake-up job due when the snooze ends; the customer writing ends it sooner.

Jobs that show a change share the conversation's serial key with the jobs that post its
messages, so a follow-up that arrives during a move is posted after it, in the new thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Subquery
from tortoise.functions import Min
from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.errors import ActionRefused, DeliveryError
from bot.jobkinds import (
    ASK_SURVEY,
    MOVE_CONVERSATION,
    SHOW_CHANGE,
    WAKE_SNOOZED,
    ChangePayload,
    MovePayload,
    SurveyPayload,
    WakePayload,
)
from bot.jobs import Clock, cancel_about, utcnow
from bot.pipeline import card_for
from bot.ports import ChatPort, Classifier, Learner
from bot.reports import Facts
from bot.roles import Actor
from bot.routing import channel_for, oncall_for, skill_names
from bot.settings import Settings
from bot.shapes import (
    TRIAGE_SKILL,
    Attachment,
    ConversationCard,
    CustomerPost,
    DeadlineView,
    DeliveryState,
    Priority,
)
from bot.similar import Similar
from models import (
    AgentName,
    AuditEntry,
    Conversation,
    ConversationStatus,
    Direction,
    FormerThread,
    Job,
    Message,
    Skill,
    SkillExample,
    StoredAttachment,
)

log = logging.getLogger(__name__)


#: Changes Switchboard makes itself (a snooze running out) carry this actor.
SYSTEM = Actor("", "Switchboard")

_MAX_SNOOZE = timedelta(days=90)


def format_time(moment: datetime) -> str:
    """A moment as people read it in Slack (UTC)."""
    return moment.strftime("%a %d %b %H:%M UTC")


def format_duration(duration: timedelta) -> str:
    """``2 d 3 h``, ``45 min``."""
    minutes = int(duration.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min"]
    shown = [p for p in parts if p and not p.startswith("0 ")]
    return " ".join(shown[:2]) if shown else "0 min"


class Workflow:
    """Changes conversations, skills and agent names on behalf of a person."""

    def __init__(
        self,
        chat: ChatPort,
        settings: Settings,
        classifier: Classifier,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
        deadlines_of: Callable[[Conversation], Awaitable[tuple[DeadlineView, ...]]] | None = None,
        after_change: Callable[[Conversation, BaseDBAsyncClient], Awaitable[object]] | None = None,
        similar: Similar | None = None,
    ) -> None:
        self.chat = chat
        self.settings = settings
        # What the card says about similar conversations and known problems.
        self.similar = similar
        # Replaced by the service once the triage model is loaded.
        self.classifier = classifier
        self.clock = clock
        self.on_queued = on_queued
        # What the card shows as due (bot/deadlines.py).
        self.deadlines_of = deadlines_of
        # Runs in the transaction of every change to a conversation (its deadlines follow).
        self.after_change = after_change
        # When and after how long conversations close, for the reports.
        self.facts = Facts(settings, clock=clock)

    async def card(self, conversation: Conversation) -> ConversationCard:
        """The root card of ``conversation`` as it is now."""
        await conversation.fetch_related("identity")
        oncall = oncall_for(conversation.skill, conversation.priority, self.settings)
        deadlines = await self.deadlines_of(conversation) if self.deadlines_of else ()
        similar = await self.similar.summary(conversation) if self.similar else None
        return card_for(
            conversation,
            await skill_names(),
            oncall=oncall,
            deadlines=deadlines,
            similar=similar,
        )

    async def _record(
        self,
        conversation: Conversation | None,
        actor: Actor,
        action: str,
        summary: str,
        *,
        changed: tuple[str, ...] = (),
        detail: dict[str, object] | None = None,
        move_to: str | None = None,
        also: Callable[[BaseDBAsyncClient], Awaitable[None]] | None = None,
    ) -> AuditEntry:
        """Save the change and its audit entry, with the job that shows it, in one transaction."""
        async with in_transaction() as conn:
            if conversation is not None and changed:
                await conversation.save(using_db=conn, update_fields=[*changed, "updated_at"])
            entry = await AuditEntry.create(
                conversation=conversation,
                actor_id=actor.user_id,
                actor_name=actor.label[:255],
                action=action,
                detail=detail or {},
                summary=summary,
                using_db=conn,
            )
            if conversation is not None and move_to is not None:
                await MOVE_CONVERSATION.enqueue(
                    MovePayload(entry.id, conversation.id, move_to), now=self.clock(), conn=conn
                )
            elif conversation is not None:
                await SHOW_CHANGE.enqueue(
                    ChangePayload(entry.id, conversation.id), now=self.clock(), conn=conn
                )
            if also is not None:
                await also(conn)
            if conversation is not None and self.after_change is not None:
                await self.after_change(conversation, conn)
        if conversation is not None and self.on_queued is not None:
            self.on_queued()
        return entry

    async def assign(
        self, actor: Actor, conversation: Conversation, user_id: str, *, why: str = ""
    ) -> str:
        """Make ``user_id`` the owner ("" leaves the conversation without one).

        ``why`` explains an automatic assignment in the audit ("next in turn, 3 of 8 open").
        """
        sid = short_id(conversation)
        if conversation.owner == user_id:
            if not user_id:
                raise ActionRefused(f"Conversation `{sid}` has no owner.")
            raise ActionRefused(f"{self.chat.mention(user_id)} already owns `{sid}`.")
        conversation.owner = user_id
        if not user_id:
            summary = f"{actor.label} unassigned this conversation."
            answer = f"Conversation `{sid}` has no owner now."
        elif user_id == actor.user_id:
            summary = f"{actor.label} took this conversation."
            answer = f"Conversation `{sid}` is yours now."
        else:
            summary = f"{actor.label} assigned this to {self.chat.mention(user_id)}."
            answer = f"Conversation `{sid}` is {self.chat.mention(user_id)}'s now."
        detail: dict[str, object] = {"owner": user_id}
        if why:
            summary = f"{summary[:-1]}: {why}."
            detail["why"] = why
        await self._record(
            conversation, actor, "assign", summary, changed=("owner",), detail=detail
        )
        return answer

    async def set_priority(
        self, actor: Actor, conversation: Conversation, priority: Priority
    ) -> str:
        sid = short_id(conversation)
        if conversation.priority is priority:
            raise ActionRefused(f"Conversation `{sid}` already has priority {priority.value}.")
        before = conversation.priority
        await self._change_priority(
            actor,
            conversation,
            priority,
            f"set by {actor.label}",
            f"{actor.label} changed the priority from {before.value} to {priority.value}.",
        )
        return f"Conversation `{sid}` has priority {priority.value} now."

    async def raise_priority(
        self, conversation: Conversation, priority: Priority, reason: str
    ) -> None:
        """The priority rules raise ``conversation`` to ``priority`` (``reason`` says why)."""
        before = conversation.priority
        why = reason.partition(": ")[2] or reason
        await self._change_priority(
            SYSTEM,
            conversation,
            priority,
            reason,
            f"The priority rose from {before.value} to {priority.value} ({why}).",
        )

    async def _change_priority(
        self,
        actor: Actor,
        conversation: Conversation,
        priority: Priority,
        reason: str,
        summary: str,
    ) -> None:
        before = conversation.priority
        conversation.priority = priority
        conversation.priority_reason = reason[:255]
        # Editing the root does not notify anyone, so the thread post pages the on-call group.
        oncall = oncall_for(conversation.skill, priority, self.settings)
        if oncall:
            summary += f" Paging {self.chat.mention(oncall)}."
        await self._record(
            conversation,
            actor,
            "priority",
            summary,
            changed=("priority", "priority_reason"),
            detail={"from": before.value, "to": priority.value},
        )

    async def note(self, conversation: Conversation, action: str, summary: str) -> None:
        """Record and show something Switchboard found by itself (nobody free to assign)."""
        await self._record(conversation, SYSTEM, action, summary)

    async def close(self, actor: Actor, conversation: Conversation) -> str:
        sid = short_id(conversation)
        if conversation.status is ConversationStatus.CLOSED:
            raise ActionRefused(f"Conversation `{sid}` is already closed.")
        conversation.status = ConversationStatus.CLOSED
        conversation.snoozed_until = None
        facts = await self.facts.closing(conversation)
        await self._record(
            conversation,
            actor,
            "close",
            f"{actor.label} closed this conversation.",
            changed=("status", "snoozed_until", *facts),
            also=lambda conn: self._after_close(conversation.id, conn),
        )
        return f"Closed `{sid}`. If the customer writes again, it opens again."

    async def _after_close(self, conversation_id: int, conn: BaseDBAsyncClient) -> None:
        """In the close's transaction: no wake-up any more, and the survey's question queued."""
        await _cancel_wake_ups(conversation_id, conn)
        survey = self.settings.survey
        if survey.enabled:
            run_at = self.clock() + timedelta(minutes=survey.delay_minutes)
            await ASK_SURVEY.enqueue(SurveyPayload(conversation_id), run_at=run_at, conn=conn)

    async def reopen(self, actor: Actor, conversation: Conversation) -> str:
        sid = short_id(conversation)
        if conversation.status is ConversationStatus.OPEN:
            raise ActionRefused(f"Conversation `{sid}` is open already.")
        conversation.status = ConversationStatus.OPEN
        await self._record(
            conversation,
            actor,
            "reopen",
            f"{actor.label} reopened this conversation.",
            changed=("status",),
        )
        return f"Reopened `{sid}`."

    async def snooze(
        self, actor: Actor, conversation: Conversation, duration: timedelta | None
    ) -> str:
        """Snooze for ``duration``, or end the snooze now when it is None."""
        sid = short_id(conversation)
        if duration is None:
            if conversation.snoozed_until is None:
                raise ActionRefused(f"Conversation `{sid}` is not snoozed.")
            conversation.snoozed_until = None
            await self._record(
                conversation,
                actor,
                "wake",
                f"{actor.label} ended the snooze.",
                changed=("snoozed_until",),
                also=lambda conn: _cancel_wake_ups(conversation.id, conn),
            )
            return f"Conversation `{sid}` is awake again."
        if conversation.status is ConversationStatus.CLOSED:
            raise ActionRefused(f"Conversation `{sid}` is closed; reopen it before snoozing.")
        if not timedelta(minutes=1) <= duration <= _MAX_SNOOZE:
            raise ActionRefused("A snooze lasts from 1 minute to 90 days.")
        until = (self.clock() + duration).replace(microsecond=0)
        conversation.snoozed_until = until

        async def schedule(conn: BaseDBAsyncClient) -> None:
            await _cancel_wake_ups(conversation.id, conn)
            await WAKE_SNOOZED.enqueue(
                WakePayload(conversation.id, until.isoformat()), run_at=until, conn=conn
            )

        await self._record(
            conversation,
            actor,
            "snooze",
            f"{actor.label} snoozed this until {format_time(until)} ({format_duration(duration)}).",
            changed=("snoozed_until",),
            detail={"until": until.isoformat()},
            also=schedule,
        )
        return (
            f"Snoozed `{sid}` until {format_time(until)}. It wakes up then, or sooner if the "
            "customer writes."
        )

    async def wake_if_due(self, conversation_id: int, until: str) -> None:
        """End the snooze that was set to end at ``until``, if it is still the current one."""
        conversation = await Conversation.get_or_none(id=conversation_id)
        if conversation is None or conversation.snoozed_until is None:
            return
        if abs((conversation.snoozed_until - datetime.fromisoformat(until)).total_seconds()) >= 1:
            return
        conversation.snoozed_until = None
        owner = f" {self.chat.mention(conversation.owner)}" if conversation.owner else ""
        await self._record(
            conversation,
            SYSTEM,
            "wake",
            f":alarm_clock:{owner} The snooze is over: this conversation needs an answer.",
            changed=("snoozed_until",),
        )

    async def customer_wrote(self, conversation: Conversation, message: Message) -> None:
        """A customer's message is in the thread: end a snooze, show a reopening.

        ``conversation`` is read fresh by the caller.
        """
        if message.is_automated:
            return
        if conversation.snoozed_until is not None:
            conversation.snoozed_until = None
            await self._record(
                conversation,
                SYSTEM,
                "wake",
                ":alarm_clock: The customer wrote, so the snooze is over.",
                changed=("snoozed_until",),
                also=lambda conn: _cancel_wake_ups(conversation.id, conn),
            )
        last = (
            await AuditEntry.filter(conversation_id=conversation.id, action__in=("close", "reopen"))
            .order_by("-id")
            .first()
            .values("action")
        )
        if last is not None and last["action"] == "close":
            # Intake opened it again when the message came in; the card still says closed.
            await self._record(
                conversation, SYSTEM, "reopen", "The customer wrote again, so this is open again."
            )

    async def reassign(self, actor: Actor, conversation: Conversation, skill_name: str) -> str:
        """Give the conversation another skill; it moves if that skill has another channel."""
        sid = short_id(conversation)
        skill = await Skill.get_or_none(name=skill_name)
        if skill is None:
            known = ", ".join(await skill_names()) or "none"
            raise ActionRefused(f"There is no skill `{skill_name}`. Skills: {known}.")
        if conversation.skill == skill.name:
            raise ActionRefused(f"Conversation `{sid}` is in {skill.name} already.")
        try:
            target = await self.chat.channel_id(skill.chat_channel)
        except DeliveryError as exc:
            raise ActionRefused(f"Cannot move `{sid}`: {exc.reason}") from exc
        moves = conversation.chat_channel is not None and conversation.chat_channel != target
        before = conversation.skill or TRIAGE_SKILL
        conversation.skill = skill.name
        if moves:
            summary = f"{actor.label} moved this to #{skill.chat_channel} ({skill.name})."
        else:
            summary = f"{actor.label} changed the skill from {before} to {skill.name}."
        await self._record(
            conversation,
            actor,
            "reassign",
            summary,
            changed=("skill",),
            detail={"from": before, "to": skill.name},
            move_to=skill.name,
        )
        if actor.user_id:  # a person's choice teaches triage; a rule's does not
            await self._teach(skill.name, await first_words(conversation.id), "reassignment")
        if moves:
            return f"Moving `{sid}` to #{skill.chat_channel}; its history goes with it."
        return f"Conversation `{sid}` is in {skill.name} now."

    async def _teach(self, skill: str, text: str, source: str) -> None:
        """Keep a labelled example for triage, and teach the running model if it learns."""
        if not text.strip() or skill == TRIAGE_SKILL:
            return
        await SkillExample.create(skill=skill, text=text, source=source)
        if isinstance(self.classifier, Learner):
            await self.classifier.learn(skill, text)

    async def map_skill(self, actor: Actor, name: str, channel: str) -> str:
        """Send new conversations of skill ``name`` to ``channel``."""
        skill = await _skill(name)
        channel = channel.lstrip("#")
        try:
            await self.chat.channel_id(channel)
        except DeliveryError as exc:
            raise ActionRefused(exc.reason) from exc
        before = skill.chat_channel
        skill.chat_channel = channel
        await skill.save(update_fields=["chat_channel"])
        await self._record(
            None,
            actor,
            "skills map",
            f"{actor.label} mapped {name} from #{before} to #{channel}.",
            detail={"skill": name, "from": before, "to": channel},
        )
        still = await _open_count(name)
        stays = f" The {still} open ones stay where they are." if still else ""
        return f"New {name} conversations go to #{channel}.{stays}"

    async def add_skill(self, actor: Actor, name: str, description: str) -> str:
        if name == TRIAGE_SKILL or await Skill.exists(name=name):
            raise ActionRefused(f"Skill `{name}` exists already.")
        channel = self.settings.slack.triage_channel
        await Skill.create(name=name, chat_channel=channel, description=description)
        await self._record(
            None,
            actor,
            "skills add",
            f"{actor.label} added the skill {name}.",
            detail={"skill": name, "description": description},
        )
        await self._teach(name, description, "admin")
        return (
            f"Added `{name}`; its conversations go to #{channel} until you map it: "
            f"`skills map {name} #channel`."
        )

    async def add_example(self, actor: Actor, name: str, text: str) -> str:
        await _skill(name)
        if not text.strip():
            raise ActionRefused('Give the example in quotes: `skills example billing "text"`.')
        await self._record(
            None,
            actor,
            "skills example",
            f"{actor.label} added an example to {name}.",
            detail={"skill": name, "text": text},
        )
        await self._teach(name, text, "admin")
        count = await SkillExample.filter(skill=name).count()
        return f"Triage learned the example; {name} has {count} stored examples."

    async def remove_skill(self, actor: Actor, name: str) -> str:
        skill = await _skill(name)
        if name == self.settings.triage.default_skill:
            raise ActionRefused(
                f"`{name}` is the default skill (triage.default_skill); it cannot be removed."
            )
        still = await _open_count(name)
        if still:
            some = await Conversation.filter(skill=name, status=ConversationStatus.OPEN).limit(10)
            ids = ", ".join(f"`{short_id(c)}`" for c in some)
            raise ActionRefused(
                f"`{name}` has {still} open conversations ({ids}): reassign or close them first."
            )
        await skill.delete()
        await self._record(None, actor, "skills remove", f"{actor.label} removed the skill {name}.")
        configured = " It is in the config file too: remove it there, or it comes back at the "
        return f"Removed `{name}`." + (
            configured + "next start." if self.settings.skill(name) else ""
        )

    async def name_agent(self, actor: Actor, user_id: str, name: str) -> str:
        """Replies of ``user_id`` go out as ``name`` ("" goes back to the Slack profile)."""
        who = self.chat.mention(user_id)
        if not name:
            deleted = await AgentName.filter(user_id=user_id).delete()
            if not deleted:
                raise ActionRefused(f"{who} has no name set here; Slack's profile name is used.")
            summary = f"{actor.label} reset the reply name of {user_id}."
            answer = f"Replies of {who} go out under their Slack name again."
        else:
            await AgentName.update_or_create(
                user_id=user_id, defaults={"display_name": name, "set_by": actor.user_id}
            )
            summary = f"{actor.label} set the reply name of {user_id} to {name}."
            answer = f"Replies of {who} go out as “{name}” now."
        await self._record(None, actor, "agent name", summary, detail={"user": user_id})
        return answer


async def agent_name_override(user_id: str) -> str | None:
    """The name an admin set for ``user_id``'s replies, if any."""
    found = await AgentName.get_or_none(user_id=user_id)
    return found.display_name if found is not None else None


async def _skill(name: str) -> Skill:
    skill = await Skill.get_or_none(name=name)
    if skill is None:
        known = ", ".join(await skill_names()) or "none"
        raise ActionRefused(f"There is no skill `{name}`. Skills: {known}.")
    return skill


async def _open_count(skill: str) -> int:
    return await Conversation.filter(skill=skill, status=ConversationStatus.OPEN).count()


async def _cancel_wake_ups(conversation_id: int, conn: BaseDBAsyncClient) -> None:
    await cancel_about(WAKE_SNOOZED, conversation_id, conn)


async def first_words(conversation_id: int, conn: BaseDBAsyncClient | None = None) -> str:
    """What the customer first wrote, as triage reads a message (subject, then text).

    A reassignment teaches triage with it, so it is also how such an example is found again.
    """
    return (await first_words_of([conversation_id], conn)).get(conversation_id, "")


async def first_words_of(
    conversation_ids: list[int], conn: BaseDBAsyncClient | None = None
) -> dict[int, str]:
    """``first_words`` of many conversations at once, by conversation id (none: no entry)."""
    first_ids = (
        Message.filter(conversation_id__in=conversation_ids, direction=Direction.INBOUND)
        .annotate(first_id=Min("id"))
        .group_by("conversation_id")
        .values("first_id")
    )
    rows = (
        await Message.filter(id__in=Subquery(first_ids))
        .using_db(conn)
        .values_list("conversation_id", "subject", "text")
    )
    return {
        int(conversation_id): f"{str(subject).strip()}\n{str(text).strip()}".strip()
        for conversation_id, subject, text in rows
    }


class ShowChange:
    """Job: redraw the root card and post the audit entry's sentence in the thread."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    async def run(self, job: Job) -> None:
        entry = await AuditEntry.get_or_none(
            id=SHOW_CHANGE.payload_of(job).audit_id
        ).prefetch_related("conversation")
        # No entry: its conversation was removed (forgotten or purged) meanwhile.
        conversation = entry.conversation if entry is not None else None
        if (
            entry is None
            or conversation is None
            or not (conversation.chat_channel and conversation.chat_thread_ts)
        ):
            return
        await show_entry(self.workflow, conversation, entry, retrying=job.attempts > 1)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not show a change in Slack", extra={"job": job.id, "reason": reason})


async def show_entry(
    workflow: Workflow, conversation: Conversation, entry: AuditEntry, *, retrying: bool
) -> None:
    """Redraw the root and post ``entry`` in the thread, once."""
    chat = workflow.chat
    channel, thread_ts = conversation.chat_channel, conversation.chat_thread_ts
    assert channel is not None
    assert thread_ts is not None
    await chat.update_root(channel, thread_ts, await workflow.card(conversation))
    marker = f"audit-{entry.id}"
    if retrying and await chat.find_post(channel, thread_ts, marker) is not None:
        return
    await chat.post_notice(channel, thread_ts, entry.summary, marker=marker)


class MoveConversation:
    """Job: give a conversation its new skill, moving it to that skill's channel.

    Each step is safe to repeat: posts carry markers, and where the conversation came from is
    saved on the audit entry before anything is posted.
    """

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    async def run(self, job: Job) -> None:
        workflow = self.workflow
        chat = workflow.chat
        payload = MOVE_CONVERSATION.payload_of(job)
        entry = await AuditEntry.get_or_none(id=payload.audit_id).prefetch_related(
            "conversation__identity"
        )
        if entry is None or entry.conversation is None:
            return  # the conversation was removed (forgotten or purged) meanwhile
        conversation = entry.conversation
        skill, channel_name = await channel_for(payload.skill, workflow.settings)
        target = await chat.channel_id(channel_name)
        retrying = job.attempts > 1
        conversation.skill = skill
        origin = entry.detail.get("moved_from")
        if origin is None:
            if not conversation.chat_thread_ts or conversation.chat_channel == target:
                await conversation.save(update_fields=["skill", "updated_at"])
                if conversation.chat_thread_ts:
                    await show_entry(workflow, conversation, entry, retrying=retrying)
                return
            origin = [conversation.chat_channel, conversation.chat_thread_ts]
            entry.detail = {**entry.detail, "moved_from": origin}
            await entry.save(update_fields=["detail"])
        assert isinstance(origin, list)
        old_channel, old_ts = str(origin[0]), str(origin[1])
        marker = f"move-{entry.id}"
        ts = await chat.find_post(target, None, marker) if retrying else None
        card = await workflow.card(conversation)
        if ts is None:
            ts = await chat.post_root(target, card, marker=marker)
        old_link = await chat.permalink(old_channel, old_ts)
        await _post_once(
            chat,
            target,
            ts,
            f"{entry.summary} Earlier thread, with its notes: {old_link}\nThe conversation so far:",
            f"{marker}-intro",
            retrying,
        )
        await _copy_history(chat, conversation, target, ts, marker, retrying)
        async with in_transaction() as conn:
            await FormerThread.get_or_create(
                chat_channel=old_channel,
                chat_thread_ts=old_ts,
                defaults={"conversation": conversation},
                using_db=conn,
            )
            conversation.chat_channel = target
            conversation.chat_thread_ts = ts
            await conversation.save(
                using_db=conn,
                update_fields=["skill", "chat_channel", "chat_thread_ts", "updated_at"],
            )
        new_link = await chat.permalink(target, ts)
        await _post_once(
            chat,
            old_channel,
            old_ts,
            f"{entry.summary} Continue there: {new_link}",
            f"{marker}-pointer",
            retrying,
        )
        await chat.update_root(old_channel, old_ts, replace(card, moved_to=new_link))

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not move a conversation", extra={"job": job.id, "reason": reason})


async def _post_once(
    chat: ChatPort, channel: str, thread_ts: str, text: str, marker: str, retrying: bool
) -> None:
    if retrying and await chat.find_post(channel, thread_ts, marker) is not None:
        return
    await chat.post_notice(channel, thread_ts, text, marker=marker)


async def _copy_history(
    chat: ChatPort,
    conversation: Conversation,
    channel: str,
    thread_ts: str,
    marker: str,
    retrying: bool,
) -> None:
    """Post the conversation's messages shown so far into the new thread.

    Each message then points at its copy, so a reply's delivery state shows in the new thread.
    Messages not shown yet are left to their own jobs, which post them in the new thread.
    """
    messages = await Message.filter(
        conversation_id=conversation.id, chat_ts__isnull=False
    ).order_by("id")
    for message in messages:
        if message.delivery_state is DeliveryState.CANCELLED:
            continue
        copy_marker = f"{marker}-m{message.id}"
        ts = await chat.find_post(channel, thread_ts, copy_marker) if retrying else None
        if ts is None:
            files = await StoredAttachment.filter(message_id=message.id).values_list(
                "filename", flat=True
            )
            outbound = message.direction is Direction.OUTBOUND
            sender = message.sender_name or message.sender_address or "?"
            post = CustomerPost(
                message_id=message.id,
                sender_name=f"{sender} (agent reply)" if outbound else sender,
                text=message.text,
                attachments=tuple(_named(str(name)) for name in files),
                is_automated=message.is_automated,
                notice=message.automated_reason,
            )
            ts = await chat.post_in_thread(channel, thread_ts, post, marker=copy_marker)
        message.chat_ts = ts
        await message.save(update_fields=["chat_ts"])


def _named(filename: str) -> Attachment:
    # The file stays in the old thread; the copy names it.
    return Attachment(filename, "application/octet-stream", b"")


class WakeSnoozed:
    """Job: end a snooze when it is due."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    async def run(self, job: Job) -> None:
        payload = WAKE_SNOOZED.payload_of(job)
        await self.workflow.wake_if_due(payload.conversation_id, payload.until)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not wake a snoozed conversation", extra={"job": job.id, "reason": reason})

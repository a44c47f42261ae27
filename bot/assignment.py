"""Fair assignment: new conversations of a skill go round-robin to the people of its team.

``[[assignment]]`` names a skill's Slack user group. A new conversation of that skill, still
without an owner once its first message is in the thread, goes to the next member in turn
after the one who got the skill's last conversation this way, skipping whoever is away (Slack
presence), has a status that says they are not taking conversations (``away_emoji``,
``away_words``), or already has ``max_open`` open conversations. The audit entry explains the
choice ("assigned this to @Lena: next in turn, 3 of 8 open; skipped @Ben: away"). If nobody is
free, the thread says so and the conversation waits for a person. A lead can always assign
someone else; the round only ever assigns a conversation that has no owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.jobkinds import ASSIGN_FAIRLY, CardPayload
from bot.jobs import Clock, utcnow
from bot.ports import TeamDirectory
from bot.roles import Actor
from bot.settings import AssignmentSettings, Settings
from bot.workflow import Workflow
from models import AuditEntry, Conversation, ConversationStatus, Job, Message

log = logging.getLogger(__name__)


def _actor(skill: str) -> Actor:
    """Who a fair assignment is by: also how the round finds the skill's last turn."""
    return Actor("", f"Fair assignment ({skill})")


class FairAssignment:
    """Queues new conversations of the skills with ``[[assignment]]`` for the round."""

    def __init__(
        self,
        workflow: Workflow,
        directory: TeamDirectory,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.workflow = workflow
        self.directory = directory
        self.teams = {a.skill: a for a in settings.assignment}
        self.clock = clock
        self.on_queued = on_queued

    async def customer_wrote(
        self, conversation: Conversation, message: Message, opened: bool
    ) -> None:
        """A message is in its thread; one that ``opened`` it gives the conversation its turn."""
        if not opened or conversation.skill not in self.teams or conversation.owner:
            return
        if message.is_automated:
            return
        await ASSIGN_FAIRLY.enqueue(CardPayload(conversation.id), now=self.clock())
        if self.on_queued is not None:
            self.on_queued()

    async def assign(self, conversation_id: int) -> None:
        """Give the conversation to the next free member of its skill's team, and say why."""
        conversation = await Conversation.get_or_none(id=conversation_id)
        if (
            conversation is None
            or conversation.owner  # a lead was quicker: their choice stands
            or conversation.status is ConversationStatus.CLOSED
            or conversation.skill not in self.teams
        ):
            return
        team = self.teams[conversation.skill]
        members = await self.directory.group_members(team.usergroup)
        last = await self._last_turn(conversation.skill)
        start = members.index(last) + 1 if last in members else 0
        skipped: list[str] = []
        mention = self.workflow.chat.mention
        for user in (*members[start:], *members[:start]):
            reason = await self._busy(user, team)
            if reason:
                skipped.append(f"{mention(user)}: {reason}")
                continue
            open_now = await _open_of(user)
            turn = "next in turn" if not skipped else "first free in turn"
            limit = f" of {team.max_open}" if team.max_open else ""
            why = f"{turn}, {open_now + 1}{limit} open"
            if skipped:
                why += f"; skipped {', '.join(skipped)}"
            await self.workflow.assign(_actor(conversation.skill), conversation, user, why=why)
            return
        who = "; ".join(skipped) or f"{mention(team.usergroup)} has no members"
        await self.workflow.note(
            conversation,
            "assign none",
            f"Nobody in {mention(team.usergroup)} is free to take this ({who}); "
            "it waits for someone to take it.",
        )

    async def _busy(self, user: str, team: AssignmentSettings) -> str:
        """Why ``user`` cannot take one more now ("" if they can)."""
        if await self.directory.is_away(user):
            return "away"
        text, emoji = await self.directory.status(user)
        if emoji and emoji in team.away_emoji:
            return f"status {emoji}"
        if any(word in text.lower() for word in team.away_words):
            return f"status “{text}”"
        if team.max_open and await _open_of(user) >= team.max_open:
            return f"{team.max_open} of {team.max_open} open"
        return ""

    async def _last_turn(self, skill: str) -> str:
        last = (
            await AuditEntry.filter(action="assign", actor_name=_actor(skill).label)
            .order_by("-id")
            .first()
        )
        return str(last.detail.get("owner", "")) if last is not None else ""


async def _open_of(user: str) -> int:
    return await Conversation.filter(owner=user, status=ConversationStatus.OPEN).count()


class AssignFairly:
    """Job: a new conversation's turn in its skill's round."""

    def __init__(self, assignment: FairAssignment) -> None:
        self.assignment = assignment

    async def run(self, job: Job) -> None:
        await self.assignment.assign(ASSIGN_FAIRLY.payload_of(job).conversation_id)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not assign a conversation", extra={"job": job.id, "reason": reason})

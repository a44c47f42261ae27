"""Replaying stored messages: intake, threading and triage as the service runs them, unposted.

``Replay.run`` stores a batch of messages with the real ``Intake`` and runs the real threading
job (``ThreadInbound``) against the open database (``switchboard replay`` opens a throw-away
one), so a follow-up joins the conversation of the message it answers, as it would in the
service. A message keeps the time it was sent (its ``received_at``): the subject window of
threading spans the real time between two mails, not the seconds between their replay.

Each message then gets its own triage. The priority rules see how many earlier messages its
conversation has and how long ago the first came (a replay answers nothing, so every follow-up
counts as unanswered). A message that fails gets its error; the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.intake import Accepted, Intake, ThreadInbound
from bot.jobkinds import POST_INBOUND, THREAD_INBOUND
from bot.jobs import JobRunner
from bot.settings import JobSettings, ThreadingSettings
from bot.shapes import InboundMessage, Triage
from models import Direction, Job, JobState, Message

#: How long the jobs of one batch may take before the replay stops waiting for them.
_BATCH_TIMEOUT_SECONDS = 600.0


class ConversationAwareClassifier(Protocol):
    """Triage that also weighs the conversation so far (``bot.triage.TriageEngine``)."""

    async def triage(
        self, message: InboundMessage, *, follow_ups: int = 0, waiting_hours: float = 0.0
    ) -> Triage: ...


@dataclass(frozen=True, slots=True)
class Replayed:
    """What became of one message: its conversation and triage, or why there is none.

    ``conversation`` is the conversation's id in the replay's database (1, 2, ...). A message
    seen before in the replay (the same Message-ID) is a ``duplicate``: the service would store
    and show it once, so it has the earlier message's conversation and no triage of its own.
    """

    conversation: int = 0
    triage: Triage | None = None
    duplicate: bool = False
    error: str = ""


class _PostNothing:
    """The posting job of a replay: nothing goes to Slack."""

    async def run(self, job: Job) -> None:
        return None

    async def give_up(self, job: Job, reason: str) -> None:
        return None


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Replay:
    """Runs messages through intake, threading and triage; nothing is posted or sent."""

    def __init__(
        self, classifier: ConversationAwareClassifier, threading: ThreadingSettings
    ) -> None:
        self.classifier = classifier
        self.intake = Intake()
        # One job at a time and no retries: a follow-up is threaded after the message before
        # it, and a failure is reported at once instead of after minutes of backoff.
        self.runner = JobRunner(
            {THREAD_INBOUND: ThreadInbound(threading), POST_INBOUND: _PostNothing()},
            JobSettings(workers=1, max_attempts=1),
        )

    async def run(self, messages: Sequence[InboundMessage]) -> list[Replayed]:
        """Replay ``messages`` in their order; one answer each, in the same order."""
        outcomes = await asyncio.gather(
            *(self.intake.accept(m) for m in messages), return_exceptions=True
        )
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, Accepted) and not outcome.duplicate:
                await Message.filter(id=outcome.message_id).update(created_at=message.received_at)
        await self.runner.run_until_idle(timeout=_BATCH_TIMEOUT_SECONDS)

        ids = [o.message_id for o in outcomes if isinstance(o, Accepted)]
        conversations: dict[int, int | None] = dict(
            await Message.filter(id__in=ids).values_list("id", "conversation_id")
        )
        failures = await _threading_failures(ids) if None in conversations.values() else {}
        answers: list[Replayed] = []
        to_triage: list[tuple[int, InboundMessage, int, float]] = []
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                answers.append(Replayed(error=f"not stored: {_error(outcome)}"))
                continue
            conversation = conversations.get(outcome.message_id)
            if conversation is None:
                reason = failures.get(outcome.message_id, "no conversation found")
                answers.append(Replayed(error=f"not threaded: {reason}"))
            elif outcome.duplicate:
                answers.append(Replayed(conversation=conversation, duplicate=True))
            else:
                follow_ups, waiting_hours = await _so_far(
                    conversation, outcome.message_id, message.received_at
                )
                to_triage.append((len(answers), message, follow_ups, waiting_hours))
                answers.append(Replayed(conversation=conversation))
        # Asked together, so the triage engine reads them in one batch.
        triages = await asyncio.gather(
            *(self.classifier.triage(m, follow_ups=f, waiting_hours=w) for _, m, f, w in to_triage),
            return_exceptions=True,
        )
        for (index, _, _, _), triage in zip(to_triage, triages, strict=True):
            conversation = answers[index].conversation
            if isinstance(triage, BaseException):
                answers[index] = Replayed(conversation, error=f"not triaged: {_error(triage)}")
            else:
                answers[index] = Replayed(conversation, triage=triage)
        return answers


async def _so_far(conversation: int, message_id: int, received_at: datetime) -> tuple[int, float]:
    """How many messages the conversation had before this one, and the hours since the first."""
    earlier = (
        await Message.filter(
            conversation_id=conversation, direction=Direction.INBOUND, id__lt=message_id
        )
        .order_by("id")
        .only("id", "created_at")
    )
    if not earlier:
        return 0, 0.0
    return len(earlier), max((received_at - earlier[0].created_at).total_seconds() / 3600, 0.0)


async def _threading_failures(message_ids: list[int]) -> dict[int, str]:
    """Why threading failed, by message id (the failed jobs' last errors)."""
    wanted = set(message_ids)
    # One attempt each: a kind that parks parks after it instead of failing.
    ended = (JobState.FAILED, JobState.PARKED)
    failed = await Job.filter(kind=THREAD_INBOUND.name, state__in=ended).values_list(
        "payload", "last_error"
    )
    found: dict[int, str] = {}
    for payload, error in failed:
        message_id = payload.get("message_id") if isinstance(payload, dict) else None
        if isinstance(message_id, int) and message_id in wanted:
            found[message_id] = str(error)
    return found

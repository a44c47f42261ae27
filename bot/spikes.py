"""Spike alerts: many messages about one thing, far above that thing's usual rate.

"One thing" is a neighbourhood in the embedding space, whatever the skill: the stored customer
messages at least ``spikes.similarity`` alike (cosine) to a new message, found through this
replica's index (bot/vectors.py). After each customer message is shown in Slack, a
``check_spike`` job counts, up to the message's arrival:

- ``recent``: conversations with a message of the topic in the last ``window_minutes``;
- ``before``: conversations with a message of the topic in the ``history_days`` before that;
- ``all_recent``, ``all_before``: every customer message in the same two periods.

The topic's usual share of the traffic is ``(before + 1) / (all_before + 1)`` (a topic never
seen counts as seen once, and a young database with little history calls nothing a spike);
at that share the window would hold ``expected = all_recent × usual share``. A spike is
``recent ≥ min_messages`` and ``recent ≥ ratio × expected``. Traffic that rises for every topic
(a Monday morning) raises ``all_recent``, and ``expected`` with it, so only a topic far above
its own share fires. Conversations are counted, not messages, so one customer writing ten
times is not a spike.

A spike found is a ``spikes`` row and a ``post_spike`` job, stored in the check's transaction,
which holds the job's claim; every check has the same serial key, so checks run one at a time
across replicas and two messages of one burst cannot both open a spike. A later message whose
neighbours include a member of an open spike joins it and posts nothing; one that comes at
least at half the minimum pace keeps the spike open. When none did for a whole window, the
spike is over, and the topic rising again is a new spike with a new alert.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.errors import ActionRefused
from bot.jobkinds import CHECK_SPIKE, POST_SPIKE, SpikeCheckPayload, SpikePayload
from bot.jobs import Clock, hold_claim, utcnow
from bot.ports import ChatPort
from bot.roles import Actor
from bot.settings import SpikeSettings
from bot.shapes import ChannelKind, SpikeAlert, SpikeExample
from bot.similar import Similar
from bot.vectors import MessageIndex
from models import Conversation, Direction, Job, Message, MessageVector, Spike

log = logging.getLogger(__name__)

#: A spike remembers at most this many of its messages (the ones "Link all" links).
MAX_MEMBERS = 1000
EXAMPLES = 3
_EXCERPT = 140


@dataclass(frozen=True, slots=True)
class TopicRate:
    """How often a topic came, now and usually, against all customer messages."""

    recent: int
    before: int
    all_recent: int
    all_before: int

    @property
    def expected(self) -> float:
        """What the window would hold at the topic's usual share of the traffic."""
        return self.all_recent * (self.before + 1) / (self.all_before + 1)

    def is_spike(self, settings: SpikeSettings) -> bool:
        return self.recent >= settings.min_messages and self.recent >= (
            settings.ratio * self.expected
        )

    def keeps_open(self, settings: SpikeSettings) -> bool:
        """Whether the topic still comes at spike pace (half the minimum will do)."""
        return self.recent >= math.ceil(settings.min_messages / 2)


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """A customer message of the topic: when it came and in which conversation."""

    message_id: int
    conversation_id: int
    created_at: datetime
    similarity: float


def customer_messages() -> QuerySet[Message]:
    """Every message a customer wrote (no auto-replies) that is in a conversation."""
    return Message.filter(
        direction=Direction.INBOUND, is_automated=False, conversation_id__isnull=False
    )


class Spikes:
    """Finds spikes as customer messages come in, describes them, links them to a problem."""

    def __init__(
        self,
        index: MessageIndex,
        settings: SpikeSettings,
        similar: Similar,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.similar = similar
        self.clock = clock
        self.on_queued = on_queued

    async def customer_wrote(self, conversation: Conversation, message: Message) -> None:
        """A customer's message is in its thread: queue its check."""
        if not self.settings.enabled or message.is_automated:
            return
        await CHECK_SPIKE.enqueue(SpikeCheckPayload(conversation.id, message.id), now=self.clock())
        if self.on_queued is not None:
            self.on_queued()

    async def topic_of(self, message: Message) -> list[TopicMessage]:
        """The customer messages about the same thing as ``message`` (itself included) that
        came in the window and the history before it, most alike first."""
        stored = await MessageVector.get_or_none(message_id=message.id)
        if stored is None:
            return []
        # Another replica may have stored the burst's latest messages: read them first.
        await self.index.refresh()
        found = await self.index.nearest(
            bytes(stored.vector),
            self.settings.neighbours,
            min_similarity=self.settings.similarity,
        )
        alike = {n.message_id: n.similarity for n in found}
        alike[message.id] = 1.0
        until = message.created_at
        since = until - self.settings.window - self.settings.history
        rows = await (
            customer_messages()
            .filter(id__in=list(alike), created_at__gt=since, created_at__lte=until)
            .values_list("id", "conversation_id", "created_at")
        )
        topic = [
            TopicMessage(int(mid), int(cid), created, alike[int(mid)]) for mid, cid, created in rows
        ]
        return sorted(topic, key=lambda m: (-m.similarity, m.message_id))

    async def rate_of(self, message: Message, topic: list[TopicMessage]) -> TopicRate:
        """The topic's conversations and all customer messages, in the window and before."""
        until = message.created_at
        start = until - self.settings.window
        since = start - self.settings.history
        recent = {m.conversation_id for m in topic if m.created_at > start}
        before = {m.conversation_id for m in topic if m.created_at <= start}
        all_recent = (
            await customer_messages().filter(created_at__gt=start, created_at__lte=until).count()
        )
        all_before = (
            await customer_messages().filter(created_at__gt=since, created_at__lte=start).count()
        )
        return TopicRate(len(recent), len(before), all_recent, all_before)

    async def check(self, message_id: int, *, job: Job | None = None) -> Spike | None:
        """Look at the topic of a message just shown; the spike it opened, if it did."""
        message = await Message.get_or_none(id=message_id)
        if message is None or message.is_automated:
            return None  # forgotten meanwhile
        topic = await self.topic_of(message)
        if not topic:
            return None
        rate = await self.rate_of(message, topic)
        now = message.created_at
        recent = [m for m in topic if m.created_at > now - self.settings.window]
        async with in_transaction() as conn:
            if job is not None:
                await hold_claim(job, conn)
            await self._end_quiet(now, conn)
            ids = {m.message_id for m in topic}
            for spike in await Spike.filter(ended_at=None).using_db(conn):
                if ids & set(spike.member_ids):
                    await self._join(spike, message, rate, conn)
                    return None
            if not rate.is_spike(self.settings):
                return None
            spike = await self._open(message, recent, rate, conn)
        log.info(
            "spike found",
            extra={"spike": spike.id, "count": rate.recent, "expected": round(rate.expected, 2)},
        )
        if self.on_queued is not None:
            self.on_queued()
        return spike

    async def _end_quiet(self, now: datetime, conn: BaseDBAsyncClient) -> None:
        """Open spikes whose topic did not come at spike pace for a whole window are over."""
        await (
            Spike.filter(ended_at=None, last_seen_at__lt=now - self.settings.window)
            .using_db(conn)
            .update(ended_at=now)
        )

    async def _join(
        self, spike: Spike, message: Message, rate: TopicRate, conn: BaseDBAsyncClient
    ) -> None:
        if message.id not in spike.member_ids and len(spike.member_ids) < MAX_MEMBERS:
            spike.member_ids = [*spike.member_ids, message.id]
        if rate.keeps_open(self.settings):
            spike.last_seen_at = max(spike.last_seen_at, message.created_at)
            spike.count = max(spike.count, rate.recent)
        await spike.save(using_db=conn, update_fields=["member_ids", "last_seen_at", "count"])

    async def _open(
        self,
        message: Message,
        recent: list[TopicMessage],
        rate: TopicRate,
        conn: BaseDBAsyncClient,
    ) -> Spike:
        examples = [message.id]
        shown = {message.conversation_id}  # type: ignore[attr-defined]
        for other in recent:  # most alike first
            if len(examples) == EXAMPLES:
                break
            if other.conversation_id not in shown:
                examples.append(other.message_id)
                shown.add(other.conversation_id)
        members = sorted(m.message_id for m in recent)[-MAX_MEMBERS:]
        spike = await Spike.create(
            centroid_id=message.id,
            example_ids=examples,
            member_ids=members,
            count=rate.recent,
            usual=rate.expected,
            started_at=min(m.created_at for m in recent),
            last_seen_at=message.created_at,
            using_db=conn,
        )
        await POST_SPIKE.enqueue(SpikePayload(spike.id), now=self.clock(), conn=conn)
        return spike

    async def alert(
        self, spike: Spike, link_of: Callable[[str, str], Awaitable[str]]
    ) -> SpikeAlert:
        """What the leads' alert shows; ``link_of(channel, ts)`` is a message's permalink."""
        messages = await Message.filter(id__in=spike.member_ids).prefetch_related("conversation")
        by_id = {m.id: m for m in messages}
        skills: Counter[str] = Counter()
        channels: Counter[ChannelKind] = Counter()
        chat_channels: dict[str, None] = {}
        for message in messages:
            conversation: Conversation | None = message.conversation
            if conversation is None:
                continue
            skills[conversation.skill] += 1
            channels[message.channel] += 1
            if conversation.chat_channel:
                chat_channels[conversation.chat_channel] = None
        examples = []
        for message_id in spike.example_ids:
            example = by_id.get(message_id)
            if example is None or example.conversation is None:
                continue  # forgotten meanwhile
            conversation = example.conversation
            link = ""
            ts = example.chat_ts or conversation.chat_thread_ts
            if conversation.chat_channel and ts:
                link = await link_of(conversation.chat_channel, ts)
            examples.append(SpikeExample(short_id(conversation), _excerpt(example), link))
        return SpikeAlert(
            spike_id=spike.id,
            count=spike.count,
            window_minutes=self.settings.window_minutes,
            usual=spike.usual,
            examples=tuple(examples),
            skills=tuple(skills.most_common()),
            channels=tuple(channels.most_common()),
            chat_channels=tuple(chat_channels),
        )

    async def link_problem(self, actor: Actor, spike_id: int, title: str) -> str:
        """Link every conversation of a spike to the known problem ``title`` (made if new)."""
        spike = await Spike.get_or_none(id=spike_id)
        if spike is None:
            raise ActionRefused("That spike is no longer stored.")
        conversation_ids = set(
            await Message.filter(
                id__in=spike.member_ids, conversation_id__isnull=False
            ).values_list("conversation_id", flat=True)
        )
        conversations = await Conversation.filter(id__in=list(conversation_ids)).order_by("id")
        if not conversations:
            raise ActionRefused("The conversations of that spike are gone (forgotten or removed).")
        problem = await self.similar.link_all(actor, conversations, title)
        await Spike.filter(id=spike.id).update(problem_id=problem.id)
        return f"Linked {len(conversations)} conversations to the known problem “{problem.title}”."


def _excerpt(message: Message) -> str:
    text = " ".join((message.text or message.subject).split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


class CheckSpike:
    """Job: is the topic of a customer's message far above its usual rate?"""

    def __init__(self, spikes: Spikes) -> None:
        self.spikes = spikes

    async def run(self, job: Job) -> None:
        await self.spikes.check(CHECK_SPIKE.payload_of(job).message_id, job=job)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not check for a spike", extra={"job": job.id, "reason": reason})


class PostSpike:
    """Job: post a spike's alert to the leads' channel, once."""

    def __init__(self, chat: ChatPort, spikes: Spikes) -> None:
        self.chat = chat
        self.spikes = spikes

    async def run(self, job: Job) -> None:
        spike = await Spike.get_or_none(id=POST_SPIKE.payload_of(job).spike_id)
        if spike is None or spike.chat_ts:
            return
        channel = await self.chat.channel_id(self.spikes.settings.channel)
        marker = f"spike-{spike.id}"
        ts = await self.chat.find_post(channel, None, marker) if job.attempts > 1 else None
        if ts is None:
            alert = await self.spikes.alert(spike, self.chat.permalink)
            ts = await self.chat.post_spike(channel, alert, marker=marker)
        await Spike.filter(id=spike.id).update(chat_channel=channel, chat_ts=ts)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not post a spike alert", extra={"job": job.id, "reason": reason})

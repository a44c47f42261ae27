"""What people look up in Slack: a conversation by name, the queue, a customer, the skills.

A conversation is named by its short id (shown on its root message) or by any of its Slack
messages (a link, or the message a shortcut was used on), in its current thread or in a thread
it was moved away from. Everything here only reads; the adapters render the results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tortoise.expressions import Case, Q, Subquery, When
from tortoise.queryset import QuerySet

from bot.conversations import short_id
from bot.deadlines import LABELS
from bot.errors import ActionRefused
from bot.jobs import Clock, utcnow
from bot.settings import Settings
from bot.shapes import ChannelKind, DeadlineState, DeadlineView, Priority
from bot.signatures import contact_data
from models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Customer,
    CustomerDetail,
    Direction,
    Identity,
    Message,
    Skill,
    SkillExample,
    SlaClock,
)

PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
_SHORT_ID = re.compile(r"^[a-z0-9]{4,16}$")
# https://team.slack.com/archives/C0123ABCD/p1700000000000100?thread_ts=1700000000.000100
_LINK = re.compile(r"/archives/([CGD][A-Z0-9]+)/p(\d{10})(\d{6})(?:\?(.*))?$")
_THREAD_TS = re.compile(r"(?:^|&)thread_ts=(\d{10}\.\d{6})")


@dataclass(frozen=True, slots=True)
class ByText:
    """A conversation as a person typed it: a short id or a link to one of its messages."""

    text: str


@dataclass(frozen=True, slots=True)
class ByMessage:
    """A conversation by one of its Slack messages (where a button or shortcut was used)."""

    chat_channel: str
    ts: str
    thread_ts: str = ""


ConversationRef = ByText | ByMessage


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One conversation in a list. ``subject`` and ``customer`` are customer text."""

    short_id: str
    subject: str
    customer: str
    channel: ChannelKind
    skill: str
    priority: Priority
    status: str
    owner: str
    created_at: datetime
    snoozed_until: datetime | None
    chat_channel: str | None
    chat_thread_ts: str | None
    #: The soonest running deadline, where the queue is sorted by time left.
    deadline: DeadlineView | None = None


@dataclass(frozen=True, slots=True)
class QueueView:
    skill: str
    entries: tuple[QueueEntry, ...]
    total: int


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Contact data found in an e-mail signature, not stored until an agent confirms it.

    ``key`` names it for the confirm button or command (``<message id>.<index>``).
    """

    kind: str
    value: str
    source: str
    key: str


@dataclass(frozen=True, slots=True)
class CustomerView:
    name: str
    identities: tuple[tuple[ChannelKind, str], ...]
    conversations: tuple[QueueEntry, ...]
    messages: int
    customer_id: int = 0
    #: How each conversation (in the order of ``conversations``) ended, or "open".
    endings: tuple[str, ...] = ()
    #: The sentiment of each conversation, oldest first: (when it began, sentiment).
    sentiment: tuple[tuple[datetime, str], ...] = ()
    #: Confirmed contact data: (kind, value, source).
    details: tuple[tuple[str, str, str], ...] = ()
    suggestions: tuple[Suggestion, ...] = ()


@dataclass(frozen=True, slots=True)
class SkillRow:
    name: str
    chat_channel: str
    description: str
    examples: int
    open_conversations: int


@dataclass(frozen=True, slots=True)
class SkillsView:
    skills: tuple[SkillRow, ...]
    default_skill: str


@dataclass(frozen=True, slots=True)
class LogView:
    short_id: str
    entries: tuple[tuple[datetime, str], ...]


@dataclass(frozen=True, slots=True)
class HomeView:
    """The App Home tab of one person."""

    user_id: str
    mine: tuple[QueueEntry, ...]
    queues: tuple[QueueView, ...]
    snoozed: tuple[QueueEntry, ...]


def reference_of(text: str) -> ConversationRef:
    """A typed conversation name: a link becomes ``ByMessage``, anything else ``ByText``."""
    match = _LINK.search(text.strip())
    if match is None:
        return ByText(text.strip())
    channel, seconds, micros, query = match.groups()
    thread = _THREAD_TS.search(query or "")
    return ByMessage(channel, f"{seconds}.{micros}", thread.group(1) if thread else "")


async def find_conversation(ref: ConversationRef) -> Conversation:
    """The conversation ``ref`` names, or ``ActionRefused`` saying why there is none."""
    if isinstance(ref, ByMessage):
        found = await conversation_of_message(ref.chat_channel, ref.ts, ref.thread_ts)
        if found is None:
            raise ActionRefused("That message is not part of a Switchboard conversation.")
        return found
    text = ref.text.lower().strip("`")
    if not _SHORT_ID.match(text):
        raise ActionRefused(
            f"`{ref.text}` does not name a conversation: use the short id on its root message "
            "(like `k7q2ab`) or a link to one of its messages."
        )
    # The tokens starting with ``text`` are the first ones from ``text`` on, in the token
    # index's order; LIKE 'text%' could not use that index under most collations.
    following = await Conversation.filter(token__gte=text).order_by("token").limit(2)
    found_all = [c for c in following if c.token.startswith(text)]
    if not found_all:
        raise ActionRefused(f"No conversation `{text}`.")
    if len(found_all) > 1:
        raise ActionRefused(f"`{text}` fits more than one conversation; give more of its id.")
    return found_all[0]


async def conversation_of_message(
    chat_channel: str, ts: str, thread_ts: str = ""
) -> Conversation | None:
    """The conversation a Slack message belongs to, in its current or a former thread."""
    candidates = [t for t in (thread_ts, ts) if t]
    found = await Conversation.filter(
        chat_channel=chat_channel, chat_thread_ts__in=candidates
    ).first()
    if found is not None:
        return found
    found = await Conversation.filter(
        former_threads__chat_channel=chat_channel, former_threads__chat_thread_ts__in=candidates
    ).first()
    if found is not None:
        return found
    ids = (
        await Message.filter(chat_ts__in=candidates, conversation_id__isnull=False)
        .limit(1)
        .values_list("conversation_id", flat=True)
    )
    return await Conversation.get_or_none(id=ids[0]) if ids else None


def _entries(conversations: list[Conversation]) -> tuple[QueueEntry, ...]:
    """The list lines of ``conversations``, read with their identity.

    The identities come by ``prefetch_related``: one query for the few rows shown, after the
    limit; a join would be planned before it, over every identity.
    """
    return tuple(
        QueueEntry(
            short_id=short_id(c),
            subject=c.subject,
            customer=c.identity.display_name or c.identity.address,
            channel=c.channel,
            skill=c.skill,
            priority=c.priority,
            status=c.status.value,
            owner=c.owner,
            created_at=c.created_at,
            snoozed_until=c.snoozed_until,
            chat_channel=c.chat_channel,
            chat_thread_ts=c.chat_thread_ts,
        )
        for c in conversations
    )


def _most_urgent_first(query: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """``query`` ordered by priority (urgent first), then oldest first."""
    rank = Case(
        *(When(priority=priority, then=str(rank)) for priority, rank in PRIORITY_RANK.items()),
        default=str(len(PRIORITY_RANK)),
    )
    return query.annotate(rank=rank).order_by("rank", "created_at", "id")


async def _first(query: QuerySet[Conversation], limit: int) -> tuple[QueueEntry, ...]:
    """The ``limit`` most urgent and oldest of ``query``."""
    return _entries(await _most_urgent_first(query).prefetch_related("identity").limit(limit))


class Lookups:
    """Read-only answers for commands and the App Home."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock

    def _waiting(self) -> QuerySet[Conversation]:
        """Open conversations that are not snoozed."""
        awake = Q(snoozed_until__isnull=True) | Q(snoozed_until__lte=self.clock())
        return Conversation.filter(awake, status=ConversationStatus.OPEN)

    async def queue(self, skill: str = "", limit: int = 20) -> QueueView:
        if skill and skill != "triage" and not await Skill.exists(name=skill):
            raise ActionRefused(f"There is no skill `{skill}`.")
        waiting = self._waiting().filter(skill=skill) if skill else self._waiting()
        due = await self._soonest_due(waiting, limit)
        rest = await _first(waiting.exclude(id__in=[d[0].id for d in due]), limit - len(due))
        return QueueView(skill, (*self._due_entries(due), *rest), await waiting.count())

    async def _soonest_due(
        self, waiting: QuerySet[Conversation], limit: int
    ) -> list[tuple[Conversation, str, datetime, int]]:
        """The conversations of ``waiting`` whose running deadline runs out first.

        Each with that deadline's target, due moment and length (working seconds).
        """
        if not self.settings.sla.enabled or limit <= 0:
            return []
        clocks = (
            await SlaClock.filter(
                due_at__isnull=False, conversation_id__in=Subquery(waiting.values("id"))
            )
            .order_by("due_at", "id")
            .limit(limit * 3)  # a conversation has up to three clocks
            .values_list("conversation_id", "target", "due_at", "target_seconds")
        )
        soonest: dict[int, tuple[str, datetime, int]] = {}
        for conversation_id, target, due_at, target_seconds in clocks:
            soonest.setdefault(int(conversation_id), (str(target), due_at, int(target_seconds)))
        ids = list(soonest)[:limit]
        found = {
            c.id: c for c in await Conversation.filter(id__in=ids).prefetch_related("identity")
        }
        return [(found[i], *soonest[i]) for i in ids if i in found]

    def _due_entries(
        self, due: list[tuple[Conversation, str, datetime, int]]
    ) -> tuple[QueueEntry, ...]:
        """Queue lines with the time left on their soonest deadline, in business time."""
        now = self.clock()
        sla = self.settings.sla
        entries = _entries([d[0] for d in due])
        shown = []
        for entry, (conversation, target, due_at, target_seconds) in zip(entries, due, strict=True):
            left = sla.hours_for(conversation.skill).working_time_between(now, due_at)
            warning = timedelta(seconds=target_seconds * (100 - sla.warning_percent) / 100)
            if left <= timedelta():
                state = DeadlineState.OVERDUE
            elif left <= warning:
                state = DeadlineState.WARNING
            else:
                state = DeadlineState.RUNNING
            view = DeadlineView(LABELS[target], state, left, due_at)
            shown.append(replace(entry, deadline=view))
        return tuple(shown)

    async def customer(self, query: str) -> CustomerView:
        """A customer's conversations over every channel, by address, handle or id."""
        customer = await self._customer(query.strip())
        if customer is None:
            raise ActionRefused(
                f"No customer `{query}`: give an e-mail address, a Telegram handle "
                "(@name), a customer number or a conversation id."
            )
        identities = await Identity.filter(customer_id=customer.id).order_by("id")
        conversations = (
            await Conversation.filter(customer_id=customer.id)
            .order_by("-id")
            .prefetch_related("identity")
            .limit(20)
        )
        count = await Message.filter(conversation__customer_id=customer.id).count()
        details = await CustomerDetail.filter(customer_id=customer.id).order_by("id")
        return CustomerView(
            name=customer.name,
            identities=tuple((i.channel, i.address) for i in identities),
            conversations=_entries(list(conversations)),
            messages=count,
            customer_id=customer.id,
            endings=tuple([await _ending(c) for c in conversations]),
            sentiment=tuple(
                (c.created_at, c.sentiment) for c in reversed(conversations) if c.sentiment
            ),
            details=tuple((d.kind, d.value, d.source) for d in details),
            suggestions=await suggestions_for(customer.id, {(d.kind, d.value) for d in details}),
        )

    async def find_customer(self, query: str) -> Customer:
        """The customer ``query`` names (an address, a handle, a number or a conversation)."""
        customer = await self._customer(query.strip())
        if customer is None:
            raise ActionRefused(
                f"No customer `{query}`: give an e-mail address, a Telegram handle (@name), "
                "whatsapp:+49..., a customer number or a conversation id."
            )
        return customer

    async def identity(self, query: str) -> Identity:
        """The identity ``query`` names by its address."""
        names = {query, query.removeprefix("@"), "@" + query.removeprefix("@")}
        for prefix in ("whatsapp:", "telegram:", "webhook:"):
            if query.startswith(prefix):
                names.add(query.removeprefix(prefix))
        identity = await Identity.filter(address__in=names).first()
        if identity is None and "@" in query.strip("@"):
            identity = await Identity.filter(address__iexact=query).first()
        if identity is None:
            raise ActionRefused(f"No customer writes as `{query}`: give the address they use.")
        return identity

    async def _customer(self, query: str) -> Customer | None:
        if not query:
            return None
        query = query.removeprefix("whatsapp:")
        names = {query, query.removeprefix("@"), "@" + query.removeprefix("@")}
        identity = await Identity.filter(address__in=names).first()
        if identity is None and "@" in query.strip("@"):
            identity = await Identity.filter(address__iexact=query).first()
        if identity is not None:
            return await Customer.get(id=identity.customer_id)  # type: ignore[attr-defined]
        if query.isdigit():
            found = await Customer.get_or_none(id=int(query))
            if found is not None:
                return found
        try:
            conversation = await find_conversation(reference_of(query))
        except ActionRefused:
            return None
        return await Customer.get(id=conversation.customer_id)  # type: ignore[attr-defined]

    async def skills(self) -> SkillsView:
        rows = []
        for skill in await Skill.all().order_by("name"):
            configured = self.settings.skill(skill.name)
            examples = await SkillExample.filter(skill=skill.name).count()
            rows.append(
                SkillRow(
                    name=skill.name,
                    chat_channel=skill.chat_channel,
                    description=skill.description,
                    examples=examples + (len(configured.examples) if configured else 0),
                    open_conversations=await Conversation.filter(
                        skill=skill.name, status=ConversationStatus.OPEN
                    ).count(),
                )
            )
        return SkillsView(tuple(rows), self.settings.triage.default_skill)

    async def log(self, conversation: Conversation, limit: int = 30) -> LogView:
        entries = (
            await AuditEntry.filter(conversation_id=conversation.id)
            .order_by("-id")
            .limit(limit)
            .values_list("created_at", "summary")
        )
        shown = tuple((when, str(summary)) for when, summary in reversed(entries))
        return LogView(short_id(conversation), shown)

    async def home(self, user_id: str, per_skill: int = 5) -> HomeView:
        """Mine, the open queue per skill, and snoozed conversations due within a day."""
        # One pass over the open queue's ids, then the few conversations shown, in one query.
        waiting = await _most_urgent_first(self._waiting()).values_list("id", "skill", "owner")
        mine = [int(i) for i, _, owner in waiting if owner == user_id]
        of_skill: dict[str, list[int]] = {}
        for i, skill, _ in waiting:
            of_skill.setdefault(str(skill), []).append(int(i))
        shown_ids = mine + [i for ids in of_skill.values() for i in ids[:per_skill]]
        shown = {
            c.id: c
            for c in await Conversation.filter(id__in=shown_ids).prefetch_related("identity")
        }
        queues = tuple(
            QueueView(skill, _entries([shown[i] for i in ids[:per_skill]]), len(ids))
            for skill, ids in sorted(of_skill.items())
        )
        now = self.clock()
        snoozed = (
            await Conversation.filter(
                status=ConversationStatus.OPEN,
                snoozed_until__gt=now,
                snoozed_until__lte=now + timedelta(days=1),
            )
            .order_by("snoozed_until")
            .prefetch_related("identity")
        )
        return HomeView(user_id, _entries([shown[i] for i in mine]), queues, _entries(snoozed))


async def _ending(conversation: Conversation) -> str:
    """How a conversation ended: who closed it and when, or "open"."""
    if conversation.status is not ConversationStatus.CLOSED:
        return "open"
    closed = (
        await AuditEntry.filter(conversation_id=conversation.id, action="close")
        .order_by("-id")
        .first()
    )
    if closed is None:
        return "closed"
    return f"closed by {closed.actor_name or closed.actor_id} on {closed.created_at:%Y-%m-%d}"


#: How many of a customer's latest e-mails are read for signature data.
_SIGNATURE_MAILS = 5


async def suggestions_for(customer_id: int, known: set[tuple[str, str]]) -> tuple[Suggestion, ...]:
    """Contact data in the signatures of the customer's latest e-mails, not yet confirmed."""
    # The newest e-mail of each of the newest e-mail conversations: each read off the
    # (conversation_id, id) index, never a walk over every message.
    conversations = (
        await Conversation.filter(customer_id=customer_id, channel=ChannelKind.EMAIL)
        .order_by("-id")
        .limit(_SIGNATURE_MAILS)
        .values_list("id", flat=True)
    )
    mails = []
    for conversation_id in conversations:
        mail = (
            await Message.filter(
                conversation_id=conversation_id,
                direction=Direction.INBOUND,
                is_automated=False,
            )
            .order_by("-id")
            .only("id", "full_text", "created_at")
            .first()
        )
        if mail is not None:
            mails.append(mail)
    found: list[Suggestion] = []
    seen = set(known)
    for mail in mails:
        for index, item in enumerate(contact_data(mail.full_text)):
            if (item.kind, item.value) in seen:
                continue
            seen.add((item.kind, item.value))
            source = f"signature of the e-mail of {mail.created_at:%Y-%m-%d}"
            found.append(Suggestion(item.kind, item.value, source, f"{mail.id}.{index}"))
    return tuple(found)


async def suggestion(key: str) -> tuple[int, Suggestion]:
    """The customer and the suggestion ``key`` names, read again from its e-mail."""
    message_text, _, index_text = key.partition(".")
    if not (message_text.isdigit() and index_text.isdigit()):
        raise ActionRefused(f"`{key}` names no suggestion; use the one on the customer card.")
    mail = await Message.get_or_none(id=int(message_text)).prefetch_related("conversation")
    found = contact_data(mail.full_text) if mail is not None else []
    if mail is None or mail.conversation is None or int(index_text) >= len(found):
        raise ActionRefused("That suggestion is gone (the e-mail was removed).")
    item = found[int(index_text)]
    source = f"signature of the e-mail of {mail.created_at:%Y-%m-%d}"
    customer_id: int = mail.conversation.customer_id  # type: ignore[attr-defined]
    return customer_id, Suggestion(item.kind, item.value, source, key)

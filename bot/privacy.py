"""Data protection: forgetting a customer who asks, and removing old closed conversations.

``Privacy.forget`` removes everything stored about one customer in one transaction: their
identities, conversations, messages (both ways) with attachments, the conversations' audit
log, triage examples learned from their words and the jobs about them. In the same transaction
it queues one ``erase_thread`` job per Slack thread their conversations were shown in; the job
replaces our posts there (root card, their messages, replies copied by a move, notices) with a
dated note and deletes the files we uploaded. Messages agents wrote in those threads are theirs
in Slack: a bot token cannot change them, so they are counted and left.

``Privacy.purge_closed`` removes closed conversations whose last message or change is older
than ``[retention] closed_conversations_days`` the same way, and a customer once nothing of
theirs is left, but leaves Slack alone: Slack's own retention settings govern its threads. The
service runs it hourly as a ``purge_closed`` job, so with several replicas one of them does.

Both are safe to run again after a crash: the removal commits at once or not at all, what is
gone is not found again, and an erase job skips posts that already show its note.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q, Subquery
from tortoise.models import Model
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from bot.database import in_list
from bot.errors import ActionRefused
from bot.jobkinds import (
    CHECK_WAITING,
    ERASE_THREAD,
    PURGE_CLOSED,
    THREAD_INBOUND,
    WAKE_SNOOZED,
    ErasePayload,
    NoPayload,
    sender_key,
)
from bot.jobs import HEAD, Clock, hold_claim, promote_next, utcnow
from bot.ports import ChatPort
from bot.settings import RetentionSettings
from bot.shapes import ChannelKind, ThreadErasure
from bot.vectors import forget_vectors
from bot.workflow import first_words_of
from models import (
    UNFINISHED,
    AuditEntry,
    Conversation,
    ConversationStatus,
    Customer,
    Direction,
    FormerThread,
    Identity,
    Job,
    JobState,
    Message,
    ProblemLink,
    SkillExample,
    SlaClock,
    StoredAttachment,
    SuggestionEvent,
    SurveyAnswer,
)

log = logging.getLogger(__name__)


PURGE_EVERY = timedelta(hours=1)
# Conversations removed per purge transaction; a bigger backlog is worked off in turns.
PURGE_BATCH = 200
# Ids per statement when removing by set: far below PostgreSQL's 32,767 parameters, and each
# statement stays quick on a year of history.
_SET_SIZE = 1000

#: A check run at the start of each batch's transaction (a job's ``hold_claim``).
Hold = Callable[[BaseDBAsyncClient], Awaitable[None]]
# Examples an admin typed or the config holds are the team's words, not a customer's.
_TEAM_EXAMPLES = ("config", "admin")
_EMAIL = re.compile(r"^[^@\s<>:]+@[^@\s<>]+$")


@dataclass(frozen=True, slots=True)
class CustomerAddress:
    """How a customer is named on the command line: ``anna@example.org``, ``telegram:12345``
    (the Telegram user id), ``webhook:<source>:<sender id>``."""

    channel: ChannelKind
    address: str

    def __str__(self) -> str:
        return f"{self.channel.value}:{self.address}"


def parse_address(text: str) -> CustomerAddress:
    """The identity ``text`` names, or ``ActionRefused`` saying how to write one."""
    text = text.strip()
    kind, _, rest = text.partition(":")
    if kind in ("telegram", "webhook", "email", "whatsapp") and rest:
        channel = ChannelKind(kind)
    elif _EMAIL.match(text):
        channel, rest = ChannelKind.EMAIL, text
    else:
        channel, rest = ChannelKind.EMAIL, ""
    valid = {
        ChannelKind.EMAIL: bool(_EMAIL.match(rest)),
        ChannelKind.TELEGRAM: rest.isdigit(),
        ChannelKind.WEBHOOK: rest.count(":") >= 1 and all(rest.split(":", 1)),
        ChannelKind.WHATSAPP: rest.startswith("+") and rest[1:].isdigit(),
    }[channel]
    if not valid:
        raise ActionRefused(
            f"`{text}` names no customer: give an e-mail address (anna@example.org), "
            "telegram:<user id> (telegram:5550001111), webhook:<source>:<sender id> "
            "(webhook:widget:visitor-7) or whatsapp:<phone in E.164> (whatsapp:+4915112345678)."
        )
    return CustomerAddress(channel, rest.lower() if channel is ChannelKind.EMAIL else rest)


@dataclass(frozen=True, slots=True)
class Removal:
    """What a forget or a purge removed or, on a dry run, would remove."""

    customers: tuple[str, ...] = ()
    identities: int = 0
    conversations: int = 0
    messages: int = 0
    attachments: int = 0
    audit_entries: int = 0
    skill_examples: int = 0
    jobs: int = 0
    #: Slack threads (channel id, thread ts) whose posts are replaced by the note.
    threads: tuple[tuple[str, str], ...] = ()
    #: The ``erase_thread`` jobs queued for them.
    erase_jobs: tuple[int, ...] = ()

    @property
    def nothing(self) -> bool:
        """Whether nothing was found to remove."""
        return not (self.customers or self.conversations or self.messages or self.identities)

    def __add__(self, other: Removal) -> Removal:
        return Removal(
            self.customers + other.customers,
            self.identities + other.identities,
            self.conversations + other.conversations,
            self.messages + other.messages,
            self.attachments + other.attachments,
            self.audit_entries + other.audit_entries,
            self.skill_examples + other.skill_examples,
            self.jobs + other.jobs,
            self.threads + other.threads,
            self.erase_jobs + other.erase_jobs,
        )

    def summary(self) -> str:
        """One line with the counts, for the audit log and the command line."""
        return ", ".join(
            (
                _counted(len(self.customers), "customer"),
                _counted(self.identities, "identity", "identities"),
                _counted(self.conversations, "conversation"),
                _counted(self.messages, "message"),
                _counted(self.attachments, "attachment"),
                _counted(self.audit_entries, "audit entry", "audit entries"),
                _counted(self.skill_examples, "triage example"),
                _counted(self.jobs, "job"),
            )
        )


def _counted(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


@dataclass(frozen=True, slots=True)
class _ConversationRow:
    """The columns of a conversation that removing it reads."""

    id: int
    customer_id: int
    chat_channel: str | None
    chat_thread_ts: str | None


async def _conversation_rows(query: QuerySet[Conversation]) -> list[_ConversationRow]:
    rows = await query.values_list("id", "customer_id", "chat_channel", "chat_thread_ts")
    return [_ConversationRow(int(i), int(c), channel, ts) for i, c, channel, ts in rows]


@dataclass(slots=True)
class _Plan:
    """The rows to remove, found inside the removing transaction."""

    customers: list[Customer] = field(default_factory=list)
    identities: list[Identity] = field(default_factory=list)
    conversations: list[_ConversationRow] = field(default_factory=list)
    #: Messages of the senders not threaded yet (those of the conversations go with them).
    unthreaded_ids: list[int] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    attachments: int = 0
    audit_entries: int = 0
    example_ids: list[int] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    threads: list[tuple[int, str, str]] = field(default_factory=list)

    def removal(self, erase_jobs: tuple[int, ...] = ()) -> Removal:
        return Removal(
            customers=tuple(_label(c, self.identities) for c in self.customers),
            identities=len(self.identities),
            conversations=len(self.conversations),
            messages=len(self.message_ids),
            attachments=self.attachments,
            audit_entries=self.audit_entries,
            skill_examples=len(self.example_ids),
            jobs=len(self.job_ids),
            threads=tuple((channel, ts) for _, channel, ts in self.threads),
            erase_jobs=erase_jobs,
        )


def _label(customer: Customer, identities: list[Identity]) -> str:
    names = [f"{i.channel.value}:{i.address}" for i in identities if i.customer_id == customer.id]  # type: ignore[attr-defined]
    return f"{customer.name or '(no name)'} <{', '.join(names) or 'no identity'}>"


def erase_note(moment: datetime) -> str:
    """What an erased Slack post says instead."""
    return f"Removed at the customer's request on {moment:%Y-%m-%d}."


class Privacy:
    """Forgets customers and removes old closed conversations."""

    def __init__(self, retention: RetentionSettings, *, clock: Clock = utcnow) -> None:
        self.retention = retention
        self.clock = clock

    async def forget(
        self, who: CustomerAddress, *, actor: str = "", dry_run: bool = False
    ) -> Removal:
        """Remove everything stored about the customer ``who`` names; queue the Slack erasure.

        ``actor`` is who asked for it, for the audit log. Nothing found is not an error: a
        customer forgotten before has nothing left to remove.
        """
        async with in_transaction() as conn:
            identity = await _identity_of(who, conn)
            if identity is None:
                # Nobody yet, or no more; their messages may still wait to be threaded.
                plan = await _plan(conn, [], [], [], senders=[(who.channel, who.address)])
            else:
                customer_id: int = identity.customer_id  # type: ignore[attr-defined]
                customer = await Customer.filter(id=customer_id).using_db(conn).get()
                identities = await Identity.filter(customer_id=customer.id).using_db(conn)
                conversations = await _conversation_rows(
                    Conversation.filter(customer_id=customer.id).using_db(conn).order_by("id")
                )
                plan = await _plan(
                    conn,
                    [customer],
                    identities,
                    conversations,
                    senders=[(i.channel, i.address) for i in identities],
                )
            if dry_run or not (plan.message_ids or plan.identities or plan.customers):
                return plan.removal()
            deleted = await _remove(plan, conn)
            now = self.clock()
            erase_jobs = []
            # The erasure names the thread, not the conversation: no job about the forgotten
            # conversation is left. A post running at this moment (its job is not deleted)
            # finds its message gone on any retry.
            for _conversation_id, chat_channel, thread_ts in plan.threads:
                job = await ERASE_THREAD.enqueue(
                    ErasePayload(chat_channel, thread_ts, erase_note(now)), now=now, conn=conn
                )
                erase_jobs.append(job.id)
            removal = plan.removal(tuple(erase_jobs))
            # The audit log keeps that it happened and how much, not who it was.
            await AuditEntry.create(
                conversation=None,
                actor_id=actor[:64],
                actor_name=actor[:255],
                action="forget",
                detail={"removed": removal.summary(), "slack_threads": len(plan.threads)},
                summary=f"Removed a customer's data at their request: {removal.summary()}.",
                using_db=conn,
            )
        await promote_next(deleted.keys)
        log.info("customer forgotten", extra={"removed": removal.summary()})
        return removal

    async def purge_closed(
        self, *, dry_run: bool = False, batch: int = PURGE_BATCH, hold: Hold | None = None
    ) -> Removal:
        """Remove closed conversations older than the retention period (none when it is 0).

        Each batch commits on its own, so a purge cut off resumes where it stopped; ``hold``
        (a job's claim check) runs in each batch's transaction before it deletes anything.
        """
        cutoff = self.cutoff()
        removed = Removal()
        # Oldest first, read off the (status, updated_at) index; the conversations a batch
        # keeps (a customer wrote since, work is queued) are passed over by the next one.
        after = Q()
        while cutoff is not None:
            candidates = (
                await Conversation.filter(after, status=ConversationStatus.CLOSED)
                .filter(updated_at__lt=cutoff)
                .order_by("updated_at", "id")
                .limit(batch)
                .values_list("id", "updated_at")
            )
            if not candidates:
                break
            last_id, last_updated = candidates[-1]
            after = Q(updated_at__gt=last_updated) | Q(updated_at=last_updated, id__gt=last_id)
            ids = _ints(conversation_id for conversation_id, _ in candidates)
            removed += await self._purge(ids, cutoff, dry_run, hold)
        return removed

    def cutoff(self) -> datetime | None:
        """Closed conversations with no activity since this moment are due for removal."""
        days = self.retention.closed_conversations_days
        return self.clock() - timedelta(days=days) if days else None

    async def _purge(
        self, ids: list[int], cutoff: datetime, dry_run: bool, hold: Hold | None
    ) -> Removal:
        async with in_transaction() as conn:
            if hold is not None:
                await hold(conn)
            # Read again inside the transaction: a customer may have written meanwhile. Work
            # still queued for a conversation (a reply, a move) means it is not done with; its
            # timers (a snooze's end, a waiting check) are moot and go with it.
            recent = Message.filter(conversation_id__in=ids, created_at__gte=cutoff)
            busy = Job.filter(conversation_id__in=ids, state__in=UNFINISHED).exclude(
                kind__in=(WAKE_SNOOZED.name, CHECK_WAITING.name)
            )
            old = await _conversation_rows(
                Conversation.filter(
                    id__in=ids, status=ConversationStatus.CLOSED, updated_at__lt=cutoff
                )
                .exclude(id__in=Subquery(recent.values("conversation_id")))
                .exclude(id__in=Subquery(busy.values("conversation_id")))
                .using_db(conn)
                .order_by("id")
            )
            if not old:
                return Removal()
            # A dry run counts what would go; a purge counts what its deletes removed.
            plan = await _plan(conn, [], [], old, senders=[], count=dry_run, ended_jobs=False)
            await _add_customers_left_without_data(plan, conn)
            if dry_run:
                return plan.removal()
            deleted = await _remove(plan, conn)
            removal = replace(
                plan.removal(),
                messages=deleted.messages,
                attachments=deleted.attachments,
                audit_entries=deleted.audit_entries,
            )
            await AuditEntry.create(
                conversation=None,
                actor_id="",
                actor_name="Switchboard",
                action="retention",
                detail={"removed": removal.summary(), "cutoff": cutoff.isoformat()},
                summary=(
                    f"Removed closed conversations older than "
                    f"{self.retention.closed_conversations_days} days: {removal.summary()}."
                ),
                using_db=conn,
            )
        await promote_next(deleted.keys)
        log.info("old closed conversations removed", extra={"removed": removal.summary()})
        return removal


async def _identity_of(who: CustomerAddress, conn: BaseDBAsyncClient) -> Identity | None:
    query = Identity.filter(channel=who.channel).using_db(conn)
    found = await query.filter(address=who.address).first()
    if found is None and who.channel is ChannelKind.EMAIL:
        # Stored as the sender wrote it; the exact match above is the usual, indexed case.
        return await query.filter(address__iexact=who.address).first()
    return found


#: Jobs that ended and that the job queue deletes by itself after a few days.
_ENDED = (JobState.DONE, JobState.CANCELLED)


def _sets(ids: Sequence[int]) -> list[Sequence[int]]:
    """``ids`` cut into sets of at most ``_SET_SIZE``, one statement each."""
    return [ids[start : start + _SET_SIZE] for start in range(0, len(ids), _SET_SIZE)]


async def _plan(
    conn: BaseDBAsyncClient,
    customers: list[Customer],
    identities: list[Identity],
    conversations: list[_ConversationRow],
    *,
    senders: Iterable[tuple[ChannelKind, str]],
    count: bool = True,
    ended_jobs: bool = True,
) -> _Plan:
    """Everything stored with ``conversations`` and, not yet threaded, from ``senders``.

    Without ``count``, the conversations' messages, attachments and audit entries are not
    looked at here: ``_remove`` counts them as it deletes them. Without ``ended_jobs``, their
    jobs that ended are left to the job queue's own tidying.
    """
    senders = list(senders)
    conversation_ids = [c.id for c in conversations]
    plan = _Plan(customers=customers, identities=identities, conversations=conversations)
    if senders:
        unthreaded = Q(id__in=[])
        for channel, address in senders:
            unthreaded |= Q(direction=Direction.INBOUND, channel=channel, sender_address=address)
        plan.unthreaded_ids = _ints(
            await Message.filter(unthreaded, conversation_id__isnull=True)
            .using_db(conn)
            .values_list("id", flat=True)
        )
    texts: set[str] = set()
    former: list[tuple[int, str, str]] = []
    for ids in _sets(conversation_ids):
        if count:
            plan.message_ids += _ints(
                await Message.filter(conversation_id__in=ids)
                .using_db(conn)
                .values_list("id", flat=True)
            )
            plan.audit_entries += (
                await AuditEntry.filter(conversation_id__in=ids).using_db(conn).count()
            )
        texts.update((await first_words_of(list(ids), conn)).values())
        former += [
            (int(conversation_id), str(channel), str(ts))
            for conversation_id, channel, ts in await FormerThread.filter(conversation_id__in=ids)
            .using_db(conn)
            .values_list("conversation_id", "chat_channel", "chat_thread_ts")
        ]
    plan.message_ids += plan.unthreaded_ids
    for ids in _sets(plan.message_ids if count else []):
        plan.attachments += await StoredAttachment.filter(message_id__in=ids).using_db(conn).count()
    texts.discard("")
    plan.example_ids = _ints(
        await SkillExample.filter(text__in=sorted(texts))
        .exclude(source__in=_TEAM_EXAMPLES)
        .using_db(conn)
        .values_list("id", flat=True)
    )
    plan.job_ids = await _jobs_about(
        conversation_ids, set(plan.message_ids), senders, conn, ended_too=ended_jobs
    )
    plan.threads = [
        (c.id, c.chat_channel, c.chat_thread_ts)
        for c in conversations
        if c.chat_channel and c.chat_thread_ts
    ] + former
    return plan


async def _jobs_about(
    conversation_ids: list[int],
    message_ids: set[int],
    senders: Iterable[tuple[ChannelKind, str]],
    conn: BaseDBAsyncClient,
    *,
    ended_too: bool,
) -> list[int]:
    """Jobs about these conversations and messages, except those running right now.

    A running job finds its rows gone and ends; its payload holds only ids. Without
    ``ended_too``, jobs done or cancelled are left to ``prune_finished``, which deletes them
    days after they ended (long before a closed conversation's retention period is over).
    """
    skipped = [JobState.RUNNING] if ended_too else [JobState.RUNNING, *_ENDED]
    by_conversation = await (
        Job.filter(conversation_id__in=conversation_ids)
        .exclude(state__in=skipped)
        .using_db(conn)
        .values_list("id", flat=True)
    )
    # A sender's threading jobs share a key cut to 64 characters, which two long addresses
    # can share too: only the jobs carrying one of these messages go.
    sender_keys = [sender_key(channel, address) for channel, address in senders]
    if not sender_keys:
        return sorted(set(_ints(by_conversation)))
    by_sender = [
        int(job_id)
        for job_id, payload in await Job.filter(
            serial_key__in=sender_keys, kind=THREAD_INBOUND.name
        )
        .exclude(state=JobState.RUNNING)
        .using_db(conn)
        .values_list("id", "payload")
        if isinstance(payload, dict) and payload.get("message_id") in message_ids
    ]
    return sorted(set(_ints(by_conversation)) | set(by_sender))


def _ints(values: Iterable[Any]) -> list[int]:
    """A column of ids as read with ``values_list(..., flat=True)``."""
    return [int(value) for value in values]


async def _add_customers_left_without_data(plan: _Plan, conn: BaseDBAsyncClient) -> None:
    """Add the customers (and identities) whose every conversation is in ``plan``."""
    removing = [c.id for c in plan.conversations]
    customer_ids = {c.customer_id for c in plan.conversations}
    kept = set(
        _ints(
            await Conversation.filter(customer_id__in=customer_ids)
            .exclude(id__in=removing)
            .using_db(conn)
            .distinct()
            .values_list("customer_id", flat=True)
        )
    )
    gone = customer_ids - kept
    if not gone:
        return
    identities = await Identity.filter(customer_id__in=gone).using_db(conn)
    waiting = Q(id__in=[])
    for identity in identities:
        waiting |= Q(channel=identity.channel, sender_address=identity.address)
    # A message of theirs waiting to be threaded still needs its identity.
    still_writing = (
        set(
            await Message.filter(waiting, conversation_id__isnull=True)
            .using_db(conn)
            .values_list("channel", "sender_address")
        )
        if identities
        else set()
    )
    gone -= {i.customer_id for i in identities if (i.channel, i.address) in still_writing}  # type: ignore[attr-defined]
    if not gone:
        return
    plan.customers = list(await Customer.filter(id__in=gone).using_db(conn))
    plan.identities = [i for i in identities if i.customer_id in gone]  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Deleted:
    """What ``_remove`` deleted, counted by its deletes."""

    #: The serial keys of the deleted heads of queues.
    keys: set[str]
    messages: int
    attachments: int
    audit_entries: int


async def _remove(plan: _Plan, conn: BaseDBAsyncClient) -> _Deleted:
    """Delete the rows of ``plan`` by set, children first (the schema cascades the same way).

    Once this commits, ``promote_next`` of the deleted heads' keys lets the jobs that waited
    behind them go (a key cut to 64 characters is shared by senders). Finished jobs hold up
    nothing, and a deleted queued job has its head still there.
    """
    keys: set[str] = set()
    messages = attachments = audit_entries = 0
    for ids in _sets(plan.job_ids):
        # Running jobs are not in the plan, so these are pending or parked heads.
        job_keys = Job.filter(id__in=ids, state__in=HEAD).using_db(conn).distinct()
        keys.update(str(key) for key in await job_keys.values_list("serial_key", flat=True))
        await Job.filter(id__in=ids).using_db(conn).delete()
    for ids in _sets(plan.unthreaded_ids):
        attachments += await StoredAttachment.filter(message_id__in=ids).using_db(conn).delete()
        messages += await Message.filter(id__in=ids).using_db(conn).delete()
    for ids in _sets([c.id for c in plan.conversations]):
        await forget_vectors(ids, conn)
        # Plain statements: these run for every batch of retention, and the query builder
        # took longer to write them than the database to run them.
        of_these = f"conversation_id IN {in_list(conn, len(ids))}"
        for table in _CONVERSATION_ROWS:
            await _delete(conn, table, of_these, ids)
        attachments += await _delete(
            conn, StoredAttachment, f"message_id IN (SELECT id FROM messages WHERE {of_these})", ids
        )
        messages += await _delete(conn, Message, of_these, ids)
        audit_entries += await _delete(conn, AuditEntry, of_these, ids)
        await _delete(conn, Conversation, f"id IN {in_list(conn, len(ids))}", ids)
    if plan.identities:
        await Identity.filter(id__in=[i.id for i in plan.identities]).using_db(conn).delete()
    if plan.customers:
        await Customer.filter(id__in=[c.id for c in plan.customers]).using_db(conn).delete()
    for ids in _sets(plan.example_ids):
        await SkillExample.filter(id__in=ids).using_db(conn).delete()
    return _Deleted(keys, messages, attachments, audit_entries)


#: The rows that only a conversation's id ties to it, deleted with it. Survey comments are the
#: customer's words: they go with the conversation.
_CONVERSATION_ROWS: tuple[type[Model], ...] = (
    ProblemLink,
    SuggestionEvent,
    FormerThread,
    SlaClock,
    SurveyAnswer,
)


async def _delete(
    conn: BaseDBAsyncClient, model: type[Model], where: str, ids: Sequence[int]
) -> int:
    """``DELETE FROM`` the model's table ``WHERE`` (placeholders for ``ids``); rows deleted."""
    deleted, _ = await conn.execute_query(
        f"DELETE FROM {model._meta.db_table} WHERE {where}", list(ids)
    )
    return int(deleted)


class EraseThread:
    """Job: replace our posts in one Slack thread of a forgotten customer with the note."""

    def __init__(self, chat: ChatPort) -> None:
        self.chat = chat
        #: What the runs of this handler changed so far (the command line reports it).
        self.erased = ThreadErasure()

    async def run(self, job: Job) -> None:
        payload = ERASE_THREAD.payload_of(job)
        erased = await self.chat.erase_thread(payload.chat_channel, payload.thread_ts, payload.note)
        self.erased += erased
        log.info(
            "slack thread erased",
            extra={"job": job.id, "replaced": erased.replaced, "left": erased.left},
        )

    async def give_up(self, job: Job, reason: str) -> None:
        log.error(
            "could not erase a forgotten customer's Slack thread; erase it by hand",
            extra={"job": job.id, "payload": job.payload, "reason": reason},
        )


class PurgeClosed:
    """Job: remove old closed conversations, then come back in an hour."""

    def __init__(self, privacy: Privacy) -> None:
        self.privacy = privacy

    async def run(self, job: Job) -> None:
        await self.privacy.purge_closed(hold=lambda conn: hold_claim(job, conn))
        await schedule_purge(self.privacy, after=PURGE_EVERY)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("retention purge failed", extra={"job": job.id, "reason": reason})
        await schedule_purge(self.privacy, after=PURGE_EVERY)


async def schedule_purge(privacy: Privacy, *, after: timedelta = timedelta(0)) -> None:
    """Queue the next purge, unless retention is off or one is queued already.

    Replicas starting at once may each queue one; the first to run sees the other waiting
    and queues no next one, so a single purge job remains.
    """
    if not privacy.retention.closed_conversations_days:
        return
    waiting = (JobState.PENDING, JobState.QUEUED)
    if await Job.filter(kind=PURGE_CLOSED.name, state__in=waiting).exists():
        return
    await PURGE_CLOSED.enqueue(NoPayload(), run_at=privacy.clock() + after)

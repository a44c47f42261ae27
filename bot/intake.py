"""Intake: store an inbound message and its first job, in one transaction.

Adapters call ``Intake.accept`` and give the sender its success answer (SMTP 250, HTTP 200)
only after it returns: from then on the message is durable and everything else is a job.
The first job (``ThreadInbound``) finds the message's conversation and hands on its post.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.fields.data import JSON_DUMPS
from tortoise.transactions import in_transaction

from bot.conversations import find_conversation, new_token
from bot.database import Prepared, insert_rows, placeholders
from bot.jobkinds import (
    POST_INBOUND,
    THREAD_INBOUND,
    MessagePayload,
    ThreadPayload,
    sender_of,
)
from bot.jobs import Clock, enqueue_jobs, run_next, utcnow
from bot.metrics import MESSAGES_IN
from bot.people import recognise
from bot.pipeline import inbound_of
from bot.settings import ThreadingSettings
from bot.shapes import ChannelKind, InboundMessage
from bot.subjects import normalise_subject
from models import (
    Conversation,
    ConversationStatus,
    Customer,
    Direction,
    Identity,
    Job,
    Message,
    StoredAttachment,
)

log = logging.getLogger(__name__)

# Messages committed in one transaction at most; bounds how long the first of them waits.
_MAX_GROUP = 64


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: int
    duplicate: bool = False


def dedup_key(message: InboundMessage) -> str:
    return f"{message.channel.value}:{message.external_id}"


class Intake:
    """Accepts inbound messages durably; ``on_stored`` wakes the job runner."""

    def __init__(
        self,
        *,
        clock: Clock = utcnow,
        on_stored: Callable[[InboundMessage], None] | None = None,
    ) -> None:
        self.clock = clock
        self.on_stored = on_stored
        self._waiting: list[tuple[InboundMessage, asyncio.Future[Accepted]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def accept(self, message: InboundMessage) -> Accepted:
        """Store ``message`` with its job; a message seen before is not stored again.

        Messages arriving together are committed together (group commit): while one
        transaction commits, the next ones queue up and share the following commit.
        """
        waiter: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.append((message, waiter))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="intake-commit")
        accepted = await waiter
        MESSAGES_IN.labels(
            message.channel.value, "duplicate" if accepted.duplicate else "accepted"
        ).inc()
        if not accepted.duplicate and self.on_stored is not None:
            self.on_stored(message)
        return accepted

    async def _commit_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:_MAX_GROUP]
            del self._waiting[:_MAX_GROUP]
            try:
                async with in_transaction() as conn:
                    results = await self._store_group([m for m, _ in batch], conn)
            except Exception:
                # One message spoiled the shared transaction (most likely a race on a unique
                # key with another replica): store each on its own so the others still go in.
                for message, waiter in batch:
                    await self._accept_alone(message, waiter)
                continue
            for (_, waiter), accepted in zip(batch, results, strict=True):
                if not waiter.done():
                    waiter.set_result(accepted)

    async def _accept_alone(
        self, message: InboundMessage, waiter: asyncio.Future[Accepted]
    ) -> None:
        # Two tries: a concurrent delivery of the same message (or a new customer's first two
        # messages at once) loses the race on a unique key and is then found on the second.
        for attempt in range(2):
            try:
                async with in_transaction() as conn:
                    accepted = await self._store_once(message, conn)
            except IntegrityError as exc:
                if attempt == 0:
                    continue
                error: BaseException = exc
            except Exception as exc:
                error = exc
            else:
                if not waiter.done():
                    waiter.set_result(accepted)
                return
            if not waiter.done():
                waiter.set_exception(error)
            return

    async def _store_once(self, message: InboundMessage, conn: BaseDBAsyncClient) -> Accepted:
        (accepted,) = await self._store_group([message], conn)
        return accepted

    async def _store_group(
        self, messages: list[InboundMessage], conn: BaseDBAsyncClient
    ) -> list[Accepted]:
        """Store the messages not seen before with their jobs, in a few statements a group.

        Only what makes a message durable happens here; finding its conversation is its first
        job (``ThreadInbound``), so the senders' answers wait for the fewest statements.
        """
        keys, ids = await _dedup_keys(messages, conn)
        fresh: dict[str, InboundMessage] = {}
        for message, key in zip(messages, keys, strict=True):
            if key not in ids:
                fresh.setdefault(key, message)
        if fresh:
            now = self.clock()
            stored = await insert_rows(
                conn,
                "messages",
                _UNTHREADED,
                [_unthreaded(message, key, now) for key, message in fresh.items()],
                returning="dedup_key, id",
            )
            ids.update((str(row["dedup_key"]), int(row["id"])) for row in stored)
            # One sender's messages are threaded in the order they came, so their second
            # message finds the conversation their first one opened.
            await enqueue_jobs(
                [
                    THREAD_INBOUND.new(
                        ThreadPayload(
                            ids[key],
                            sender_of(m.channel, m.sender_address),
                            files=bool(m.attachments),
                        ),
                        run_at=now,
                    )
                    for key, m in fresh.items()
                ],
                conn,
            )
            attachments = [
                StoredAttachment(
                    message_id=ids[key],
                    filename=a.filename[:255],
                    content_type=a.content_type[:255],
                    size=len(a.data),
                    data=a.data,
                )
                for key, m in fresh.items()
                for a in m.attachments
            ]
            if attachments:
                await StoredAttachment.bulk_create(attachments, using_db=conn)
        stored_now = set(fresh)
        results = []
        for key in keys:
            results.append(Accepted(ids[key], duplicate=key not in stored_now))
            stored_now.discard(key)
        return results


def _fingerprint(sender_address: str, subject: str, text: str) -> str:
    """What a message is: its sender and its content."""
    content = f"{sender_address}\n{subject}\n{text}"
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]


async def _dedup_keys(
    messages: list[InboundMessage], conn: BaseDBAsyncClient
) -> tuple[list[str], dict[str, int]]:
    """Each message's dedup key: its label, or label and fingerprint when the label collides.

    Also returns the ids of the keys already stored (one query serves both).

    A message is a duplicate only when its sender and content match what was stored under its
    label (``dedup_key``). A different message that reuses the label (a Message-ID reused by
    another sender, a broken mailer) is stored under the label plus its fingerprint, so it is
    shown, and a re-delivery of it is still recognised.
    """
    labels = [dedup_key(m) for m in messages]
    # Compared as stored (``_unthreaded`` cuts long fields).
    fingerprints = [_fingerprint(m.sender_address[:320], m.subject[:998], m.text) for m in messages]
    own_keys = [
        f"{label[:480]}#{fingerprint}"
        for label, fingerprint in zip(labels, fingerprints, strict=True)
    ]
    wanted = [*labels, *own_keys]
    _, rows = await conn.execute_query(
        "SELECT dedup_key, id, sender_address, subject, text FROM messages"
        f" WHERE dedup_key IN ({', '.join(placeholders(conn, len(wanted)))})",
        wanted,
    )
    ids = {str(row["dedup_key"]): int(row["id"]) for row in rows}
    stored = {
        str(row["dedup_key"]): _fingerprint(
            str(row["sender_address"]), str(row["subject"]), str(row["text"])
        )
        for row in rows
    }
    keys: list[str] = []
    for message, label, fingerprint, own_key in zip(
        messages, labels, fingerprints, own_keys, strict=True
    ):
        if own_key in stored:
            # Stored before beside another message under the label, which may be gone since
            # (forgotten, purged): still a re-delivery.
            keys.append(own_key)
            continue
        owner = stored.setdefault(label, fingerprint)
        if owner == fingerprint:
            keys.append(label)
            continue
        log.warning(
            "a different message reuses a stored message's id: stored as a new message",
            extra={"label": label[:200], "sender": message.sender_address},
        )
        keys.append(own_key)
    return keys, ids


_UNTHREADED = (
    "created_at", "conversation_id", "direction", "channel", "dedup_key", "external_id",
    "thread_key", "conversation_token", "sender_name", "sender_address", "author_id", "subject",
    "text", "full_text", "replies_to", "raw_source", "is_automated", "automated_reason",
    "chat_ts", "chat_files_posted", "delivery_state", "delivery_error", "template", "claims",
    "response_seconds",
)  # fmt: skip


def _unthreaded(message: InboundMessage, key: str, received_at: datetime) -> tuple[object, ...]:
    """The row (``_UNTHREADED``'s columns) of an inbound message that has no conversation yet,
    received by our clock."""
    claims = [list(claim) for claim in message.claims]
    return (
        received_at, None, Direction.INBOUND.value, message.channel.value, key,
        message.external_id[:998], message.thread_key, message.conversation_token,
        message.sender_name[:255], message.sender_address[:320], "", message.subject[:998],
        message.text, message.full_text, JSON_DUMPS(list(message.replies_to)),
        message.raw or None, message.is_automated, message.automated_reason[:255],
        None, False, None, "", None, JSON_DUMPS(claims) if claims else None,
        None,
    )  # fmt: skip


class ThreadInbound:
    """The first job after intake: put a message in its conversation, then hand on its post.

    A message in a chat whose conversation was closed starts a new conversation, except on the
    channels in ``reopen_closed``, where it reopens the old one.
    """

    def __init__(
        self,
        threading: ThreadingSettings,
        *,
        reopen_closed: Collection[ChannelKind] = (),
        clock: Clock = utcnow,
    ) -> None:
        self.threading = threading
        self.clock = clock
        self.reopen_closed = frozenset(reopen_closed)

    async def run(self, job: Job) -> None:
        payload = THREAD_INBOUND.payload_of(job)
        message_id = payload.message_id
        async with in_transaction() as conn:
            message = await _MESSAGE(message_id, conn=conn)
            # None: the message was removed (forgotten) before it was threaded.
            if message is None or message.conversation_id is not None:  # type: ignore[attr-defined]
                return
            inbound = inbound_of(message, ())
            received_at = message.created_at
            identity, new_sender = await _identity(inbound, conn)
            await recognise(identity, message.claims or [], conn, new=new_sender, now=self.clock())
            conversation = await find_conversation(
                inbound,
                identity,
                self.threading,
                received_at,
                conn,
                reopen_closed=self.reopen_closed,
                new_sender=new_sender,
            )
            opened = conversation is None
            if conversation is None:
                conversation = await Conversation.create(
                    token=new_token(),
                    customer_id=identity.customer_id,  # type: ignore[attr-defined]
                    identity=identity,
                    channel=message.channel,
                    thread_key=message.thread_key,
                    subject=message.subject[:998],
                    normalised_subject=normalise_subject(message.subject)[:998],
                    last_inbound_at=received_at,
                    using_db=conn,
                )
            else:
                conversation.last_inbound_at = received_at
                conversation.status = ConversationStatus.OPEN
                await conversation.save(
                    using_db=conn, update_fields=["last_inbound_at", "status", "updated_at"]
                )
            message.conversation = conversation
            await message.save(using_db=conn, update_fields=["conversation_id"])
            post = POST_INBOUND.new(
                MessagePayload(message.id, conversation.id, files=payload.files),
                run_at=self.clock(),
            )
            # This worker posts it next, unless an earlier post of the conversation is still
            # to go. A new conversation's key has nothing to wait for.
            await run_next(post, conn, new_key=opened)

    async def give_up(self, job: Job, reason: str) -> None:
        # Only the database can make threading fail; the message stays stored for a replay.
        log.error("could not thread a message", extra={"job": job.id, "reason": reason})


# The queries run for every message, their SQL built once.
_MESSAGE = Prepared(lambda message_id: Message.filter(id=message_id).first(), 1)
_IDENTITY = Prepared(
    lambda channel, address: Identity.filter(channel=channel, address=address).first(),
    ChannelKind.EMAIL,
    "someone@example.org",
)


async def _identity(message: InboundMessage, conn: BaseDBAsyncClient) -> tuple[Identity, bool]:
    """The sender's identity, created with a new customer the first time; True if new."""
    identity = await _IDENTITY(message.channel, message.sender_address, conn=conn)
    if identity is not None:
        if message.sender_name and identity.display_name != message.sender_name:
            identity.display_name = message.sender_name[:255]
            await identity.save(using_db=conn, update_fields=["display_name"])
        return identity, False
    customer = await Customer.create(name=message.sender_name[:255], using_db=conn)
    identity = await Identity.create(
        customer=customer,
        channel=message.channel,
        address=message.sender_address[:320],
        display_name=message.sender_name[:255],
        using_db=conn,
    )
    return identity, True

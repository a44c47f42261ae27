"""One person behind several identities: linking by evidence or by a lead, and undoing it.

A customer is a person; each way they wrote is an identity of theirs. Two customers are joined
(``merge``) when the evidence is strong: an address the sender gave as their own (the e-mail a
web widget sent with the message, their own Telegram contact's phone number) is another
customer's e-mail address or WhatsApp number. Leads join what the evidence cannot
(``/switchboard customer link A B``). Every link is kept as a ``CustomerLink`` with what moved,
written to the audit log, and undone by ``unlink``; forgetting a linked person forgets all of
them, and retention keeps the person while any conversation of theirs is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.database import Prepared
from bot.errors import ActionRefused
from bot.jobkinds import SHOW_CHANGE, SHOW_OTHERS, ChangePayload, OthersPayload
from bot.jobs import Clock, enqueue_jobs, utcnow
from bot.lookups import Suggestion
from bot.ports import ChatPort
from bot.roles import Actor
from bot.shapes import ChannelKind
from models import (
    AuditEntry,
    Conversation,
    Customer,
    CustomerDetail,
    CustomerLink,
    Identity,
    Job,
)

log = logging.getLogger(__name__)

#: What a claimed address is on the channel that uses it as an identity.
_CLAIMED_ON = {"email": ChannelKind.EMAIL, "phone": ChannelKind.WHATSAPP}
_CLAIM_OF = {channel: kind for kind, channel in _CLAIMED_ON.items()}
_CHANNEL_WORDS = {
    ChannelKind.EMAIL: "e-mail",
    ChannelKind.TELEGRAM: "Telegram",
    ChannelKind.WEBHOOK: "web",
    ChannelKind.WHATSAPP: "WhatsApp",
}


def claim_source(channel: ChannelKind, kind: str) -> str:
    """Where a claim came from, in words for the card."""
    if channel is ChannelKind.TELEGRAM:
        return "shared as their own Telegram contact"
    if channel is ChannelKind.WEBHOOK:
        return f"given as their {kind} by the web widget"
    return f"given by them on {_CHANNEL_WORDS[channel]}"


async def recognise(
    identity: Identity,
    claims: Sequence[Sequence[str]],
    conn: BaseDBAsyncClient,
    *,
    new: bool,
    now: datetime,
) -> list[int]:
    """Keep what ``identity``'s sender claims, and join the customers the evidence names.

    Returns the ids of the conversations that joined ``identity``'s customer (their threads
    are told). ``identity.customer_id`` is the person's customer afterwards.
    """
    customer_id: int = identity.customer_id  # type: ignore[attr-defined]
    found: dict[int, str] = {}
    for claim in claims:
        if len(claim) != 2 or claim[0] not in _CLAIMED_ON or not claim[1]:
            continue
        kind, value = str(claim[0]), str(claim[1])
        source = claim_source(identity.channel, kind)
        known = CustomerDetail.filter(customer_id=customer_id, kind=kind, value=value)
        if not await known.using_db(conn).exists():
            await CustomerDetail.create(
                customer_id=customer_id,
                kind=kind,
                value=value[:512],
                source=source,
                evidence=True,
                using_db=conn,
            )
        match = (
            await Identity.filter(channel=_CLAIMED_ON[kind], address=value)
            .exclude(customer_id=customer_id)
            .using_db(conn)
            .first()
        )
        if match is not None:
            found[match.customer_id] = (  # type: ignore[attr-defined]
                f"{value} ({source}) is their {_CHANNEL_WORDS[match.channel]} address"
            )
    # A known identity was checked when it was new; a later claim of theirs is checked above.
    own_kind = _CLAIM_OF.get(identity.channel) if new else None
    if own_kind is not None:
        details = (
            await CustomerDetail.filter(kind=own_kind, value=identity.address, evidence=True)
            .exclude(customer_id=customer_id)
            .using_db(conn)
        )
        for detail in details:
            found[detail.customer_id] = (  # type: ignore[attr-defined]
                f"{identity.address} was given as theirs before ({detail.source})"
            )
    moved: list[int] = []
    for other_id, reason in found.items():
        customer_id, conversations, link_id = await merge(
            customer_id, other_id, reason=f"the same person: {reason}", actor=None, conn=conn
        )
        moved += conversations
        await point_threads(customer_id, link_id, conn, now=now)
    identity.customer_id = customer_id
    return moved


async def point_threads(
    customer_id: int, link_id: int, conn: BaseDBAsyncClient, *, now: datetime
) -> None:
    """Queue, for each thread of the person, links to their other threads."""
    shown = (
        await Conversation.filter(customer_id=customer_id, chat_thread_ts__isnull=False)
        .using_db(conn)
        .values("id")
    )
    await enqueue_jobs(
        [SHOW_OTHERS.new(OthersPayload(int(row["id"]), link_id), run_at=now) for row in shown],
        conn,
    )


async def merge(
    first_id: int,
    second_id: int,
    *,
    reason: str,
    actor: Actor | None,
    conn: BaseDBAsyncClient,
) -> tuple[int, list[int], int]:
    """Join two customers into the older one; returns its id, the conversations moved and
    the link's id."""
    keep_id, gone_id = sorted((first_id, second_id))
    gone = await Customer.filter(id=gone_id).using_db(conn).first()
    if gone is None or keep_id == gone_id:
        return keep_id, [], 0
    identities = await Identity.filter(customer_id=gone_id).using_db(conn).values("id")
    identity_ids = [int(row["id"]) for row in identities]
    conversations = await Conversation.filter(customer_id=gone_id).using_db(conn).values("id")
    conversation_ids = [int(row["id"]) for row in conversations]
    await Identity.filter(customer_id=gone_id).using_db(conn).update(customer_id=keep_id)
    await Conversation.filter(customer_id=gone_id).using_db(conn).update(customer_id=keep_id)
    await CustomerDetail.filter(customer_id=gone_id).using_db(conn).update(customer_id=keep_id)
    await CustomerLink.filter(customer_id=gone_id).using_db(conn).update(customer_id=keep_id)
    link = await CustomerLink.create(
        customer_id=keep_id,
        identity_ids=identity_ids,
        conversation_ids=conversation_ids,
        former_name=gone.name[:255],
        reason=reason[:255],
        actor_id=actor.user_id if actor is not None else "",
        using_db=conn,
    )
    who = actor.label if actor is not None else "Switchboard"
    await AuditEntry.create(
        conversation=None,
        actor_id=actor.user_id if actor is not None else "",
        actor_name=who[:255],
        action="link",
        detail={"customer": keep_id, "joined": gone_id, "identities": identity_ids},
        summary=f"{who} linked customer {gone_id} to customer {keep_id}: {reason}",
        using_db=conn,
    )
    await Customer.filter(id=gone_id).using_db(conn).delete()
    log.info("customers linked", extra={"customer": keep_id, "joined": gone_id})
    return keep_id, conversation_ids, link.id


class People:
    """A lead's links and unlinks, audited and shown in the conversations' threads."""

    def __init__(
        self, *, clock: Clock = utcnow, on_queued: Callable[[], None] | None = None
    ) -> None:
        self.clock = clock
        self.on_queued = on_queued

    async def link(self, actor: Actor, first: Customer, second: Customer) -> str:
        """Join two customers into one person; returns the answer."""
        if first.id == second.id:
            raise ActionRefused(f"Those are already one customer ({first.id}).")
        reason = f"linked by {actor.label}"
        async with in_transaction() as conn:
            keep_id, _, link_id = await merge(
                first.id, second.id, reason=reason, actor=actor, conn=conn
            )
            await self._tell_threads(actor, keep_id, conn)
            await point_threads(keep_id, link_id, conn, now=self.clock())
        self._woken()
        return (
            f"Linked: customers {first.id} and {second.id} are one customer now ({keep_id}). "
            f"`customer unlink <address>` undoes it."
        )

    async def unlink(self, actor: Actor, identity: Identity) -> str:
        """Undo the link that brought ``identity`` to its customer; returns the answer."""
        customer_id: int = identity.customer_id  # type: ignore[attr-defined]
        links = await CustomerLink.filter(customer_id=customer_id, undone_at__isnull=True).order_by(
            "-id"
        )
        link = next((k for k in links if identity.id in k.identity_ids), None)
        if link is None:
            raise ActionRefused(
                f"`{identity.address}` was not linked to another customer; nothing to undo."
            )
        async with in_transaction() as conn:
            parted = await Customer.create(name=link.former_name, using_db=conn)
            await (
                Identity.filter(id__in=link.identity_ids, customer_id=customer_id)
                .using_db(conn)
                .update(customer_id=parted.id)
            )
            await (
                Conversation.filter(id__in=link.conversation_ids, customer_id=customer_id)
                .using_db(conn)
                .update(customer_id=parted.id)
            )
            # The evidence that joined them must not join them again: a lead said otherwise.
            addresses = await Identity.filter(id__in=link.identity_ids).using_db(conn)
            for moved in addresses:
                kind = _CLAIM_OF.get(moved.channel)
                if kind is not None:
                    await (
                        CustomerDetail.filter(
                            customer_id=customer_id, kind=kind, value=moved.address, evidence=True
                        )
                        .using_db(conn)
                        .delete()
                    )
            link.undone_at = self.clock()
            await link.save(using_db=conn, update_fields=["undone_at"])
            await AuditEntry.create(
                conversation=None,
                actor_id=actor.user_id,
                actor_name=actor.label[:255],
                action="unlink",
                detail={"customer": customer_id, "parted": parted.id, "link": link.id},
                summary=f"{actor.label} undid the link of customer {customer_id} and "
                f"customer {parted.id} ({link.reason}).",
                using_db=conn,
            )
            await self._tell_threads(actor, parted.id, conn, unlinked=True)
        self._woken()
        return (
            f"Unlinked: `{identity.address}` and what came with it are customer {parted.id} "
            f"again, apart from customer {customer_id}."
        )

    async def _tell_threads(
        self, actor: Actor, customer_id: int, conn: BaseDBAsyncClient, *, unlinked: bool = False
    ) -> None:
        conversations = await Conversation.filter(
            customer_id=customer_id, chat_thread_ts__isnull=False
        ).using_db(conn)
        for conversation in conversations:
            if unlinked:
                summary = f"{actor.label} unlinked this customer from another one."
            else:
                summary = f"{actor.label} linked this customer's identities into one customer."
            entry = await AuditEntry.create(
                conversation=conversation,
                actor_id=actor.user_id,
                actor_name=actor.label[:255],
                action="unlink" if unlinked else "link",
                summary=summary,
                using_db=conn,
            )
            await SHOW_CHANGE.enqueue(
                ChangePayload(entry.id, conversation.id), now=self.clock(), conn=conn
            )

    async def confirm(self, actor: Actor, customer_id: int, found: Suggestion) -> str:
        """Store a suggested piece of contact data an agent confirmed; returns the answer."""
        kind, value, source = found.kind, found.value, found.source
        known = CustomerDetail.filter(customer_id=customer_id, kind=kind, value=value)
        if await known.exists():
            return f"Already on the card: {kind} {value}."
        async with in_transaction() as conn:
            await CustomerDetail.create(
                customer_id=customer_id,
                kind=kind,
                value=value[:512],
                source=f"{source}, confirmed by {actor.label}"[:255],
                confirmed_by=actor.user_id,
                using_db=conn,
            )
            await AuditEntry.create(
                conversation=None,
                actor_id=actor.user_id,
                actor_name=actor.label[:255],
                action="confirm_detail",
                detail={"customer": customer_id, "kind": kind},
                summary=f"{actor.label} confirmed a {kind} of customer {customer_id}.",
                using_db=conn,
            )
        return f"Stored on customer {customer_id}'s card: {kind} {value}."

    def _woken(self) -> None:
        if self.on_queued is not None:
            self.on_queued()


# Run for every new thread: their SQL built once.
def _other_threads(earlier_only: bool) -> Prepared[list[Conversation]]:
    """A customer's five latest other threads (``earlier_only``: opened before this one)."""

    def build(customer_id: int, conversation_id: int) -> QuerySet[Conversation]:
        query = Conversation.filter(customer_id=customer_id, chat_thread_ts__isnull=False)
        query = query.exclude(id=conversation_id)
        if earlier_only:
            query = query.filter(id__lt=conversation_id)
        return query.order_by("-id").limit(5)

    return Prepared(build, 1, 2)


_OTHER_THREADS, _EARLIER_THREADS = _other_threads(False), _other_threads(True)


async def point_to_others(
    chat: ChatPort,
    conversation: Conversation,
    *,
    marker: str,
    lead_in: str,
    retrying: bool,
    earlier_only: bool = False,
) -> None:
    """Post links to the customer's other threads, on any channel, in ``conversation``'s.

    ``earlier_only``: only those opened before it (a new thread's "wrote before": two threads
    opened at once must not each point to the other).
    """
    others_of = _EARLIER_THREADS if earlier_only else _OTHER_THREADS
    others = await others_of(conversation.customer_id, conversation.id)  # type: ignore[attr-defined]
    if not others or not (conversation.chat_channel and conversation.chat_thread_ts):
        return
    if retrying and await chat.find_post(
        conversation.chat_channel, conversation.chat_thread_ts, marker
    ):
        return
    links = []
    for other in others:
        assert other.chat_channel is not None
        assert other.chat_thread_ts is not None
        url = await chat.permalink(other.chat_channel, other.chat_thread_ts)
        links.append(f"<{url}|{short_id(other)}> ({other.channel.value}, {other.status.value})")
    await chat.post_notice(
        conversation.chat_channel,
        conversation.chat_thread_ts,
        f"{lead_in}: " + ", ".join(links),
        marker=marker,
    )


class ShowOthers:
    """Job: after a link, point each thread of the person to their other threads."""

    def __init__(self, chat: ChatPort) -> None:
        self.chat = chat

    async def run(self, job: Job) -> None:
        payload = SHOW_OTHERS.payload_of(job)
        conversation = await Conversation.get_or_none(id=payload.conversation_id)
        if conversation is None:
            return
        await point_to_others(
            self.chat,
            conversation,
            marker=f"others-{conversation.id}-{payload.link_id}",
            lead_in="Other conversations of this customer",
            retrying=job.attempts > 1,
        )

    async def give_up(self, job: Job, reason: str) -> None:
        log.warning("could not point a thread to its customer's others", extra={"reason": reason})

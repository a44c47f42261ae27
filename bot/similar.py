"""Similar conversations and known problems: is this complaint already known?

A conversation is represented by its customer messages' vectors; the nearest stored messages
of other conversations, above a similarity threshold, make its similar conversations. The card
counts those open and those closed within a week; a button lists them with their status and
how each was solved. A lead links a conversation to a known problem ("payment provider
outage"); a later conversation similar to a linked one shows that problem on its card.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise import connections
from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.database import in_list
from bot.errors import ActionRefused
from bot.jobkinds import SHOW_CHANGE, ChangePayload
from bot.jobs import Clock, utcnow
from bot.roles import Actor
from bot.shapes import DeliveryState
from bot.vectors import MessageIndex
from models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Direction,
    KnownProblem,
    Message,
    MessageVector,
    ProblemLink,
)

#: Messages at least this alike (cosine of the encoder's vectors) are "about the same thing".
MIN_SIMILARITY = 0.6
#: How many neighbours a search looks at.
NEIGHBOURS = 50
RECENT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SimilarSummary:
    """What the card says: similar open and recently closed ones, and a known problem."""

    open: int = 0
    closed_recently: int = 0
    problem: str = ""
    problem_link: str = ""


@dataclass(frozen=True, slots=True)
class SimilarConversation:
    short_id: str
    subject: str
    status: str
    similarity: float
    updated_at: datetime
    solved_by: str
    chat_channel: str
    chat_thread_ts: str


class Similar:
    """Finds conversations like a given one, and keeps the known problems."""

    def __init__(
        self,
        index: MessageIndex,
        *,
        clock: Clock = utcnow,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        self.index = index
        self.clock = clock
        self.min_similarity = min_similarity

    async def _neighbours(
        self, conversation: Conversation, vectors: list[bytes] | None = None
    ) -> dict[int, float]:
        """Other conversations near this one's customer messages (its last three, or
        ``vectors``): id -> best similarity."""
        if vectors is None:
            stored = await MessageVector.filter(conversation_id=conversation.id).order_by("id")
            vectors = [bytes(v.vector) for v in stored[-3:]]
        best: dict[int, float] = {}
        for vector in vectors:
            for found in await self.index.nearest(
                vector,
                NEIGHBOURS,
                exclude_conversation=conversation.id,
                min_similarity=self.min_similarity,
            ):
                best[found.conversation_id] = max(
                    best.get(found.conversation_id, 0.0), found.similarity
                )
        return best

    async def summary(self, conversation: Conversation, opening: bytes = b"") -> SimilarSummary:
        """The card's line: similar open, closed within a week, and a known problem.

        ``opening`` is the vector of the message opening the conversation, when the card is
        drawn for the first time: the neighbours of that one message, and no problem of its
        own yet (only an agent links one, on the card).
        """
        best = await self._neighbours(conversation, [opening] if opening else None)
        if not best:
            return SimilarSummary()
        conn = connections.get("default")
        others = await conn.execute_query_dict(
            f"SELECT status, updated_at FROM conversations WHERE id IN {in_list(conn, len(best))}",
            list(best),
        )
        since = self.clock() - RECENT
        as_time = Conversation._meta.fields_map["updated_at"].to_python_value
        open_count = sum(1 for c in others if c["status"] == ConversationStatus.OPEN.value)
        closed = sum(
            1
            for c in others
            if c["status"] == ConversationStatus.CLOSED.value and as_time(c["updated_at"]) >= since
        )
        problem = await self._problem_of(conversation, best, own=not opening)
        return SimilarSummary(
            open_count, closed, problem.title if problem else "", problem.link if problem else ""
        )

    async def _problem_of(
        self, conversation: Conversation, best: dict[int, float], *, own: bool = True
    ) -> KnownProblem | None:
        if own:
            link = await ProblemLink.get_or_none(conversation_id=conversation.id).prefetch_related(
                "problem"
            )
            if link is not None:
                return link.problem
        conn = connections.get("default")
        links = await conn.execute_query_dict(
            "SELECT conversation_id, problem_id FROM problem_links"
            f" WHERE conversation_id IN {in_list(conn, len(best))}",
            list(best),
        )
        if not links:
            return None
        closest = max(links, key=lambda link: best[int(link["conversation_id"])])
        return await KnownProblem.get_or_none(id=closest["problem_id"])

    async def conversations(
        self, conversation: Conversation, limit: int = 15
    ) -> list[SimilarConversation]:
        """The similar conversations, most alike first, with how each was solved."""
        best = await self._neighbours(conversation)
        ranked = sorted(best, key=lambda cid: -best[cid])[:limit]
        rows = {c.id: c for c in await Conversation.filter(id__in=ranked)}
        links = {
            link.conversation_id: link.problem.title
            for link in await ProblemLink.filter(conversation_id__in=ranked).prefetch_related(
                "problem"
            )
        }
        result = []
        for cid in ranked:
            other = rows.get(cid)
            if other is None or not other.chat_channel or not other.chat_thread_ts:
                continue
            result.append(
                SimilarConversation(
                    short_id=short_id(other),
                    subject=other.subject,
                    status=other.status.value,
                    similarity=best[cid],
                    updated_at=other.updated_at,
                    solved_by=await _how_solved(other, links.get(cid, "")),
                    chat_channel=other.chat_channel,
                    chat_thread_ts=other.chat_thread_ts,
                )
            )
        return result

    async def link_problem(self, actor: Actor, conversation: Conversation, title: str) -> str:
        """Link ``conversation`` to the known problem ``title`` (made if new); audited."""
        problem = await self.link_all(actor, [conversation], title)
        return f"`{short_id(conversation)}` is linked to “{problem.title}”."

    async def link_all(
        self, actor: Actor, conversations: list[Conversation], title: str
    ) -> KnownProblem:
        """Link each of ``conversations`` to the known problem ``title`` (made if new), in one
        transaction; each link is audited and said in its thread."""
        title = " ".join(title.split())
        if not title:
            raise ActionRefused("Name the problem, like “payment provider outage”.")
        if len(title) > 128:
            raise ActionRefused("Keep the problem's name to 128 characters.")
        async with in_transaction() as conn:
            problem = await KnownProblem.filter(title__iexact=title).using_db(conn).first()
            if problem is None:
                problem = await KnownProblem.create(
                    title=title, created_by=actor.user_id, using_db=conn
                )
            ids = [conversation.id for conversation in conversations]
            await ProblemLink.filter(conversation_id__in=ids).using_db(conn).delete()
            summary = f"{actor.label} linked this to the known problem “{problem.title}”."
            for conversation in conversations:
                await ProblemLink.create(
                    conversation_id=conversation.id,
                    problem=problem,
                    created_by=actor.user_id,
                    using_db=conn,
                )
                entry = await AuditEntry.create(
                    conversation=conversation,
                    actor_id=actor.user_id,
                    actor_name=actor.label[:255],
                    action="problem",
                    detail={"problem": problem.id, "title": problem.title},
                    summary=summary,
                    using_db=conn,
                )
                await SHOW_CHANGE.enqueue(
                    ChangePayload(entry.id, conversation.id), now=self.clock(), conn=conn
                )
        return problem

    async def problems(self) -> list[tuple[str, int]]:
        """Known problems with how many conversations are linked to each, newest first."""
        rows = await KnownProblem.all().order_by("-id").prefetch_related("links")
        return [(p.title, len(p.links)) for p in rows]


async def _how_solved(conversation: Conversation, problem: str) -> str:
    if problem:
        return f"known problem “{problem}”"
    reply = (
        await Message.filter(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            delivery_state=DeliveryState.SENT,
        )
        .order_by("-id")
        .first()
    )
    if reply is None:
        return "no answer yet"
    first_line = next((line for line in reply.text.splitlines() if line.strip()), "")
    return f"{reply.sender_name or 'an agent'} answered: {first_line[:120]}"

"""Suggested replies: drafts from the team's text blocks and its own past answers.

For the customer's latest message, up to three drafts in the customer's language: the text
blocks whose text is nearest to the message, and the replies agents sent to the most similar
past customer messages (names, addresses, phone numbers and order numbers swapped for
placeholders first). Each draft is filled in for this conversation. A draft is only ever shown
to the agent; it reaches the customer only when the agent sends it (``Relay.send_draft``).
Every answer an agent sends becomes a source for the next similar message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tortoise.backends.base.client import BaseDBAsyncClient

from bot.blocks import BlockDraft, draft_of, fill
from bot.conversations import short_id
from bot.metrics import SUGGESTIONS
from bot.ports import Embedder
from bot.shapes import DeliveryState
from bot.vectors import MessageIndex, Vectors, as_vector
from models import Conversation, Direction, Message, MessageVector, SuggestionEvent, TextBlock

#: How many drafts an agent is offered.
SUGGESTIONS_SHOWN = 3
#: Past messages less similar than this are not worth offering their answer.
MIN_REPLY_SIMILARITY = 0.5

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w/])\+?\d[\d ()/-]{6,}\d(?![\w/])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")
_ORDER = re.compile(
    r"(?i)\b(?:order|bestellung|bestellnummer|auftrag|auftragsnummer)"
    r"(?:\s*(?:no\.?|nr\.?|number|nummer|id))?\s*[:#]?\s*#?([A-Z0-9][A-Z0-9-]{3,})"
)
_HASH_NUMBER = re.compile(r"(?<![\w&])#(\d{4,})\b")
_GREETING = re.compile(
    r"(?im)^((?:hi|hello|hey|dear|hallo|liebe|lieber|guten tag|sehr geehrte|sehr geehrter)"
    r"(?:\s+(?:frau|herr|mr\.?|mrs\.?|ms\.?))?\s+)(?!(?:frau|herr|mrs?|ms)\b)([A-ZÄÖÜ][\w'-]+)"
)
_SIGN_OFF = re.compile(
    r"(?im)^((?:best|kind|warm)?\s*regards|best|thanks|cheers|viele grüße|beste grüße|"
    r"mit freundlichen grüßen|freundliche grüße|liebe grüße|grüße)(,?\s*\n\s*)([^\n]{2,60})$"
)


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A draft for the agent; ``source`` says where it came from (``block:3``, ``reply:17``)."""

    source: str
    label: str
    text: str
    similarity: float


@dataclass(frozen=True, slots=True)
class _Candidate:
    source: str
    label: str
    template: str
    similarity: float
    #: The past customer message whose answer this is (for ``suggest eval``).
    asked_by: int = 0


def find_order(texts: Sequence[str]) -> str:
    """The last order number named in ``texts`` (newest last), or ""."""
    for text in reversed(texts):
        found = [m for m in _ORDER.findall(text) if any(c.isdigit() for c in m)]
        found += _HASH_NUMBER.findall(text)
        if found:
            return str(found[-1])
    return ""


def anonymise(
    text: str, *, customer_name: str = "", agent_name: str = "", conversation: str = ""
) -> str:
    """A past reply with its personal data swapped for placeholders (or a visible [marker])."""
    text = text.replace("{", "(").replace("}", ")")
    text = _EMAIL.sub("{customer_email}", text)
    text = _IBAN.sub("[IBAN]", text)
    text = _ORDER.sub(lambda m: m.group(0).replace(m.group(1), "{order}"), text)
    text = _HASH_NUMBER.sub("#{order}", text)
    text = _PHONE.sub("[phone number]", text)
    names = customer_name.split()
    if names:
        # "Frau Weber" names a gender the next customer may not share: the full name does not.
        title = rf"\b(?:frau|herr|mr|mrs|ms|dr)\.?\s+{re.escape(names[-1])}\b"
        text = re.sub(title, "{customer_name}", text, flags=re.I)
        text = re.sub(re.escape(customer_name), "{customer_name}", text, flags=re.I)
        text = re.sub(rf"\b{re.escape(names[0])}\b", "{customer_first_name}", text, flags=re.I)
        if len(names) > 1:
            text = re.sub(rf"\b{re.escape(names[-1])}\b", "{customer_name}", text, flags=re.I)
    if agent_name.strip():
        text = re.sub(re.escape(agent_name.strip()), "{agent_name}", text, flags=re.I)
    if conversation:
        text = text.replace(conversation, "{conversation}")
    text = _GREETING.sub(
        lambda m: m.group(1) + ("{customer_first_name}" if m.group(2)[0] != "{" else m.group(2)),
        text,
    )
    return _SIGN_OFF.sub(lambda m: m.group(1) + m.group(2) + "{agent_name}", text)


def _language_of(conversation: Conversation) -> str:
    return "de" if conversation.language == "de" else "en"


class Suggester:
    """Finds and fills drafts for a conversation; records what was offered and used."""

    def __init__(
        self,
        index: MessageIndex,
        embedder: Embedder | None,
        *,
        shown: int = SUGGESTIONS_SHOWN,
        min_reply_similarity: float = MIN_REPLY_SIMILARITY,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.shown = shown
        self.min_reply_similarity = min_reply_similarity
        # Each block's text is embedded once (until it changes).
        self._block_vectors: dict[tuple[int, str, str], Vectors] = {}

    async def suggest(self, conversation: Conversation, agent_name: str) -> list[Suggestion]:
        """Up to three filled-in drafts for the customer's latest message."""
        latest = await self._latest_vector(conversation)
        if latest is None:
            return []
        candidates = await self.rank(
            bytes(latest.vector),
            language=_language_of(conversation),
            skill=conversation.skill,
            exclude_conversation=conversation.id,
        )
        values = await self._values(conversation, agent_name)
        return [
            Suggestion(c.source, c.label, fill(c.template, values), c.similarity)
            for c in candidates
        ]

    async def draft(self, conversation: Conversation, source: str, agent_name: str) -> str:
        """The filled-in text of one source (``block:3``, ``reply:17``), or "" if it is gone."""
        kind, _, number = source.partition(":")
        if not number.isdigit():
            return ""
        template = ""
        if kind == "block":
            block = await TextBlock.get_or_none(id=int(number))
            if block is not None:
                draft = draft_of(block)
                template = draft.text(_language_of(conversation)) or draft.text_en or draft.text_de
        elif kind == "reply":
            reply = await Message.get_or_none(
                id=int(number), direction=Direction.OUTBOUND
            ).prefetch_related("conversation__identity")
            if reply is not None and reply.conversation is not None:
                template = self._template_of(reply, reply.conversation)
        if not template:
            return ""
        return fill(template, await self._values(conversation, agent_name))

    async def rank(
        self,
        vector: bytes,
        *,
        language: str,
        skill: str = "",
        exclude_conversation: int | None = None,
    ) -> list[_Candidate]:
        """The best drafts for a message with ``vector``, unfilled, best first."""
        candidates = await self._from_blocks(vector, language, skill)
        candidates += await self._from_replies(vector, language, exclude_conversation)
        candidates.sort(key=lambda c: -c.similarity)
        chosen: list[_Candidate] = []
        seen: set[str] = set()
        for candidate in candidates:
            key = " ".join(candidate.template.lower().split())
            if key in seen:
                continue
            seen.add(key)
            chosen.append(candidate)
            if len(chosen) == self.shown:
                break
        return chosen

    async def _from_blocks(self, vector: bytes, language: str, skill: str) -> list[_Candidate]:
        if self.embedder is None:
            return []
        blocks = await TextBlock.filter(skill__in=(skill, "") if skill else ("",)).order_by("id")
        usable = [(b, draft_of(b)) for b in blocks]
        usable = [(b, d) for b, d in usable if d.text(language)]
        if not usable:
            return []
        await self._embed_blocks(usable, language)
        query = as_vector(vector)
        result = []
        for block, draft in usable:
            key = (block.id, language, draft.text(language))
            similarity = float(np.dot(self._block_vectors[key], query))
            result.append(
                _Candidate(
                    f"block:{block.id}",
                    f"Text block “{block.title}”",
                    draft.text(language),
                    similarity,
                )
            )
        return result

    async def _embed_blocks(
        self, usable: list[tuple[TextBlock, BlockDraft]], language: str
    ) -> None:
        assert self.embedder is not None
        missing = [
            (block.id, language, draft.text(language))
            for block, draft in usable
            if (block.id, language, draft.text(language)) not in self._block_vectors
        ]
        if not missing:
            return
        titles = {block.id: block.title for block, _ in usable}
        vectors = await self.embedder.embed([f"{titles[i]}\n{text}" for i, _, text in missing])
        for key, data in zip(missing, vectors, strict=True):
            self._block_vectors[key] = as_vector(data)

    async def _from_replies(
        self, vector: bytes, language: str, exclude_conversation: int | None
    ) -> list[_Candidate]:
        neighbours = await self.index.nearest(
            vector,
            self.shown * 3,
            exclude_conversation=exclude_conversation,
            language=language,
            min_similarity=self.min_reply_similarity,
        )
        result = []
        for neighbour in neighbours:
            reply = (
                await Message.filter(
                    conversation_id=neighbour.conversation_id,
                    direction=Direction.OUTBOUND,
                    delivery_state=DeliveryState.SENT,
                    id__gt=neighbour.message_id,
                )
                .order_by("id")
                .prefetch_related("conversation__identity")
                .first()
            )
            if reply is None or reply.conversation is None:
                continue
            who = reply.sender_name or "an agent"
            result.append(
                _Candidate(
                    f"reply:{reply.id}",
                    f"{who}'s answer to a similar message ({neighbour.similarity:.0%} alike)",
                    self._template_of(reply, reply.conversation),
                    neighbour.similarity,
                    asked_by=neighbour.message_id,
                )
            )
        return result

    @staticmethod
    def _template_of(reply: Message, conversation: Conversation) -> str:
        identity = conversation.identity
        return anonymise(
            reply.text,
            customer_name=identity.display_name,
            agent_name=reply.sender_name,
            conversation=short_id(conversation),
        )

    async def _latest_vector(self, conversation: Conversation) -> MessageVector | None:
        return await MessageVector.filter(conversation_id=conversation.id).order_by("-id").first()

    async def _values(self, conversation: Conversation, agent_name: str) -> dict[str, str]:
        await conversation.fetch_related("identity")
        identity = conversation.identity
        texts = (
            await Message.filter(conversation_id=conversation.id, direction=Direction.INBOUND)
            .order_by("id")
            .values_list("subject", "text")
        )
        name = identity.display_name.strip()
        return {
            "customer_first_name": name.split()[0] if name else "",
            "customer_name": name,
            "customer_email": identity.address if "@" in identity.address else "",
            "agent_name": agent_name,
            "conversation": short_id(conversation),
            "order": find_order([f"{s}\n{t}" for s, t in texts]),
            "subject": conversation.subject,
            "skill": conversation.skill,
        }

    async def record_offered(
        self, conversation: Conversation, agent_id: str, suggestions: Sequence[Suggestion]
    ) -> None:
        """Store that ``suggestions`` were shown to ``agent_id``, and count them."""
        await SuggestionEvent.bulk_create(
            [
                SuggestionEvent(
                    conversation_id=conversation.id,
                    agent_id=agent_id,
                    source=s.source,
                    action="offered",
                )
                for s in suggestions
            ]
        )
        for s in suggestions:
            SUGGESTIONS.labels(s.source.partition(":")[0], "offered").inc()


async def record_used(
    conversation_id: int,
    agent_id: str,
    source: str,
    message_id: int,
    *,
    conn: BaseDBAsyncClient | None = None,
) -> None:
    """Store and count that an agent sent a reply drafted from ``source`` (stored with it)."""
    await SuggestionEvent.create(
        conversation_id=conversation_id,
        agent_id=agent_id,
        source=source[:64],
        action="used",
        used_message_id=message_id,
        using_db=conn,
    )
    SUGGESTIONS.labels(source.partition(":")[0], "used").inc()

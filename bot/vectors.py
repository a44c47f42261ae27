"""Embeddings as facts: each customer message's vector, stored once, searched in memory.

The triage job stores a message's vector (``remember``) in ``message_vectors``; every replica
keeps an approximate nearest-neighbour index (a ``VectorIndex``, the library behind it lives
in adapters/) loaded from that table at start and kept current by polling: rows newer than its
high-water mark are added, and ``vector_removals`` (written when ``customers forget`` or
retention deletes vectors) are dropped. A search resolves what the index found against the
table, so a forgotten message is unfindable at once on every replica, before the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from bot.database import in_list
from bot.jobs import Clock, utcnow
from bot.ports import Embedder
from models import Conversation, Message, MessageVector, VectorRemoval

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Rows read per query while loading or catching up.
LOAD_BATCH = 20_000
#: A gap in the ids (a transaction that had not committed yet when we read past it) is looked
#: at again for this long before it is taken for a rollback.
GAP_SECONDS = 120.0
#: How far below the newest id a gap is looked at again.
MAX_GAPS = 1000
#: Removals older than this were seen by every running replica (they poll every few seconds);
#: a replica that starts later loads the table as it is.
KEEP_REMOVALS = timedelta(days=1)


class VectorIndex(Protocol):
    """An approximate nearest-neighbour index of vectors keyed by message id (blocking calls).

    Similarity is the inner product (the vectors are L2-normalised, so it is the cosine).
    """

    def add(self, keys: Sequence[int], vectors: Vectors) -> None:
        """Add ``vectors`` (one row per key); a key already present is left as it is."""
        ...

    def remove(self, keys: Sequence[int]) -> None:
        """Remove ``keys`` (those not present are ignored)."""
        ...

    def search(self, vector: Vectors, count: int) -> list[tuple[int, float]]:
        """Up to ``count`` (key, similarity) pairs nearest to ``vector``, best first."""
        ...

    def __contains__(self, key: int) -> bool: ...

    def __len__(self) -> int: ...


IndexFactory = Callable[[int], VectorIndex]


def as_vector(data: bytes) -> Vectors:
    """A stored vector's bytes as an array."""
    return np.frombuffer(data, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A stored customer message near the one asked about."""

    message_id: int
    conversation_id: int
    skill: str
    language: str
    similarity: float


class MessageIndex:
    """This replica's index of every stored customer message's vector, kept current."""

    def __init__(
        self,
        make_index: IndexFactory,
        *,
        poll_seconds: float = 5.0,
        clock: Clock = utcnow,
    ) -> None:
        self.make_index = make_index
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.index: VectorIndex | None = None
        self.dimensions = 0
        self.high_water = 0
        self.removals_seen = 0
        self._gaps: dict[int, float] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def load(self, progress: Callable[[int], None] | None = None) -> None:
        """Read every stored vector into the index (start-up)."""
        latest_removal = await VectorRemoval.all().order_by("-id").first()
        self.removals_seen = latest_removal.id if latest_removal else 0
        await self.refresh(progress=progress)

    async def refresh(self, progress: Callable[[int], None] | None = None) -> int:
        """Add vectors stored since the last look and drop removed ones; returns how many."""
        async with self._lock:
            added = await self._catch_up(progress)
            await self._drop_removed()
            return added

    async def _catch_up(self, progress: Callable[[int], None] | None) -> int:
        added = 0
        now = time.monotonic()
        if self._gaps:
            late = await MessageVector.filter(id__in=list(self._gaps)).values_list(
                "id", "message_id", "vector"
            )
            for row_id, _, _ in late:
                self._gaps.pop(int(row_id), None)
            added += await self._add_rows(late)
            self._gaps = {k: t for k, t in self._gaps.items() if now - t < GAP_SECONDS}
        while True:
            rows = (
                await MessageVector.filter(id__gt=self.high_water)
                .order_by("id")
                .limit(LOAD_BATCH)
                .values_list("id", "message_id", "vector")
            )
            if not rows:
                break
            expected = self.high_water + 1
            for row_id, _, _ in rows:
                # Ids are handed out before commit: a lower one may still appear.
                self._gaps.update(dict.fromkeys(range(expected, int(row_id)), now))
                expected = int(row_id) + 1
            self.high_water = int(rows[-1][0])
            added += await self._add_rows(rows)
            if progress is not None:
                progress(added)
            if len(rows) < LOAD_BATCH:
                break
        # Only the newest ids can belong to a transaction still running; older gaps are rows
        # deleted (forgotten) before we read them.
        self._gaps = {k: t for k, t in self._gaps.items() if k > self.high_water - MAX_GAPS}
        return added

    async def _add_rows(self, rows: Sequence[tuple[Any, Any, Any]]) -> int:
        if not rows:
            return 0
        keys = [int(message_id) for _, message_id, _ in rows]
        matrix = np.stack([as_vector(bytes(data)) for _, _, data in rows])
        index = self._index_for(matrix.shape[1])
        await asyncio.to_thread(index.add, keys, matrix)
        return len(keys)

    def _index_for(self, dimensions: int) -> VectorIndex:
        if self.index is None:
            self.index = self.make_index(dimensions)
            self.dimensions = dimensions
        elif dimensions != self.dimensions:
            raise ValueError(
                f"stored vectors have {dimensions} dimensions and the index {self.dimensions}: "
                "triage.model changed since they were stored; set it back, or empty the "
                "message_vectors table to start similarity afresh"
            )
        return self.index

    async def _drop_removed(self) -> None:
        removed = (
            await VectorRemoval.filter(id__gt=self.removals_seen)
            .order_by("id")
            .values_list("id", "message_id")
        )
        if not removed:
            return
        self.removals_seen = int(removed[-1][0])
        if self.index is not None:
            self.index.remove([int(message_id) for _, message_id in removed])

    def add_local(self, message_id: int, vector: bytes) -> None:
        """Put a vector this replica just stored in its index at once."""
        index = self._index_for(len(vector) // 4)
        index.add([message_id], as_vector(vector).reshape(1, -1))

    async def nearest(
        self,
        vector: bytes,
        count: int,
        *,
        exclude_conversation: int | None = None,
        language: str = "",
        min_similarity: float = 0.0,
    ) -> list[Neighbour]:
        """The stored messages most similar to ``vector``, best first, that still exist."""
        if self.index is None or not len(self.index) or not vector:
            return []
        wanted = count * 4 + 8
        found = self.index.search(as_vector(vector), wanted)
        found = [(key, score) for key, score in found if score >= min_similarity]
        if not found:
            return []
        conn = connections.get("default")
        rows = await conn.execute_query_dict(
            "SELECT message_id, conversation_id, skill, language FROM message_vectors"
            f" WHERE message_id IN {in_list(conn, len(found))}",
            [key for key, _ in found],
        )
        by_id = {int(r["message_id"]): r for r in rows}
        result: list[Neighbour] = []
        for key, score in found:
            row = by_id.get(key)
            if row is None:
                continue  # forgotten or purged; the next poll drops it from the index
            if exclude_conversation is not None and row["conversation_id"] == exclude_conversation:
                continue
            if language and row["language"] and row["language"] != language:
                continue
            result.append(
                Neighbour(key, row["conversation_id"], row["skill"], row["language"], score)
            )
            if len(result) == count:
                break
        return result

    async def start(self) -> None:
        """Load the index, then keep it current in the background until ``stop``."""
        started = time.perf_counter()
        await self.load()
        log.info(
            "similarity index loaded",
            extra={
                "vectors": len(self.index) if self.index is not None else 0,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        self._task = asyncio.create_task(self._poll(), name="vector-index-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _poll(self) -> None:
        polls = 0
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
                polls += 1
                if polls % 720 == 1:
                    await VectorRemoval.filter(created_at__lt=self.clock() - KEEP_REMOVALS).delete()
            except Exception:
                log.exception("could not bring the similarity index up to date")


async def store_vector(
    message_id: int,
    conversation_id: int,
    vector: bytes,
    *,
    skill: str = "",
    language: str = "",
) -> bool:
    """Store a customer message's vector once; False if it was stored before (a retried job)."""
    try:
        await MessageVector.create(
            message_id=message_id,
            conversation_id=conversation_id,
            skill=skill[:64],
            language=language[:16],
            vector=vector,
        )
    except IntegrityError:
        return False
    return True


async def forget_vectors(conversation_ids: Iterable[int], conn: BaseDBAsyncClient) -> int:
    """Delete the vectors of these conversations and tell every replica's index to drop them."""
    ids = list(conversation_ids)
    if not ids:
        return 0
    message_ids = await (
        MessageVector.filter(conversation_id__in=ids)
        .using_db(conn)
        .values_list("message_id", flat=True)
    )
    if not message_ids:
        return 0
    await VectorRemoval.bulk_create(
        [VectorRemoval(message_id=int(str(m))) for m in message_ids], using_db=conn
    )
    await MessageVector.filter(conversation_id__in=ids).using_db(conn).delete()
    return len(message_ids)


def embedding_text(subject: str, text: str) -> str:
    """What a message's vector is computed from: its subject, then its text (as triage reads)."""
    return f"{subject.strip()}\n{text.strip()}".strip()[:4000]


class MessageVectors:
    """Stores each customer message's vector once and puts it in this replica's index.

    A customer's message brings the vector triage computed for it; one that comes without (an
    opening message's post retried, a classifier that computes none) is embedded here, once.
    """

    def __init__(self, index: MessageIndex, embedder: Embedder | None) -> None:
        self.index = index
        self.embedder = embedder

    async def remember(
        self,
        message: Message,
        conversation: Conversation,
        vector: bytes = b"",
        *,
        retrying: bool = False,
    ) -> None:
        """Store and index the message's vector; a retry first asks whether it was stored."""
        # Only a retried job can find it stored: the first try skips the look-up (the unique
        # message id still refuses a second row).
        if retrying and await MessageVector.exists(message_id=message.id):
            return
        if not vector:
            if self.embedder is None:
                return
            (vector,) = await self.embedder.embed([embedding_text(message.subject, message.text)])
        stored = await store_vector(
            message.id,
            conversation.id,
            vector,
            skill=conversation.skill,
            language=conversation.language,
        )
        if stored:
            self.index.add_local(message.id, vector)

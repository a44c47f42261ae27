"""Similar messages among a million stored ones on PostgreSQL: start-up, query, add, recall.

Fills a fresh database with a history (``bench.fill``: messages both ways) and gives every
customer message a stored vector. The vectors are synthetic: clustered unit vectors of the
encoder's dimension (384, all-MiniLM-L6-v2), a cluster standing for a topic many customers
write about; encoding a million texts would time the encoder, not the index. Then, timed:

- start-up: ``MessageIndex.load`` reading every vector from the database into the index;
- a query: ``MessageIndex.nearest`` for the top 5 (the index search and the database look-up
  that drops forgotten messages), p50 and p99 over ``--queries`` new messages;
- adding a message: storing its vector and putting it in the index (``store_vector`` +
  ``add_local``), p50 and p99;
- recall@5 of the index against exact search (every stored vector compared with numpy).

Prints one JSON object; progress lines go to stderr.

    python -m bench.similar [--postgres URL] [--vectors 1000000] [--queries 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator

import asyncpg
import numpy as np
import numpy.typing as npt

from adapters.hnsw_index import EF_CONSTRUCTION, EF_SEARCH, LINKS, HnswIndex
from bench.fill import fill_history, scratch_database
from bot.database import open_database
from bot.shapes import ChannelKind
from bot.vectors import MessageIndex, store_vector
from models import Direction, Message, MessageVector
from tests.postgres_reachable import ADMIN_URL

DIMENSIONS = 384
CLUSTERS = 2000
SPREAD = 0.35
BATCH = 20_000
ADDS = 200


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Topics:
    """Clustered unit vectors: messages about the same topic lie close together."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((CLUSTERS, DIMENSIONS)).astype(np.float32)

    def sample(self, count: int) -> npt.NDArray[np.float32]:
        topics = self.rng.integers(0, CLUSTERS, count)
        noise = self.rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
        vectors = self.centres[topics] + SPREAD * noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32)


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 2)


async def store_vectors(
    url: str, topics: Topics, wanted: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """A vector for each of the first ``wanted`` customer messages, written with COPY."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SET synchronous_commit = off")
        rows = await connection.fetch(
            "SELECT id, conversation_id FROM messages WHERE direction = 'in' ORDER BY id LIMIT $1",
            wanted,
        )
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        conversations = [int(r["conversation_id"]) for r in rows]
        stored = np.zeros((len(rows), DIMENSIONS), dtype=np.float32)
        started = time.monotonic()
        for start in range(0, len(rows), BATCH):
            end = min(start + BATCH, len(rows))
            vectors = topics.sample(end - start)
            stored[start:end] = vectors
            await connection.copy_records_to_table(
                "message_vectors",
                records=_records(ids[start:end], conversations[start:end], vectors),
                columns=[
                    "message_id",
                    "conversation_id",
                    "skill",
                    "language",
                    "vector",
                    "created_at",
                ],
            )
            say(f"vectors: {end:,} of {len(rows):,} stored ({time.monotonic() - started:.0f} s)")
        await connection.execute("VACUUM ANALYZE message_vectors")
    finally:
        await connection.close()
    return stored, ids


def _records(
    ids: npt.NDArray[np.int64], conversations: list[int], vectors: npt.NDArray[np.float32]
) -> Iterator[tuple[object, ...]]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for message_id, conversation_id, vector in zip(ids, conversations, vectors, strict=True):
        yield (int(message_id), conversation_id, "general", "en", vector.tobytes(), now)


async def run(admin_url: str, vectors: int, queries: int, keep: bool) -> dict[str, object]:
    async with scratch_database(admin_url, "switchboard_bench_similar", keep=keep) as url:
        say(f"database {url}: filling {vectors:,} customer messages (and the replies)")
        await fill_history(url, messages=vectors * 2, progress=say)
        topics = Topics()
        stored, ids = await store_vectors(url, topics, vectors)
        async with open_database(url, migrate_first=False):
            threads = os.cpu_count() or 1
            index = MessageIndex(lambda d: HnswIndex(d, threads=threads))
            started = time.perf_counter()
            await index.load(
                progress=lambda n: (
                    say(f"index: {n:,} vectors loaded") if n % 100_000 < BATCH else None
                )
            )
            startup = time.perf_counter() - started
            say(f"start-up: {startup:.1f} s for {len(stored):,} vectors")
            asked = topics.sample(queries)
            latencies = []
            for vector in asked:
                began = time.perf_counter()
                found = await index.nearest(vector.tobytes(), 5)
                latencies.append(time.perf_counter() - began)
                assert len(found) == 5
            say("queries done; exact search for recall")
            assert index.index is not None
            truths = []
            for start in range(0, queries, 50):
                chunk = asked[start : start + 50]
                exact = np.argsort(-(chunk @ stored.T), axis=1)[:, :5]
                truths += [{int(ids[i]) for i in row} for row in exact]
            # The index alone (no database look-up) at the service's search breadth and wider:
            # asking for more candidates widens the search (ef = max(EF_SEARCH, count)).
            by_breadth: dict[int, dict[str, float]] = {}
            for breadth in (5, 28, 128, 256):
                hits, searches = 0, []
                for vector, truth in zip(asked, truths, strict=True):
                    began = time.perf_counter()
                    candidates = index.index.search(vector, breadth)
                    searches.append(time.perf_counter() - began)
                    hits += len(truth & {key for key, _ in candidates[:5]})
                by_breadth[breadth] = {
                    "recall_at_5": round(hits / (queries * 5), 4),
                    "search_p50_ms": percentile_ms(searches, 50),
                    "search_p99_ms": percentile_ms(searches, 99),
                }
            recall = by_breadth[5]["recall_at_5"]
            conversation = (await MessageVector.all().order_by("id").limit(1))[0].conversation_id
            adds = []
            for vector in topics.sample(ADDS):
                message = await Message.create(
                    conversation_id=conversation,
                    direction=Direction.INBOUND,
                    channel=ChannelKind.EMAIL,
                )
                began = time.perf_counter()
                await store_vector(message.id, conversation, vector.tobytes())
                index.add_local(message.id, vector.tobytes())
                adds.append(time.perf_counter() - began)
        return {
            "vectors": len(stored),
            "dimensions": DIMENSIONS,
            "synthetic": f"{CLUSTERS} clusters of unit vectors, spread {SPREAD}",
            "library": f"hnswlib (HNSW, M {LINKS}, ef_construction {EF_CONSTRUCTION}, "
            f"ef {EF_SEARCH})",
            "startup_seconds": round(startup, 1),
            "query_p50_ms": percentile_ms(latencies, 50),
            "query_p99_ms": percentile_ms(latencies, 99),
            "add_p50_ms": percentile_ms(adds, 50),
            "add_p99_ms": percentile_ms(adds, 99),
            "recall_at_5": round(recall, 4),
            "index_alone_by_candidates": by_breadth,
            "queries": queries,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=ADMIN_URL, help="an admin URL of the server")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the filled database")
    args = parser.parse_args()
    result = asyncio.run(run(args.postgres, args.vectors, args.queries, args.keep))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""How good the suggested replies would be on a team's own history (``switchboard suggest eval``).

Every history row becomes a past conversation in a throw-away SQLite database: the customer's
message (its vector stored as the triage job stores it) and the team's reply (the row's reply
text, or a stand-in where the file has none). Each test message then goes through the same
ranking as in Slack (``Suggester.rank``: the similarity index, the database look-up, the
threshold, duplicate answers shown once). A suggestion is a hit when the past message it
answers has the test message's label; hit@1 counts the first, hit@3 any of the three.
"""

from __future__ import annotations

import csv
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tortoise.transactions import in_transaction

from bot.database import open_database
from bot.errors import ConfigError
from bot.ports import Embedder
from bot.shapes import ChannelKind, DeliveryState
from bot.suggestions import Suggester
from bot.vectors import IndexFactory, MessageIndex, store_vector
from models import Conversation, Customer, Direction, Identity, Message

ENCODE_BATCH = 256


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: str
    reply: str = ""


def read_rows(path: Path, text_col: str, label_col: str, reply_col: str = "") -> list[Row]:
    """Labelled texts (and replies, if ``reply_col`` names a column) from a CSV file."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            names = reader.fieldnames or []
            for wanted, option in ((text_col, "--text-col"), (label_col, "--label-col")):
                if wanted not in names:
                    raise ConfigError(
                        option,
                        f"{wanted!r} is not a column of {path} (columns: {', '.join(names)})",
                    )
            if reply_col and reply_col not in names:
                raise ConfigError("--reply-col", f"{reply_col!r} is not a column of {path}")
            rows = [
                Row(r[text_col].strip(), r[label_col].strip(), (r.get(reply_col) or "").strip())
                for r in reader
                if (r.get(text_col) or "").strip() and (r.get(label_col) or "").strip()
            ]
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    if not rows:
        raise ConfigError(str(path), "has no rows with both a text and a label")
    return rows


def split(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(history, test): ``fraction`` of each label held out, drawn with ``seed``."""
    rng = random.Random(seed)
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.label].append(row)
    history: list[Row] = []
    test: list[Row] = []
    for label in sorted(groups):
        shuffled = list(groups[label])
        rng.shuffle(shuffled)
        cut = round(len(shuffled) * fraction) if len(shuffled) > 1 else 0
        test.extend(shuffled[:cut])
        history.extend(shuffled[cut:])
    return history, test


async def _embed_all(
    embedder: Embedder, texts: Sequence[str], say: Callable[[str], None], what: str
) -> list[bytes]:
    vectors: list[bytes] = []
    for start in range(0, len(texts), ENCODE_BATCH):
        vectors += await embedder.embed(texts[start : start + ENCODE_BATCH])
        say(f"{what}: {len(vectors):,} of {len(texts):,} encoded")
    return vectors


async def evaluate_suggestions(
    history: Sequence[Row],
    test: Sequence[Row],
    embedder: Embedder,
    make_index: IndexFactory,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """hit@1 and hit@3 of the suggested replies for ``test`` given ``history``."""
    say = progress or (lambda line: None)
    started = time.perf_counter()
    history_vectors = await _embed_all(embedder, [r.text for r in history], say, "history")
    test_vectors = await _embed_all(embedder, [r.text for r in test], say, "test")
    encoded = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        async with open_database(f"sqlite://{Path(folder) / 'eval.sqlite3'}"):
            asked_label = await _store_history(history, history_vectors)
            index = MessageIndex(make_index)
            await index.load()
            suggester = Suggester(index, None)
            hits1 = hits3 = answered = 0
            ranked_started = time.perf_counter()
            for number, (row, vector) in enumerate(zip(test, test_vectors, strict=True), 1):
                candidates = await suggester.rank(vector, language="en")
                labels = [asked_label.get(c.asked_by, "") for c in candidates]
                answered += bool(labels)
                hits1 += labels[:1] == [row.label]
                hits3 += row.label in labels[:3]
                if number % 500 == 0:
                    say(f"test: {number:,} of {len(test):,} suggested")
            ranking = time.perf_counter() - ranked_started
    total = len(test)
    return {
        "history": len(history),
        "test": total,
        "labels": len({r.label for r in history}),
        "hit@1": round(hits1 / total, 4),
        "hit@3": round(hits3 / total, 4),
        "with_a_suggestion": round(answered / total, 4),
        "encode_seconds": round(encoded, 1),
        "suggest_ms_per_message": round(1000 * ranking / total, 2),
    }


async def _store_history(history: Sequence[Row], vectors: Sequence[bytes]) -> dict[int, str]:
    """Store each history row as a conversation: the message, its vector, the team's reply."""
    customer = await Customer.create(name="history")
    identity = await Identity.create(
        customer=customer, channel=ChannelKind.EMAIL, address="history@example.org"
    )
    labels: dict[int, str] = {}
    async with in_transaction():
        for number, (row, vector) in enumerate(zip(history, vectors, strict=True), 1):
            labels[await _store_one(number, row, vector, customer, identity)] = row.label
    return labels


async def _store_one(
    number: int, row: Row, vector: bytes, customer: Customer, identity: Identity
) -> int:
    conversation = await Conversation.create(
        token=f"h{number}",
        customer=customer,
        identity=identity,
        channel=ChannelKind.EMAIL,
        skill="",
    )
    asked = await Message.create(
        conversation=conversation,
        direction=Direction.INBOUND,
        channel=ChannelKind.EMAIL,
        text=row.text,
    )
    await Message.create(
        conversation=conversation,
        direction=Direction.OUTBOUND,
        channel=ChannelKind.EMAIL,
        text=row.reply or f"Reply {number} of the team.",
        sender_name="Agent",
        delivery_state=DeliveryState.SENT,
    )
    await store_vector(asked.id, conversation.id, vector)
    return asked.id
